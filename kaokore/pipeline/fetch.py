"""The fetch stage: the workers that fetch the images, and the metadata fetch.

Which request goes next, and when a host is slowed or given up, is decided in `scheduler`;
what one answer means, in `attempt`; the workers' results are folded into the run on the
main thread by the `collector`.
"""
from __future__ import annotations

import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterable
from pathlib import Path
from typing import TextIO

import requests

from ..dataset.metadata import Item
from ..errors import NetworkError
from ..storage.manifest import Journal
from ..storage.records import ManifestRow
from ..storage.store import StoreError
from .attempt import attempt
from .collector import Collector, Fatal, QueueSink, WorkerExited
from .records import Attempt, Kind, RetryPolicy, Task
from .report import Progress, Summary
from .scheduler import HostScheduler
from .session import TLS_HINT, HttpOptions, get_body, host_key
from .transport import TRANSPORT_ERRORS, diagnose, diagnose_status, retry_after

STOP_GRACE = 2.0  # seconds Ctrl-C (or a full disk) waits for in-flight images before saving and leaving


def fetch_images(session: requests.Session, root: Path, todo, rows: dict[str, ManifestRow], summary: Summary, *,
                 threads: int, per_host: int, options: HttpOptions, policy: RetryPolicy, layout: str,
                 quiet: bool, stream: TextIO, present: Collection[str] = (),
                 before_writes: Callable[[], None] | None = None) -> None:
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
        Its counters, `failures` and `hosts_unreachable` are filled in; `failed` and `not_attempted`
        are the run's to settle (`bookkeeping.settle`), once its twins are stored too.
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
    before_writes : callable, optional
        Run on this thread once the workers have started: the first requests go out meanwhile,
        but no image is written before it returns (the run's reserve of disk room). Its
        `StoreError` stops the run, and is the error of each image then waiting to be written.

    Raises
    ------
    StoreError
        DIR could not take an image: the run stops (what landed is in `rows`).
    KeyboardInterrupt
        Never: Ctrl-C sets ``summary.interrupted`` and returns once in-flight images had a moment to land.
    """
    tasks = make_tasks(todo, root, policy)
    if not tasks:
        return
    results: queue.Queue = queue.Queue()
    progress = Progress(Counter(task.host for task in tasks), quiet=quiet, stream=stream)
    collector = Collector(root, rows, summary, Journal(root), progress, workers=min(threads, len(tasks)),
                          fetching={task.item.name for task in tasks}, present=present)
    scheduler = HostScheduler(tasks, per_host, policy, QueueSink(results.put), kept=list(rows.values()))
    gate = _Gate(before_writes)
    _start_workers(session, scheduler, collector.workers, options, policy, layout, results.put, gate.guard(scheduler))
    try:
        _collect(results, collector, scheduler, gate)
    finally:
        progress.close()
        collector.journal.close()
    if collector.fatal is not None:
        raise collector.fatal


def _collect(results: queue.Queue, collector: Collector, scheduler: HostScheduler, gate: _Gate) -> None:
    """Open the gate, then apply the workers' results on this thread until they are done, DIR stops
    taking images, or Ctrl-C."""
    summary, progress = collector.summary, collector.progress
    try:
        collector.fatal = gate.open()
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


class _Gate:
    """No image is written before `open` has run `before_writes` (the run's reserve of disk room):
    the first requests go out meanwhile. Its `StoreError` is then the error of every image that
    waited at the gate, as a full disk's is of the image that met it."""

    def __init__(self, before_writes: Callable[[], None] | None):
        self._before_writes = before_writes
        self._opened = threading.Event()
        self._error: StoreError | None = None

    def open(self) -> StoreError | None:
        try:
            if self._before_writes is not None:
                self._before_writes()
        except StoreError as exc:
            self._error = exc
        finally:  # Ctrl-C included: a worker must never wait here for good
            self._opened.set()
        return self._error

    def guard(self, scheduler: HostScheduler) -> Callable[[Task, str], str]:
        """`scheduler.claim`, asked right before each write, once the gate is open."""

        def claim(task: Task, digest: str) -> str:
            self._opened.wait()
            if self._error is not None:
                raise StoreError(str(self._error))
            return scheduler.claim(task, digest)

        return claim


def _start_workers(session: requests.Session, scheduler: HostScheduler, threads: int, options: HttpOptions,
                   policy: RetryPolicy, layout: str, put: Callable[[object], None],
                   claim: Callable[[Task, str], str]) -> None:
    def work() -> None:
        try:
            while (task := scheduler.acquire()) is not None:
                try:
                    outcome = attempt(session, task, options, policy, layout, claim)
                except StoreError as exc:
                    scheduler.stop()
                    # The image that met the full disk failed: failures.csv names it, with the error.
                    scheduler.finish(task, Attempt(error=str(exc), kind=Kind.DISK))
                    put(Fatal(exc))  # the main thread stops the run with it
                    return
                except Exception as exc:  # noqa: BLE001 - one image's surprise must not kill the run
                    outcome = Attempt(error=f"internal error: {type(exc).__name__}: {exc}", kind=Kind.INTERNAL)
                scheduler.finish(task, outcome)
        finally:
            put(WorkerExited())

    # Daemon threads: on Ctrl-C the main thread saves state and leaves without
    # waiting out a request stuck in a 30-second read.
    for i in range(threads):
        threading.Thread(target=work, name=f"kaokore-fetch-{i}", daemon=True).start()


def make_task(item: Item, root: Path, rel_path: str, policy: RetryPolicy) -> Task:
    """The task of fetching `item` to `rel_path`."""
    return Task(item=item, root=root, rel_path=rel_path, host=host_key(item.url), state=policy.new_state())


def make_tasks(todo: Iterable[tuple[Item, str]], root: Path, policy: RetryPolicy) -> list[Task]:
    """`make_task` for each `(item, rel_path)`, in front of a run's first request: each server's
    URL is parsed once, not each image's (a checked URL has "//" right after its scheme, and
    scheme://netloc is everything `host_key` reads), and the tasks share one starting Retry
    (urllib3's Retry is immutable: increment() makes a new one)."""
    state, hosts, tasks = policy.new_state(), {}, []
    for item, rel in todo:
        url = item.url
        cut = url.find("/", url.find("//") + 2)
        origin = url if cut < 0 else url[:cut]
        host = hosts.get(origin)
        if host is None:
            host = hosts[origin] = host_key(url)
        tasks.append(Task(item, root, rel, host, state))
    return tasks


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
        wait = None
        try:
            response = get_body(session, url, options)
        except TRANSPORT_ERRORS as exc:
            failure, failed = diagnose(exc, host_key(url)), exc
            if failure.kind in (Kind.UNTRUSTED, Kind.TLS):
                raise NetworkError(f"cannot fetch {url}: TLS certificate not trusted ({TLS_HINT})") from None
            if failure.kind is Kind.TOO_LARGE:
                raise NetworkError(f"cannot fetch metadata {url}: {failure.detail}") from None
        else:
            if response.status == 200:
                return response.body
            failure, failed = diagnose_status(response.status), None
            if failure.conclusive:
                break
            wait = retry_after(state, response)
        step = policy.next_try(state, url, failed, wait)
        if step is None:
            break
        state, delay, _ = step
        sleep(delay)
    raise NetworkError(f"cannot fetch metadata {url}: {failure.detail} (use --metadata-dir DIR to read local copies)")
