"""Fetching: per-host scheduling, retries, and the dead-host breaker.

Workers never sleep on a retry: a failed image goes back to its host's queue
with a not-before time, so the worker moves on to another image (often on
another host) and one image's backoff never stalls anything else. The
per-host limit is enforced here, at the only place requests are started.
"""
from __future__ import annotations

import heapq
import itertools
import queue
import random
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import requests
from urllib3.exceptions import InvalidHeader, NewConnectionError
from urllib3.util import Retry

from .metadata import Item, sha256
from .normalize import ImageTooLarge, NotAnImage, normalize
from .session import TLS_HINT, HttpOptions, ResponseTooLarge, describe, get_body, host_key
from .store import ManifestRow, StoreError, atomic_write

# Statuses worth another try: the server is busy or briefly broken. Any other
# non-200 status (400, 403, 404, 410, ...) will not change by asking again.
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504, 507, 509, 520, 521, 522, 523, 524})
HOST_UNREACHABLE = "host unreachable"
# "Too many requests" and "unavailable" are about the host, so the whole host slows down.
OVERLOAD_STATUSES = frozenset({429, 503})


@dataclass(frozen=True)
class RetryPolicy:
    retries: int = 5
    backoff_factor: float = 0.5  # first retry after ~0.5 s, then 1, 2, 4 ... (plus jitter)
    backoff_max: float = 30.0
    retry_after_cap: float = 60.0  # a server asking for an hour is not waited for
    bad_body_tries: int = 3  # a 200 that is not an image is retried, but not forever
    breaker_threshold: int = 8  # images in a row that could not reach a host mark it unreachable
    host_pause_max: float = 10.0  # the longest a 429/503 stops all requests to its host
    overload_threshold: int = 32  # 429/503 answers in a row with no image between: the host is given up

    def new_state(self) -> Retry:
        return Retry(
            total=self.retries, connect=None, read=None, status=None, redirect=0,
            backoff_factor=self.backoff_factor, status_forcelist=RETRY_STATUSES,
            respect_retry_after_header=True, raise_on_status=False,
        )

    def backoff(self, state: Retry) -> float:
        # urllib3 gives 0 for the first retry; a busy university server deserves a pause.
        base = max(state.get_backoff_time(), self.backoff_factor * 2 ** (len(state.history) - 1))
        base = min(base, self.backoff_max)
        return base + random.uniform(0, base / 2)


@dataclass(frozen=True)
class Failure:
    image: str
    url: str
    error: str
    attempts: int


@dataclass
class Task:
    """One image and its own retry state; owned by one worker at a time."""

    item: Item
    path: Path
    rel_path: str
    host: str
    state: Retry
    attempts: int = 0
    bad_bodies: int = 0


@dataclass(frozen=True)
class Attempt:
    """What one HTTP attempt came to."""

    row: ManifestRow | None = None  # stored
    error: str = ""
    retry_in: float | None = None  # None with an error: final
    connection_failure: bool = False  # could not connect: counts towards the dead-host breaker
    no_answer: bool = False  # connected, then no answer in time: counts too, but needs a longer run
    host_pause: float = 0.0  # Retry-After on a 429 or 503: what the host asked of every request
    overloaded: bool = False  # 429 or 503: the host, not this image, is the problem
    fatal_host_error: str = ""  # e.g. an untrusted certificate: every image of the host will fail alike


@dataclass
class _Host:
    pending: deque = field(default_factory=deque)
    delayed: list = field(default_factory=list)  # heap of (ready_at, seq, task)
    in_flight: int = 0
    paused_until: float = 0.0
    # Distinct images, not attempts: a live host with a few images that always
    # time out would otherwise trip the breaker once those are the last ones
    # left and retry back to back with no other answer in between.
    unreachable_images: set = field(default_factory=set)
    # Images that connected but got no answer in time. One slow page of a scroll can stall
    # several faces in a row on a live server, so these trip the breaker only in a longer run.
    unanswered_images: set = field(default_factory=set)
    answered: bool = False  # any HTTP answer at all this run
    last_connection_error: str = ""
    overloads: int = 0  # 429/503 answers since the last image that arrived
    dead: str = ""  # why it was given up, or ""

    def backlog_per_slot(self) -> float:
        return (len(self.pending) + len(self.delayed)) / (self.in_flight + 1)

    def remaining(self) -> int:
        return len(self.pending) + len(self.delayed) + self.in_flight


class HostScheduler:
    """Hands tasks to workers: never more than `per_host` at once to a host,
    the host with the most work left first, retries only once their time has come."""

    def __init__(self, tasks: Iterable[Task], per_host: int, policy: RetryPolicy, stop: threading.Event,
                 emit: Callable[[object], None]):
        self._per_host = per_host
        self._policy = policy
        self._stop = stop
        self._emit = emit  # results go to the main thread in completion order
        self._cond = threading.Condition()
        self._seq = itertools.count()
        self.hosts: dict[str, _Host] = {}
        for task in tasks:
            self.hosts.setdefault(task.host, _Host()).pending.append(task)

    def acquire(self) -> Task | None:
        with self._cond:
            while True:
                if self._stop.is_set():
                    return None
                now = time.monotonic()
                task, wake = self._pick(now)
                if task is not None:
                    return task
                if all(h.remaining() == 0 for h in self.hosts.values()):
                    self._cond.notify_all()
                    return None
                self._cond.wait(timeout=None if wake is None else max(wake - now, 0.001))

    def _pick(self, now: float) -> tuple[Task | None, float | None]:
        best = None
        wake = None
        for host in self.hosts.values():
            if host.in_flight >= self._per_host or (not host.pending and not host.delayed):
                continue
            if host.paused_until > now:
                wake = host.paused_until if wake is None else min(wake, host.paused_until)
                continue
            ready = host.delayed and host.delayed[0][0] <= now
            if not ready and not host.pending:
                ready_at = host.delayed[0][0]
                wake = ready_at if wake is None else min(wake, ready_at)
                continue
            # Most work per slot first: the makespan is set by the host that would finish
            # last, and a host's pace is its number of requests in flight.
            if best is None or host.backlog_per_slot() > best.backlog_per_slot():
                best = host
        if best is None:
            return None, wake
        # A host some images could not reach is probed with fresh images, not the
        # same ones again: that tells a dead host (breaker) from a few bad images fastest.
        suspect = bool(best.unreachable_images or best.unanswered_images) and bool(best.pending)
        if best.delayed and best.delayed[0][0] <= now and not suspect:
            task = heapq.heappop(best.delayed)[2]
        else:
            task = best.pending.popleft()
        best.in_flight += 1
        return task, None

    def finish(self, task: Task, attempt: Attempt) -> None:
        with self._cond:
            host = self.hosts[task.host]
            host.in_flight -= 1
            if attempt.connection_failure or attempt.no_answer:
                (host.unreachable_images if attempt.connection_failure else host.unanswered_images).add(task.item.name)
                host.last_connection_error = attempt.error
            elif attempt.row is not None or attempt.error:
                host.unreachable_images.clear()  # the host answered, whatever it said
                host.unanswered_images.clear()
                host.answered = True
            pause = attempt.host_pause
            if attempt.overloaded:
                # Without this, fresh images would keep every slot busy against a server that
                # is saying it is overloaded: back off the host as a whole, doubling per answer.
                host.overloads += 1
                policy = self._policy
                pause = max(pause, min(policy.backoff_factor * 2 ** min(host.overloads - 1, 16),
                                       policy.host_pause_max))
            elif attempt.row is not None:
                host.overloads = 0
            if pause:
                host.paused_until = max(host.paused_until, time.monotonic() + pause)

            if attempt.row is not None:
                self._emit(attempt.row)
            elif host.dead:
                self._emit(Failure(task.item.name, task.item.url, host.dead, task.attempts))
            elif attempt.fatal_host_error:
                self._emit(Failure(task.item.name, task.item.url, attempt.fatal_host_error, task.attempts))
                self._kill(task.host, host, attempt.fatal_host_error)
            elif (attempt.connection_failure or attempt.no_answer) and self._unreachable(host):
                # Checked before "final": with --retries 0 every failure is final, and a
                # blackholed host would then cost one full timeout per image.
                tried = len(host.unreachable_images | host.unanswered_images)
                reason = (f"{HOST_UNREACHABLE} ({tried} images in a row could not "
                          f"reach it; last: {host.last_connection_error})")
                self._emit(Failure(task.item.name, task.item.url, reason, task.attempts))
                self._kill(task.host, host, reason)
            elif attempt.overloaded and host.overloads >= self._policy.overload_threshold:
                # A server in maintenance answers 503 for hours; the next run will ask again.
                reason = f"host overloaded ({host.overloads} answers 429/503 in a row; last: {attempt.error})"
                self._emit(Failure(task.item.name, task.item.url, reason, task.attempts))
                self._kill(task.host, host, reason)
            elif attempt.retry_in is None:
                self._emit(Failure(task.item.name, task.item.url, attempt.error, task.attempts))
            else:
                heapq.heappush(host.delayed, (time.monotonic() + attempt.retry_in, next(self._seq), task))
            self._cond.notify_all()

    def _unreachable(self, host: _Host) -> bool:
        threshold = self._policy.breaker_threshold
        # A host that has answered this run is live: a stalled page must not take it down.
        patience = 2 * threshold if host.answered else threshold
        return (len(host.unreachable_images) >= threshold
                or len(host.unreachable_images | host.unanswered_images) >= patience)

    def _kill(self, name: str, host: _Host, reason: str) -> None:
        host.dead = reason
        never_tried = len(host.pending)
        left = list(host.pending) + [entry[2] for entry in host.delayed]
        host.pending.clear()
        host.delayed.clear()
        self._emit(HostDown(name, reason, never_tried))
        for task in left:
            self._emit(Failure(task.item.name, task.item.url, reason, task.attempts))



@dataclass(frozen=True)
class HostDown:
    host: str
    reason: str
    not_attempted: int


def attempt(session: requests.Session, task: Task, options: HttpOptions, policy: RetryPolicy,
            layout: str) -> Attempt:
    """One request for one image, and everything that follows from its answer."""
    task.attempts += 1
    url = task.item.url
    try:
        response = get_body(session, url, options)
    except requests.exceptions.SSLError as exc:
        message = f"TLS error: {describe(exc)}"
        if "CERTIFICATE_VERIFY_FAILED" in str(exc) or "certificate verify failed" in str(exc):
            return Attempt(error=message, fatal_host_error=f"TLS certificate not trusted; {TLS_HINT}")
        return _transient(task, policy, message, exc, connection_failure=True)
    except requests.exceptions.ConnectTimeout as exc:
        return _transient(task, policy, f"timeout: {describe(exc)}", exc, connection_failure=True)
    except requests.exceptions.ReadTimeout as exc:
        return _transient(task, policy, f"timeout: {describe(exc)}", exc, no_answer=True)
    except (requests.exceptions.TooManyRedirects, requests.exceptions.InvalidSchema,
            requests.exceptions.InvalidURL, requests.exceptions.MissingSchema) as exc:
        return Attempt(error=f"bad redirect: {describe(exc)}")
    except ResponseTooLarge as exc:
        return Attempt(error=str(exc))
    except requests.exceptions.ConnectionError as exc:
        return _transient(task, policy, f"connection error: {describe(exc)}", exc,
                          connection_failure=_could_not_connect(exc))
    except (requests.exceptions.RequestException, OSError) as exc:
        # Truncated bodies, decoding errors, slow trickles: the host is up, the answer was bad.
        return _transient(task, policy, f"incomplete response: {describe(exc)}", exc)

    if response.status != 200:
        if response.status in RETRY_STATUSES:
            retry_after = _retry_after(task.state, response)
            return _transient(task, policy, f"HTTP {response.status}", None, status=response.status,
                              retry_after=retry_after)
        return Attempt(error=f"HTTP {response.status}")

    try:
        image = normalize(response.body)
    except ImageTooLarge as exc:
        return Attempt(error=f"image too large: {exc}")
    except NotAnImage as exc:
        task.bad_bodies += 1
        if task.bad_bodies >= policy.bad_body_tries:
            return Attempt(error=str(exc))
        return _transient(task, policy, str(exc), None)

    try:
        atomic_write(task.path, image.data)
    except OSError as exc:
        # Disk full, read-only, permissions: every other image would fail alike after being fetched.
        raise StoreError(f"cannot write {task.path}: {exc.strerror or exc}") from None
    row = ManifestRow(
        image=task.item.name, path=task.rel_path, url=url, sha256=sha256(image.data),
        bytes=len(image.data), source_width=image.source_width, source_height=image.source_height,
        source_mode=image.source_mode, converted=image.converted, layout=layout,
    )
    return Attempt(row=row)


def _transient(task: Task, policy: RetryPolicy, error: str, exc: Exception | None, *,
               connection_failure: bool = False, no_answer: bool = False, status: int | None = None,
               retry_after: float | None = None) -> Attempt:
    try:
        task.state = task.state.increment(method="GET", url=task.item.url, error=exc)
    except Exception:  # noqa: BLE001 - urllib3 signals "exhausted" by raising
        return Attempt(error=error, connection_failure=connection_failure, no_answer=no_answer)
    delay = policy.backoff(task.state)
    pause = 0.0
    overloaded = status in OVERLOAD_STATUSES
    if retry_after is not None:
        # A floor, not a replacement: "Retry-After: 0" from a failing server must
        # not turn the backoff into a tight loop.
        asked = min(max(retry_after, 0.0), policy.retry_after_cap)
        delay = max(delay, asked)
        if overloaded:
            pause = asked
    return Attempt(error=error, retry_in=delay, connection_failure=connection_failure, no_answer=no_answer,
                   host_pause=pause,
                   overloaded=overloaded)


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
    seen = set()
    stack = [exc]
    while stack:
        e = stack.pop()
        if id(e) in seen or e is None:
            continue
        seen.add(id(e))
        if isinstance(e, NewConnectionError):
            return True
        stack.extend(a for a in getattr(e, "args", ()) if isinstance(a, BaseException))
        stack.append(getattr(e, "reason", None))
        stack.append(e.__cause__)
        stack.append(e.__context__)
    return False


def run_workers(session: requests.Session, tasks: list[Task], *, threads: int, per_host: int,
                options: HttpOptions, policy: RetryPolicy, layout: str, stop: threading.Event,
                results: queue.Queue) -> None:
    """Start the workers; results (ManifestRow, Failure, HostDown) arrive on `results`,
    and a None per worker when it exits."""
    scheduler = HostScheduler(tasks, per_host, policy, stop, results.put)

    def work() -> None:
        try:
            while (task := scheduler.acquire()) is not None:
                try:
                    outcome = attempt(session, task, options, policy, layout)
                except StoreError as exc:
                    stop.set()
                    results.put(exc)  # the main thread stops the run with it
                    return
                except Exception as exc:  # noqa: BLE001 - one image's surprise must not kill the run
                    outcome = Attempt(error=f"internal error: {type(exc).__name__}: {exc}")
                scheduler.finish(task, outcome)
        finally:
            results.put(None)

    # Daemon threads: on Ctrl-C the main thread saves state and leaves without
    # waiting out a request stuck in a 30-second read.
    workers = [threading.Thread(target=work, name=f"kaokore-fetch-{i}", daemon=True) for i in range(threads)]
    for w in workers:
        w.start()


def make_task(item: Item, root: Path, rel_path: str, policy: RetryPolicy) -> Task:
    return Task(item=item, path=root / rel_path, rel_path=rel_path, host=host_key(item.url),
                state=policy.new_state())
