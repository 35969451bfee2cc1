"""The fetch stage: one HTTP attempt per turn, the workers that make them, and the metadata fetch.

Which request goes next, and when a host is slowed or given up, is decided in
`scheduler`; here each answer is turned into what it says about the image and
its host, and the workers' results are folded into the run on the main thread.

Every wrong answer counts against its host; those that asking again would only repeat
(a refusal such as 403 or 404, a redirect loop, a body over the size cap or that does not
decompress, a placeholder) are final for the image at once.
"""
from __future__ import annotations

import queue
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import requests
from urllib3.exceptions import InvalidHeader, NewConnectionError
from urllib3.util import Retry

from ..dataset.metadata import Item, sha256
from ..errors import NetworkError
from ..storage.manifest import Journal
from ..storage.records import ManifestRow
from ..storage.safewrite import remove_file
from ..storage.store import PathError, StoreError, write_image
from .normalize import ImageTooLarge, NotAnImage, normalize
from .scheduler import (
    HOST_UNREACHABLE,
    OVERLOAD_STATUSES,
    RETRY_STATUSES,
    Attempt,
    Failure,
    HostScheduler,
    RetryPolicy,
    Task,
    Trouble,
)
from .session import TLS_HINT, HttpOptions, ResponseTooLarge, describe, get_body, host_key

if TYPE_CHECKING:
    from .report import Progress, Summary

__all__ = ["HOST_UNREACHABLE", "RETRY_STATUSES", "Attempt", "Failure", "RetryPolicy", "Task", "attempt",
           "fetch_images", "get_metadata_file", "make_task"]

STOP_GRACE = 2.0  # seconds Ctrl-C (or a full disk) waits for in-flight images before saving and leaving
JOURNAL_FLUSH = 1.0
# urllib3 words a proxy's refusal of a tunnel as "Tunnel connection failed: 502 Bad Gateway".
_TUNNEL_REFUSED = re.compile(r"Tunnel connection failed: (\d{3}[^'\")]*)")
# What a final status usually means, where the number alone leaves a user guessing.
STATUS_HINTS = {
    401: "the server asks for a login",
    403: "forbidden: usually a proxy or firewall in between, or a server blocking this User-Agent or address",
    407: "the proxy asks for credentials (put them in HTTPS_PROXY)",
    451: "unavailable for legal reasons",
}


def attempt(session: requests.Session, task: Task, options: HttpOptions, policy: RetryPolicy,
            layout: str, claim: Callable[[Task, str], str] | None = None) -> Attempt:
    """One request for one image, and everything that follows from its answer.

    `claim` (`HostScheduler.claim`) is asked before the image is written whether its bytes
    are a placeholder's; it returns why not to keep them, or "".
    """
    task.attempts += 1
    url = task.item.url
    try:
        response = get_body(session, url, options)
    except requests.exceptions.SSLError as exc:
        message = f"TLS error: {describe(exc)}"
        if "CERTIFICATE_VERIFY_FAILED" in str(exc) or "certificate verify failed" in str(exc):
            return Attempt(error=message, fatal_host_error=f"TLS certificate not trusted; {TLS_HINT}")
        return _transient(task, policy, message, exc, trouble=Trouble.REFUSED)
    except requests.exceptions.ConnectTimeout as exc:
        return _transient(task, policy, f"timeout: {describe(exc)}", exc, trouble=Trouble.REFUSED)
    except requests.exceptions.ReadTimeout as exc:
        return _transient(task, policy, f"timeout: {describe(exc)}", exc, trouble=Trouble.NO_ANSWER)
    except (requests.exceptions.TooManyRedirects, requests.exceptions.InvalidSchema,
            requests.exceptions.InvalidURL, requests.exceptions.MissingSchema) as exc:
        return Attempt(error=f"bad redirect: {describe(exc)}", trouble=Trouble.BAD_ANSWER, conclusive=True)
    except ResponseTooLarge as exc:
        return Attempt(error=str(exc), trouble=Trouble.BAD_ANSWER, conclusive=True)
    except requests.exceptions.ContentDecodingError as exc:
        return Attempt(error=f"body does not decompress: {describe(exc)}", trouble=Trouble.BAD_ANSWER,
                       conclusive=True)
    except requests.exceptions.ProxyError as exc:
        # The proxy answered; what failed is the host behind it (or the proxy itself).
        return _transient(task, policy, _proxy_error(exc, task.host), exc, trouble=Trouble.REFUSED)
    except requests.exceptions.ConnectionError as exc:
        trouble = Trouble.REFUSED if _could_not_connect(exc) else Trouble.BAD_ANSWER
        return _transient(task, policy, f"connection error: {describe(exc)}", exc, trouble=trouble)
    except (requests.exceptions.RequestException, OSError) as exc:
        # Truncated bodies, decoding errors, slow trickles: the host is up, the answer was bad.
        return _transient(task, policy, f"incomplete response: {describe(exc)}", exc)

    if response.status != 200:
        if response.status in RETRY_STATUSES:
            retry_after = _retry_after(task.state, response)
            return _transient(task, policy, f"HTTP {response.status}", None, status=response.status,
                              retry_after=retry_after)
        return _final_status(response.status)

    try:
        image = normalize(response.body)
    except ImageTooLarge as exc:
        return Attempt(error=f"image too large: {exc}", trouble=Trouble.BAD_ANSWER, conclusive=True)
    except NotAnImage as exc:
        task.bad_bodies += 1
        if task.bad_bodies >= policy.bad_body_tries:
            return Attempt(error=str(exc), trouble=Trouble.BAD_ANSWER)
        return _transient(task, policy, str(exc), None)

    digest = sha256(image.data)
    # Before the write: a placeholder's bytes then seldom touch the disk.
    if claim is not None and (placeholder := claim(task, digest)):
        return Attempt(error=placeholder, trouble=Trouble.PLACEHOLDER, conclusive=True)
    try:
        # A full or read-only disk raises StoreError from here: every other image would fail alike.
        write_image(task.path, task.rel_path, image.data)
    except PathError as exc:
        return Attempt(error=str(exc))  # a folder squats this image's path, say: it alone fails
    row = ManifestRow.of(task.item, task.rel_path, layout, image, digest, len(image.data))
    return Attempt(row=row, digest=digest)


def _final_status(status: int) -> Attempt:
    """A status asking again would not change: final for the image, and against the host (one
    404 among good images is the image's; a run of them, with nothing delivered, is the host's)."""
    hint = STATUS_HINTS.get(status)
    error = f"HTTP {status}" + (f" ({hint})" if hint else "")
    trouble = Trouble.DENIED if 400 <= status < 500 else Trouble.BAD_ANSWER
    return Attempt(error=error, trouble=trouble, conclusive=True)


def _transient(task: Task, policy: RetryPolicy, error: str, exc: Exception | None, *,
               trouble: Trouble = Trouble.BAD_ANSWER, status: int | None = None,
               retry_after: float | None = None) -> Attempt:
    if status in OVERLOAD_STATUSES:
        trouble = Trouble.OVERLOADED
    try:
        task.state = task.state.increment(method="GET", url=task.item.url, error=exc)
    except Exception:  # noqa: BLE001 - urllib3 signals "exhausted" by raising
        return Attempt(error=error, trouble=trouble)
    delay = policy.backoff(task.state)
    pause = 0.0
    if retry_after is not None:
        # A floor, not a replacement: "Retry-After: 0" from a failing server must
        # not turn the backoff into a tight loop. The server asked it of every request, not just this one.
        pause = min(max(retry_after, 0.0), policy.retry_after_cap)
        delay = max(delay, pause)
    return Attempt(error=error, retry_in=delay, trouble=trouble, host_pause=pause)


def _retry_after(state: Retry, response) -> float | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return state.parse_retry_after(value)
    except InvalidHeader:  # malformed: fall back to our own backoff
        return None


def _could_not_connect(exc: requests.exceptions.ConnectionError) -> bool:
    """A refused or unresolvable connection, as opposed to a reset mid-answer."""
    return any(isinstance(e, NewConnectionError) for e in _chain(exc))


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """Every exception an error wraps (requests nests urllib3's, which nests the socket's), itself first."""
    seen, stack = set(), [exc]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        stack.extend(a for a in getattr(e, "args", ()) if isinstance(a, BaseException))
        stack.extend((getattr(e, "reason", None), e.__cause__, e.__context__))


def fetch_images(session: requests.Session, root: Path, todo, rows: dict[str, ManifestRow], summary: Summary, *,
                 threads: int, per_host: int, options: HttpOptions, policy: RetryPolicy, layout: str,
                 quiet: bool, stream: TextIO, present: Collection[str] = ()) -> None:
    """Fetch every `(item, rel_path)` of `todo` into `root`, updating `rows` and `summary` as images land.

    Parameters
    ----------
    session : requests.Session
        The run's session (`session.make_session`).
    root : Path
        DIR; each image is written to ``root / rel_path``.
    todo : iterable of (Item, str)
        What to fetch, and where each goes.
    rows : dict
        The manifest rows by image name (the images already in DIR); each image stored is
        added, and an image taken back out as a placeholder (with its file) removed.
    summary : Summary
        Its counters, `failures` and `hosts_unreachable` are filled in.
    threads, per_host : int
        Requests in flight at most, in all and per host.
    options, policy
        How each request is made, and how often and how patiently it is asked again.
    layout : str
        Recorded in each manifest row.
    quiet : bool
        No progress display and no notes on `stream`; notes about given-up hosts are still logged.
    stream : TextIO
        Where progress and notes go.
    present : collection of str
        The images `summary.already_present` counts: one taken back out as a placeholder is
        no longer present.

    Raises
    ------
    StoreError
        DIR could not take an image: the run stops (what landed is in `rows`).
    KeyboardInterrupt
        Never: Ctrl-C sets ``summary.interrupted`` and returns once in-flight images had a moment to land.
    """
    from .report import Progress  # report imports this module for `Failure`

    # Every image's task is made before the first request: parse each server's URL once, not each
    # image's, and share one starting Retry (urllib3's Retry is immutable: increment() makes a new one).
    state, hosts = policy.new_state(), {}
    tasks = [make_task(item, root, rel, policy, state=state, hosts=hosts) for item, rel in todo]
    if not tasks:
        return
    results: queue.Queue = queue.Queue()
    progress = Progress(Counter(task.host for task in tasks), quiet=quiet, stream=stream)
    collector = _Collector(root, rows, summary, Journal(root), progress, workers=min(threads, len(tasks)),
                           fetching={task.item.name for task in tasks}, present=present)
    scheduler = HostScheduler(tasks, per_host, policy, _QueueSink(results.put), kept=list(rows.values()))
    _start_workers(session, scheduler, collector.workers, options, policy, layout, results.put)
    try:
        while collector.workers and collector.fatal is None:
            try:
                results.get(timeout=0.5).apply(collector)
            except queue.Empty:
                progress.tick()
    except KeyboardInterrupt:
        summary.interrupted = True
        progress.note("interrupted; saving state")
    finally:
        # No new requests from here; what is in flight gets STOP_GRACE to land in the
        # manifest, then is dropped (a rerun adopts any file that landed after that).
        scheduler.stop()
        deadline = time.monotonic() + STOP_GRACE
        while collector.workers and (summary.interrupted or collector.fatal is not None):
            try:
                results.get(timeout=max(deadline - time.monotonic(), 0.01)).apply(collector)
            except queue.Empty:
                break
        progress.close()
        collector.journal.close()
    if collector.fatal is not None:
        raise collector.fatal
    summary.failed = len(summary.failures)
    summary.not_attempted = max(len(tasks) - summary.downloaded - (summary.failed - collector.kept_failed), 0)


def _start_workers(session: requests.Session, scheduler: HostScheduler, threads: int, options: HttpOptions,
                   policy: RetryPolicy, layout: str, put: Callable[[object], None]) -> None:
    def work() -> None:
        try:
            while (task := scheduler.acquire()) is not None:
                try:
                    outcome = attempt(session, task, options, policy, layout, scheduler.claim)
                except StoreError as exc:
                    scheduler.stop()
                    # The image that met the full disk failed: failures.csv names it, with the error.
                    scheduler.finish(task, Attempt(error=str(exc)))
                    put(_Fatal(exc))  # the main thread stops the run with it
                    return
                except Exception as exc:  # noqa: BLE001 - one image's surprise must not kill the run
                    outcome = Attempt(error=f"internal error: {type(exc).__name__}: {exc}")
                scheduler.finish(task, outcome)
        finally:
            put(_WorkerExited())

    # Daemon threads: on Ctrl-C the main thread saves state and leaves without
    # waiting out a request stuck in a 30-second read.
    for i in range(threads):
        threading.Thread(target=work, name=f"kaokore-fetch-{i}", daemon=True).start()


# What the workers tell the main thread, one small record per kind; each knows what it does to the run.

@dataclass(frozen=True)
class _Stored:
    row: ManifestRow

    def apply(self, run: _Collector) -> None:
        run.stored(self.row)


@dataclass(frozen=True)
class _Failed:
    failure: Failure

    def apply(self, run: _Collector) -> None:
        run.failed(self.failure)


@dataclass(frozen=True)
class _GivenUp:
    host: str
    reason: str
    not_attempted: int

    def apply(self, run: _Collector) -> None:
        run.given_up(self.host, self.reason, self.not_attempted)


@dataclass(frozen=True)
class _Placeholder:
    failure: Failure
    path: str | None

    def apply(self, run: _Collector) -> None:
        run.placeholder(self.failure, self.path)


@dataclass(frozen=True)
class _Fatal:
    error: StoreError

    def apply(self, run: _Collector) -> None:
        run.fatal = run.fatal or self.error


@dataclass(frozen=True)
class _WorkerExited:
    def apply(self, run: _Collector) -> None:
        run.workers -= 1


@dataclass(frozen=True)
class _QueueSink:
    """The scheduler's verdicts, queued for the main thread (the scheduler calls these under its lock)."""

    put: Callable[[object], None]

    def stored(self, row: ManifestRow) -> None:
        self.put(_Stored(row))

    def failed(self, failure: Failure) -> None:
        self.put(_Failed(failure))

    def given_up(self, host: str, reason: str, not_attempted: int) -> None:
        self.put(_GivenUp(host, reason, not_attempted))

    def placeholder(self, failure: Failure, path: str | None) -> None:
        self.put(_Placeholder(failure, path))


class _Collector:
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
        self.kept_failed = 0  # images kept from before this run, taken back out as placeholders
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
        else:  # kept from an earlier run
            self.kept_failed += 1
            if failure.image in self.present:
                self.summary.already_present -= 1
        self.progress.note(f"took {path} back out of DIR: {failure.error}")


def make_task(item: Item, root: Path, rel_path: str, policy: RetryPolicy, *, state: Retry | None = None,
              hosts: dict[str, str] | None = None) -> Task:
    """The task of fetching `item` to `rel_path`; `hosts` caches `host_key` by what precedes a URL's path."""
    url = item.url
    if hosts is None:
        host = host_key(url)
    else:
        # scheme://netloc: everything host_key reads. A checked URL has "//" right after its scheme.
        origin = url[:url.find("/", url.find("//") + 2)] if url.find("/", url.find("//") + 2) >= 0 else url
        host = hosts.get(origin) or hosts.setdefault(origin, host_key(url))
    return Task(item=item, path=root / rel_path, rel_path=rel_path, host=host,
                state=state if state is not None else policy.new_state())


def get_metadata_file(session: requests.Session, url: str, options: HttpOptions, policy: RetryPolicy,
                      sleep: Callable[[float], None] = time.sleep) -> bytes:
    """GET one metadata file, asking again as images are asked again (same retries, backoff, Retry-After).

    Raises
    ------
    NetworkError
        The file could not be fetched; nothing is downloaded then.
    """
    state = policy.new_state()
    while True:
        retry_after = None
        try:
            response = get_body(session, url, options)
        except requests.exceptions.SSLError:
            raise NetworkError(f"cannot fetch {url}: TLS certificate not trusted ({TLS_HINT})") from None
        except ResponseTooLarge as exc:
            raise NetworkError(f"cannot fetch metadata {url}: {exc}") from None
        except requests.exceptions.ProxyError as exc:
            error, failed = _proxy_error(exc, host_key(url)), exc
        except (requests.exceptions.RequestException, OSError) as exc:
            error, failed = describe(exc), exc
        else:
            if response.status == 200:
                return response.body
            error, failed = f"HTTP {response.status}", None
            if response.status not in RETRY_STATUSES:
                break
            retry_after = _retry_after(state, response)
        try:
            state = state.increment(method="GET", url=url, error=failed)
        except Exception:  # noqa: BLE001 - urllib3 signals "exhausted" by raising
            break
        delay = policy.backoff(state)
        if retry_after is not None:
            delay = max(delay, min(max(retry_after, 0.0), policy.retry_after_cap))
        sleep(delay)
    raise NetworkError(f"cannot fetch metadata {url}: {error} (use --metadata-dir DIR to read local copies)")


def _proxy_error(exc: requests.exceptions.ProxyError, host: str) -> str:
    """A proxy refusing the tunnel is the host's failure seen through the proxy; anything else is the proxy's."""
    match = _TUNNEL_REFUSED.search(" | ".join(str(e) for e in _chain(exc)))
    if match:
        return f"proxy could not reach {host}: {match.group(1).strip()}"
    return f"cannot use the proxy: {describe(exc)}"
