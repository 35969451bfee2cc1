"""What the fetch workers tell the main thread, and the collector that folds it into the run.

The workers never touch the summary, the manifest rows or the journal: each verdict is queued as a
small record that knows what it does to the run, and applied on the main thread.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, replace
from pathlib import Path

from ..storage.manifest import Journal
from ..storage.records import ManifestRow
from ..storage.safewrite import remove_file
from ..storage.store import StoreError
from .records import Failure
from .report import Progress, Summary
from .session import host_key

JOURNAL_FLUSH = 1.0


# What the workers tell the main thread, one small record per kind; each knows what it does to the run.

@dataclass(frozen=True)
class Stored:
    row: ManifestRow

    def apply(self, run: Collector) -> None:
        run.stored(self.row)


@dataclass(frozen=True)
class Failed:
    failure: Failure

    def apply(self, run: Collector) -> None:
        run.failed(self.failure)


@dataclass(frozen=True)
class GivenUp:
    host: str
    reason: str
    not_attempted: int

    def apply(self, run: Collector) -> None:
        run.given_up(self.host, self.reason, self.not_attempted)


@dataclass(frozen=True)
class Placeholder:
    failure: Failure
    path: str | None

    def apply(self, run: Collector) -> None:
        run.placeholder(self.failure, self.path)


@dataclass(frozen=True)
class Fatal:
    error: StoreError

    def apply(self, run: Collector) -> None:
        run.fatal = run.fatal or self.error


@dataclass(frozen=True)
class WorkerExited:
    def apply(self, run: Collector) -> None:
        run.workers -= 1


@dataclass(frozen=True)
class QueueSink:
    """The scheduler's verdicts, queued for the main thread (the scheduler calls these under its lock)."""

    put: Callable[[object], None]

    def stored(self, row: ManifestRow) -> None:
        self.put(Stored(row))

    def failed(self, failure: Failure) -> None:
        self.put(Failed(failure))

    def given_up(self, host: str, reason: str, not_attempted: int) -> None:
        self.put(GivenUp(host, reason, not_attempted))

    def placeholder(self, failure: Failure, path: str | None) -> None:
        self.put(Placeholder(failure, path))


class Collector:
    """Folds the workers' results into the summary, the manifest rows and the journal, on the main thread."""

    def __init__(self, root: Path, rows: dict[str, ManifestRow], summary: Summary, journal: Journal,
                 progress: Progress, workers: int, fetching: Collection[str] = (), present: Collection[str] = ()):
        self.root = root
        self.rows = rows
        self.summary = summary
        self.journal = journal
        self.progress = progress
        self.workers = workers  # still running; each says so as it exits
        self.fatal: StoreError | None = None  # DIR cannot take more images: the run must stop
        self.fetching = fetching  # the images of this run's tasks
        self.present = present  # those summary.already_present counts
        self.stored_here: set[str] = set()
        self._last_flush = time.monotonic()

    def stored(self, row: ManifestRow) -> None:
        self.stored_here.add(row.image)
        self.rows[row.image] = row
        self.journal.append(row)
        self.summary.downloaded += 1
        self.summary.converted += bool(row.converted)
        self.progress.advance(host_key(row.url), ok=True)
        now = time.monotonic()
        if now - self._last_flush >= JOURNAL_FLUSH:
            # Rows reach the disk about once a second: a crash loses at most that much source detail.
            self.journal.flush()
            self._last_flush = now

    def failed(self, failure: Failure) -> None:
        self.summary.failures.append(failure)
        self.progress.advance(host_key(failure.url), ok=False)

    def given_up(self, host: str, reason: str, not_attempted: int) -> None:
        self.summary.hosts_unreachable.append(host)
        self.progress.note(f"{host}: {reason}; its {not_attempted} remaining images were not attempted")

    def placeholder(self, failure: Failure, path: str | None) -> None:
        """An image failed as a placeholder; one on disk (`path`) is taken back out with its row."""
        host = host_key(failure.url)
        self.summary.placeholders += 1
        if path is None:  # refused before it was written
            self.failed(failure)
            return
        try:
            remove_file(self.root, path)
        except OSError as exc:
            # It stays under its name with no row: `verify` names it, and a rerun fetches it again.
            failure = replace(failure, error=f"{failure.error} ({path} could not be deleted: {exc.strerror or exc})")
        row = self.rows.get(failure.image)
        if row is not None and row.path == path:
            del self.rows[failure.image]
        self.summary.failures.append(failure)
        if failure.image in self.stored_here:
            self.stored_here.discard(failure.image)
            self.summary.downloaded -= 1
            self.summary.converted -= bool(row is not None and row.converted)
            self.progress.taken_back()
        elif failure.image in self.fetching:  # written, and never reported stored
            self.progress.advance(host, ok=False)
            return
        elif failure.image in self.present:  # kept from an earlier run
            self.summary.already_present -= 1
        self.progress.note(f"took {path} back out of DIR: {failure.error}")
