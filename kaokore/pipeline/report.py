"""Reporting: the progress display while a run goes, and its summary (a line, or JSON) at the end."""
from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import TextIO

from ..errors import EXIT_INCOMPLETE, EXIT_INTERRUPTED, EXIT_OK
from .records import Failure

# Diagnostics are logged under "kaokore" (a NullHandler keeps them silent until an application
# configures logging); the progress display shows the same notes unless the run is quiet.
log = logging.getLogger("kaokore")
PLAIN_INTERVAL = 5.0  # seconds between progress lines when stderr is not a terminal (CI logs)
# The size assumed for a terminal that reports none (0x0, as some CI pseudo-terminals do).
FALLBACK_SIZE = os.terminal_size((80, 24))


@dataclass
class Summary:
    """What a `kaokore.download` run did; ``to_json()`` is the ``--json`` document.

    Attributes
    ----------
    dir : str
        The dataset directory.
    dataset_version : str
        The version downloaded ("1.0" ... "1.3").
    layout : str
        The layout the tree is in: "split", "flat", "gender" or "status".
    total : int
        Images selected that have a URL.
    downloaded : int
        Images fetched and stored by this run.
    already_present : int
        Selected images already on disk and good, not fetched again.
    failed : int
        Images that could not be fetched, or were taken back out of DIR as placeholders
        (each in `failures`, and in failures.csv).
    unavailable : int
        Selected labelled images whose URL line is blank upstream: nothing to fetch.
    not_attempted : int
        Images never requested because the run was interrupted or the disk stopped it.
    relocated : int
        Images moved from another layout's place, without the network.
    damaged : int
        Images found on disk that were not the right bytes: deleted, and fetched again
        when selected.
    adopted : int
        Files with no manifest row (e.g. from upstream's download.py) kept as this
        version's images.
    reused : int
        Images stored from the file of the same IIIF request in another tree (``--reuse``)
        or under another image number of DIR, rather than fetched; not in `downloaded`.
    converted : int
        Of `downloaded`, images re-encoded to 256x256 RGB JPEG.
    placeholders : int
        Of `failed`, images whose host sent the same bytes for other faces too (a placeholder
        for a missing image), refused before they were written or taken back out of DIR.
    seconds : float
        How long the run took.
    hosts_unreachable : list of str
        Hosts given up during the run; their remaining images are in `failures`.
    interrupted : bool
        Whether Ctrl-C ended the run.
    failures : list of Failure
        One per image that failed in this run.
    """

    dir: str
    dataset_version: str
    layout: str
    total: int = 0
    downloaded: int = 0
    already_present: int = 0
    failed: int = 0
    unavailable: int = 0
    not_attempted: int = 0
    relocated: int = 0
    damaged: int = 0
    adopted: int = 0
    reused: int = 0
    converted: int = 0
    placeholders: int = 0
    seconds: float = 0.0
    hosts_unreachable: list[str] = field(default_factory=list)
    interrupted: bool = False
    failures: list[Failure] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """Whether every selected image with a URL is on disk: none failed, none left, not interrupted."""
        return not self.interrupted and self.failed == 0 and self.not_attempted == 0

    @property
    def exit_status(self) -> int:
        """What ``kaokore download`` exits with: 0 when `complete`, 130 when interrupted, else 1."""
        if self.interrupted:
            return EXIT_INTERRUPTED
        return EXIT_OK if self.complete else EXIT_INCOMPLETE

    def to_json(self) -> dict:
        """The ``--json`` document: every attribute (failures as dicts, by image name), plus ``complete``."""
        doc = asdict(self)
        doc["seconds"] = round(self.seconds, 3)
        doc["failures"] = [asdict(f) for f in sorted(self.failures, key=lambda f: f.image)]
        doc["complete"] = self.complete
        return doc

    def line(self) -> str:
        """The one-line summary the command line prints, e.g. ``"kaokore 1.0: complete: 5552 new, ..."``."""
        failed = f"{self.failed} failed" + (f" ({self.placeholders} placeholders)" if self.placeholders else "")
        parts = [f"{self.downloaded} new", f"{self.already_present} already present", failed]
        if self.reused:
            parts.insert(1, f"{self.reused} reused")
        if self.unavailable:
            parts.append(f"{self.unavailable} unavailable upstream")
        if self.damaged:
            parts.append(f"{self.damaged} damaged on disk (fetched again)")
        if self.adopted:
            parts.append(f"{self.adopted} adopted from disk")
        if self.relocated:
            parts.append(f"{self.relocated} moved to the {self.layout} layout")
        if self.not_attempted:
            parts.append(f"{self.not_attempted} not attempted")
        verdict = "interrupted" if self.interrupted else ("complete" if self.complete else "INCOMPLETE")
        text = f"kaokore {self.dataset_version}: {verdict}: {', '.join(parts)} in {self.seconds:.1f}s"
        if self.hosts_unreachable:
            text += f"; given up: {', '.join(self.hosts_unreachable)}"
        if self.failed:
            text += " (see failures.csv)"
        return text


class Progress:
    """A tqdm bar on a terminal; on anything else (CI logs) a plain line every few seconds.

    The ETA is per host: the run ends when its slowest host does, and an overall
    rate would promise too much once the smaller hosts are done.
    """

    def __init__(self, per_host: Mapping[str, int], *, quiet: bool = False, stream: TextIO | None = None,
                 interval: float = PLAIN_INTERVAL):
        self._stream = stream or sys.stderr
        self._left = dict(per_host)  # host -> images not yet finished
        self._done_by_host = dict.fromkeys(per_host, 0)
        self._total = sum(per_host.values())
        self._done = 0
        self._failed = 0
        self._quiet = quiet
        self._interval = interval
        self._start = time.monotonic()
        self._last_line = self._start
        self._bar = None
        if not quiet and self._total and _isatty(self._stream):
            # Loaded only for a bar on a terminal: quiet runs, CI logs and the offline commands never pay for it.
            from tqdm import tqdm

            # tqdm sizes the bar from the terminal, and one reporting 0 columns or 0 rows gets no
            # bar at all (tqdm hides a bar below the last row); such a terminal gets a fixed size.
            columns, rows = _terminal_size(self._stream)
            sized = columns > 0 and rows > 0
            self._bar = tqdm(total=self._total, unit="img", file=self._stream, desc="kaokore", dynamic_ncols=sized,
                             ncols=None if sized else columns or FALLBACK_SIZE.columns,
                             nrows=None if sized else rows or FALLBACK_SIZE.lines,
                             bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}, {rate_fmt}{postfix}]")

    def advance(self, host: str, ok: bool) -> None:
        self._done += 1
        self._left[host] -= 1
        self._done_by_host[host] += 1
        if not ok:
            self._failed += 1
        if self._bar is not None:
            self._bar.set_postfix_str(f"ETA {self.eta()}, {self._failed} failed", refresh=False)
            self._bar.update(1)
        else:
            self.tick()

    def taken_back(self) -> None:
        """An image counted as stored was taken back out (a placeholder): it counts as failed."""
        self._failed += 1

    def eta(self) -> str:
        elapsed = time.monotonic() - self._start
        seconds = 0.0
        for host, left in self._left.items():
            if left <= 0:
                continue
            done = self._done_by_host[host]
            if done == 0 or elapsed <= 0:
                return "?"
            seconds = max(seconds, left * elapsed / done)
        return _duration(seconds)

    def tick(self) -> None:
        """Called often; prints a plain line only when the interval has passed."""
        if self._bar is not None:
            self._bar.refresh()  # while every slot waits on a slow server, the clock still moves
            return
        if self._quiet:
            return
        now = time.monotonic()
        if now - self._last_line >= self._interval:
            self._last_line = now
            elapsed = now - self._start
            rate = self._done / elapsed if elapsed > 0 else 0.0
            print(f"kaokore: {self._done}/{self._total} images, {self._failed} failed, "
                  f"{rate:.1f} img/s, ETA {self.eta()}", file=self._stream, flush=True)

    def note(self, message: str, level: int = logging.WARNING) -> None:
        """A line about the run itself (a host given up, an interruption): logged, and shown unless quiet."""
        note(message, stream=self._stream, quiet=self._quiet, level=level, bar=self._bar)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _terminal_size(stream: TextIO) -> os.terminal_size:
    """The size the terminal behind `stream` reports; 0x0 when it cannot be asked."""
    try:
        return os.get_terminal_size(stream.fileno())
    except (AttributeError, ValueError, OSError):
        return os.terminal_size((0, 0))


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def note(message: str, *, stream: TextIO | None = None, quiet: bool = False, level: int = logging.WARNING,
         bar=None) -> None:
    """Log `message` to the "kaokore" logger and, unless `quiet`, show it as "kaokore: message" on `stream`.

    Parameters
    ----------
    message : str
        One line, without the "kaokore: " prefix.
    stream : text file, optional
        Where the human display goes (default: stderr).
    quiet : bool
        Only log it.
    level : int
        The logging level, e.g. ``logging.WARNING`` for what a user must hear about.
    bar : tqdm bar, optional
        The progress bar on screen, written around rather than through.
    """
    log.log(level, message)
    if quiet:
        return
    line = f"kaokore: {message}"
    if bar is not None:
        bar.write(line, file=stream or sys.stderr)
    else:
        print(line, file=stream or sys.stderr, flush=True)
