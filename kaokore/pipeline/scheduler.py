"""Which request goes next: per-host slots, retries, and one failure model per host.

Workers never sleep on a retry: a failed image goes back to its host's queue
with a not-before time, so the worker moves on to another image (often on
another host) and one image's backoff never stalls anything else. The
per-host limit is enforced here, at the only place requests are started.

Every failed attempt with no image delivered by that host since counts against the
host as a whole, whatever the failure was (refused, cut, timed out, 5xx, not an image,
a refusal such as 403 or 404, a redirect loop, an oversize body, a placeholder): its pace
slows (fewer slots, then a growing pause between requests) and, after a bounded run of
distinct images, it is given up for this run. An image delivered resets all of it, so a
flaky but working host is slowed a little and never given up, and a 404 among good
images fails that image alone.

A placeholder (the same bytes sent for different faces, see `placeholders`) is caught here,
under the lock where verdicts are made, before its file is written (`claim`): an image
whose bytes another request already got is failed, and the images already stored with
them are taken back, their deliveries undone.

Nothing here does I/O or reads the wall clock directly: the clock is injected, so the
rules can be tested step by step.
"""
from __future__ import annotations

import heapq
import itertools
import random
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Protocol

from urllib3.util import Retry

from .. import defaults
from ..dataset.iiif import page_key
from ..dataset.metadata import Item
from .placeholders import Holder, Ledger
from .placeholders import reason as placeholder_reason
from .session import host_key

# Statuses worth another try: the server is busy or briefly broken. Any other
# non-200 status (400, 403, 404, 410, ...) will not change by asking again.
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504, 507, 509, 520, 521, 522, 523, 524})
# "Too many requests" and "unavailable" are the host asking to be left alone for a while.
OVERLOAD_STATUSES = frozenset({429, 503})
HOST_UNREACHABLE = "host unreachable"
HOST_FAILING = "host failing"
HOST_REFUSING = "host refusing"
HOST_OVERLOADED = "host overloaded"
# How placeholders count in a host's run: their texts name how many faces, which varies.
PLACEHOLDER_RUN = "a placeholder (one image sent for different faces)"
# Failures in a row before a host's requests are spaced out by a pause; before that, its
# slots shrink. A 20%-flaky host reaches this on under 1% of its attempts.
PAUSE_AFTER = 3


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to ask again: per image, and per host.

    Pass one to ``kaokore.download(policy=...)``; ``download(retries=...)`` overrides
    its `retries`. Importable as ``kaokore.RetryPolicy``.

    Attributes
    ----------
    retries : int
        Retries per image for transient failures (connection errors, timeouts,
        HTTP 408/429/5xx, a body that is not an image); 0 or more. An answer that would
        only come again is final at once, though it counts against its host: a refusal
        (400, 403, 404, 410...), a redirect loop, a body over the size cap or that does
        not decompress, a placeholder.
    backoff_factor : float
        Seconds before an image's first retry, doubled at each further retry, plus up
        to half again of random jitter. Also the first pause of a failing host.
    backoff_max : float
        The longest wait before a retry, jitter aside.
    retry_after_cap : float
        The longest ``Retry-After`` honoured, in seconds; a longer one is cut to this.
    bad_body_tries : int
        Tries before an image whose server answers 200 with something that is not an
        image fails.
    breaker_threshold : int
        Distinct images in a row failing, with no image delivered in between, that give
        a host up for the run; twice as many once the host has delivered an image.
        Every kind of failure counts, refusals (403, 404...) and placeholders included;
        a placeholder never counts as an image delivered.
    host_pause_max : float
        The longest pause, in seconds, between the requests of a failing host.
    overload_threshold : int
        HTTP 429/503 answers in a row, with no image in between, that give a host up.

    Examples
    --------
    >>> patient = kaokore.RetryPolicy(retries=10, backoff_max=120.0)
    >>> kaokore.download("data", policy=patient)
    """

    retries: int = defaults.RETRIES
    backoff_factor: float = 0.5  # first retry after ~0.5 s, then 1, 2, 4 ... (plus jitter)
    backoff_max: float = 30.0
    retry_after_cap: float = 60.0  # a server asking for an hour is not waited for
    bad_body_tries: int = 6  # a 200 that is not an image is retried, but not forever
    # Distinct images in a row failing, with no image delivered in between, that give a host up:
    # this many on a host that has delivered nothing this run, twice as many on one that has
    # (a slow page of a scroll stalls several faces in a row on a live server).
    breaker_threshold: int = 8
    host_pause_max: float = 10.0  # the longest a failing host's requests are held back
    overload_threshold: int = 32  # 429/503 answers in a row with no image between: the host is given up

    def new_state(self) -> Retry:
        """A fresh urllib3 `Retry` counting one image's (or metadata file's) retries."""
        return Retry(
            total=self.retries, connect=None, read=None, status=None, redirect=0,
            backoff_factor=self.backoff_factor, status_forcelist=RETRY_STATUSES,
            respect_retry_after_header=True, raise_on_status=False,
        )

    def backoff(self, state: Retry) -> float:
        """Seconds to wait before the next retry that `state` has counted, jitter included."""
        # urllib3 gives 0 for the first retry; a busy university server deserves a pause.
        base = max(state.get_backoff_time(), self.backoff_factor * 2 ** (len(state.history) - 1))
        base = min(base, self.backoff_max)
        return base + random.uniform(0, base / 2)

    def host_pause(self, step: int) -> float:
        """The pause before a host's next request after `step` growing steps (0: the first)."""
        return min(self.backoff_factor * 2 ** min(step, 16), self.host_pause_max)


class Trouble(Enum):
    """What a failed attempt says about its host (an image's own problem, like a path DIR cannot take, is none)."""

    REFUSED = "could not connect"  # refused, unresolvable, connect timeout, a proxy that could not reach it
    NO_ANSWER = "no answer"  # connected, then silence past the timeout
    # 5xx, a connection cut mid-answer, a 200 that is not an image, a redirect loop, a body over
    # the size cap or that does not decompress
    BAD_ANSWER = "bad answer"
    OVERLOADED = "overloaded"  # 429/503: the host asked to be left alone
    DENIED = "denied"  # 4xx (403, 404, 410...): an answer, and a no; one is the image's, a run is the host's
    PLACEHOLDER = "placeholder"  # the same image as for other faces


# The host's server did work for these, so its pace slows by slots, not only by pauses.
_STRAINING = frozenset({Trouble.BAD_ANSWER, Trouble.OVERLOADED, Trouble.PLACEHOLDER})
# A refusal costs the server nothing, and pausing would only slow telling a dead or refusing host.
_UNPAUSED = frozenset({Trouble.REFUSED, Trouble.DENIED})


@dataclass(frozen=True)
class Failure:
    """An image a download could not fetch; a row of failures.csv.

    Attributes
    ----------
    image : str
        The image name, ``NNNNNNNN.jpg``.
    url : str
        The URL it was requested from.
    error : str
        Why it failed: the last error, or why its host was given up.
    attempts : int
        Requests made for it (0 when its host was given up before any).
    """

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
    last_round: bool = False  # its retries already ran out once, on a host that delivers


@dataclass(frozen=True)
class Attempt:
    """What one HTTP attempt came to."""

    row: object | None = None  # the stored image's manifest row
    digest: str = ""  # with `row`: the SHA-256 the image claimed (`HostScheduler.claim`) before it was written
    error: str = ""
    retry_in: float | None = None  # None with an error: final for this image
    trouble: Trouble | None = None  # set when the failure counts against the host
    # The server's last word on this image (a refusal, a placeholder, a redirect loop...): asking
    # again would get the same, so no second round either.
    conclusive: bool = False
    host_pause: float = 0.0  # Retry-After: what the server asked of every request
    fatal_host_error: str = ""  # e.g. an untrusted certificate: every image of the host will fail alike


class Sink(Protocol):
    """Where the scheduler's verdicts go (called with the scheduler's lock held: must not block)."""

    def stored(self, row: object) -> None: ...

    def failed(self, failure: Failure) -> None: ...

    def given_up(self, host: str, reason: str, not_attempted: int) -> None: ...

    def placeholder(self, failure: Failure, path: str | None) -> None:
        """An image failed as a placeholder; `path` (relative to DIR) when its file is on disk
        and must be taken out, with its manifest row."""


@dataclass(frozen=True)
class Turn:
    """What a worker may do now: fetch `task`, or wait until `wake_at` (None: until told), or stop."""

    task: Task | None = None
    wake_at: float | None = None
    finished: bool = False


@dataclass
class _Host:
    pending: deque = field(default_factory=deque)
    delayed: list = field(default_factory=list)  # heap of (ready_at, seq, task)
    in_flight: int = 0
    paused_until: float = 0.0
    asked_until: float = 0.0  # the part of the pause the server asked for (Retry-After): kept even after an image
    deliveries: int = 0  # images this run (less those taken back as placeholders)
    # The current run of failures, since the last image delivered:
    streak: int = 0  # failed attempts
    strain: int = 0  # of those, answers that cost the server work; each halves the host's slots
    failing: set = field(default_factory=set)  # distinct images (429/503 aside: they have `overloads`)
    failing_pages: set = field(default_factory=set)  # their IIIF images (pages): the next probe avoids them
    errors: Counter = field(default_factory=Counter)  # what the failures said
    troubles: set = field(default_factory=set)
    # Could not even connect, since the last answer of any kind: a dead host even after a good start.
    refused: set = field(default_factory=set)
    overloads: int = 0  # 429/503 answers in the run
    last_error: str = ""
    dead: str = ""  # why it was given up, or ""

    @property
    def delivered(self) -> bool:
        return self.deliveries > 0

    def backlog_per_slot(self) -> float:
        return (len(self.pending) + len(self.delayed)) / (self.in_flight + 1)

    def remaining(self) -> int:
        return len(self.pending) + len(self.delayed) + self.in_flight


def _page(task: Task) -> str:
    """The IIIF image (a page of a scroll or book) a face is cut from."""
    return page_key(task.item.url)


def _probe(host: _Host) -> Task:
    """The next fresh image of a failing host, from a page that has not failed: the faces of one
    broken page follow each other in urls.txt, and probing them would blame the host for the page."""
    for i, task in enumerate(host.pending):
        if _page(task) not in host.failing_pages:
            del host.pending[i]
            return task
    return host.pending.popleft()


class HostScheduler:
    """Hands tasks to workers: never more than `per_host` at once to a host (fewer while it
    fails), the host with the most work left first, retries only once their time has come."""

    def __init__(self, tasks: Iterable[Task], per_host: int, policy: RetryPolicy, sink: Sink, *,
                 clock: Callable[[], float] = time.monotonic, kept: Iterable = ()):
        """`kept`: the manifest rows (image, url, sha256, path) of the images already in DIR that
        this run keeps: a fetched image with the bytes of one of them (for another request) is a
        placeholder, and so is that one."""
        self._per_host = per_host
        self._policy = policy
        self._sink = sink
        self._clock = clock
        self._cond = threading.Condition()
        self._seq = itertools.count()
        self._stopped = False
        self.hosts: dict[str, _Host] = {}
        for task in tasks:
            host = self.hosts.get(task.host)
            if host is None:
                host = self.hosts[task.host] = _Host()
            host.pending.append(task)
        fetched = {task.item.name for host in self.hosts.values() for task in host.pending}
        # An image fetched anew (--force) is judged by its new bytes, not its old ones.
        self._ledger = Ledger(row for row in kept if row.image not in fetched)

    # -- for workers --------------------------------------------------------

    def acquire(self) -> Task | None:
        """The next task to fetch, waiting as long as needed; None when there is nothing left or on stop()."""
        with self._cond:
            while not self._stopped:
                now = self._clock()
                turn = self._turn(now)
                if turn.task is not None:
                    return turn.task
                if turn.finished:
                    self._cond.notify_all()
                    return None
                self._cond.wait(timeout=None if turn.wake_at is None else max(turn.wake_at - now, 0.001))
            return None

    def stop(self) -> None:
        """No new requests from now on; wakes every waiting worker."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()

    def next_turn(self) -> Turn:
        """One look, without waiting: a task is marked in flight when handed out."""
        with self._cond:
            return Turn(finished=True) if self._stopped else self._turn(self._clock())

    def claim(self, task: Task, digest: str) -> str:
        """Before `task`'s image is written with bytes of SHA-256 `digest`: "" when it may be,
        else why not (another request got the same bytes: a placeholder). Images already
        stored with those bytes are taken back now; those being written, when they land."""
        with self._cond:
            faces, others = self._ledger.claim(digest, Holder(task.item.name, task.item.url, task.rel_path, task,
                                                              stored=False))
            if not faces:
                return ""
            now = self._clock()
            for other in others:
                if other.stored:
                    self._take_back(other, faces, now)
            return placeholder_reason(task.host, faces)

    def finish(self, task: Task, attempt: Attempt) -> None:
        """Record what `task`'s attempt came to; the verdict goes to the sink."""
        with self._cond:
            now = self._clock()
            host = self.hosts[task.host]
            host.in_flight -= 1
            written = None
            if attempt.row is None:
                self._ledger.release(task.item.name)
            elif attempt.digest and (faces := self._ledger.landed(task.item.name, attempt.digest)):
                # Its bytes became a placeholder's while it was being written: it goes back out.
                written = task.rel_path
                attempt = Attempt(error=placeholder_reason(task.host, faces), trouble=Trouble.PLACEHOLDER,
                                  conclusive=True)
            self._learn(host, task, attempt, now)
            self._route(host, task, attempt, now, written)
            self._cond.notify_all()

    def slots(self, name: str) -> int:
        """How many requests host `name` may have in flight now."""
        with self._cond:
            return self._slots(self.hosts[name])

    # -- the rules ----------------------------------------------------------

    def _slots(self, host: _Host) -> int:
        return max(1, self._per_host >> min(host.strain, 16))

    def _turn(self, now: float) -> Turn:
        best = None
        wake = None
        for host in self.hosts.values():
            if host.in_flight >= self._slots(host) or (not host.pending and not host.delayed):
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
            return Turn(wake_at=wake, finished=all(h.remaining() == 0 for h in self.hosts.values()))
        # A failing host is probed with fresh images, not the same ones again: that tells
        # a failing host from a few bad images fastest, and bounds what a failing host costs.
        suspect = bool(best.failing or best.refused) and bool(best.pending)
        if best.delayed and best.delayed[0][0] <= now and not suspect:
            task = heapq.heappop(best.delayed)[2]
        elif suspect:
            task = _probe(best)
        else:
            task = best.pending.popleft()
        best.in_flight += 1
        return Turn(task=task)

    def _learn(self, host: _Host, task: Task, attempt: Attempt, now: float) -> None:
        """Update the host's failure model with one attempt's outcome."""
        trouble = attempt.trouble
        if attempt.row is not None:
            host.deliveries += 1
            host.paused_until = host.asked_until  # our own caution ends with an image; the server's request stands
            host.streak = host.strain = host.overloads = 0
            host.failing.clear()
            host.failing_pages.clear()
            host.refused.clear()
            host.errors.clear()
            host.troubles.clear()
            return
        if trouble is None:
            if attempt.error and not attempt.fatal_host_error:
                host.refused.clear()  # an answer (a 404, say): the host is reachable
            return
        host.streak += 1
        host.troubles.add(trouble)
        host.last_error = attempt.error
        if trouble is Trouble.REFUSED:
            host.refused.add(task.item.name)
        elif trouble is not Trouble.NO_ANSWER:
            host.refused.clear()
        if trouble in _STRAINING:
            host.strain += 1
        pause = attempt.host_pause
        host.asked_until = max(host.asked_until, now + pause)
        if trouble is Trouble.OVERLOADED:
            host.overloads += 1
        else:
            host.failing.add(task.item.name)
            host.failing_pages.add(_page(task))
            host.errors[PLACEHOLDER_RUN if trouble is Trouble.PLACEHOLDER else attempt.error] += 1
        # Without this, fresh images would keep refilling the slots of a host whose images all back off.
        if trouble not in _UNPAUSED and host.streak >= PAUSE_AFTER:
            pause = max(pause, self._policy.host_pause(host.streak - PAUSE_AFTER))
        if pause:
            host.paused_until = max(host.paused_until, now + pause)

    def _another_round(self, host: _Host, task: Task, attempt: Attempt) -> bool:
        """An image whose retries ran out on a host that delivers images gets one more round,
        behind every other image of the host: on a flaky server (one attempt in five fails) an
        image fails all of its 6 tries once in 15,000, which a whole dataset would hit; twice,
        once in 2 x 10^8. A failing host is bounded by its breaker, not by this; --retries 0 means none."""
        if (attempt.trouble is None or attempt.conclusive or not host.delivered or task.last_round
                or self._policy.retries == 0):
            return False
        task.last_round = True
        task.state = self._policy.new_state()
        task.bad_bodies = 0
        host.pending.append(task)
        return True

    def _route(self, host: _Host, task: Task, attempt: Attempt, now: float, written: str | None = None) -> None:
        """Where the task goes next: stored, failed, retried later, or its whole host given up.
        `written`: the path of a placeholder's file that landed on disk, to be taken back."""
        def fail(error: str) -> None:
            failure = Failure(task.item.name, task.item.url, error, task.attempts)
            if attempt.trouble is Trouble.PLACEHOLDER:
                self._sink.placeholder(failure, written)
            else:
                self._sink.failed(failure)

        if attempt.row is not None:
            self._sink.stored(attempt.row)
        elif host.dead:
            fail(host.dead)
        elif attempt.fatal_host_error:
            fail(attempt.fatal_host_error)
            self._kill(task.host, host, attempt.fatal_host_error)
        elif attempt.trouble is not None and (reason := self._verdict(host)):
            # Checked before "final": with --retries 0 every failure is final, and a
            # failing host would then cost one request (or one timeout) per image.
            fail(reason)
            self._kill(task.host, host, reason)
        elif attempt.retry_in is None:
            if not self._another_round(host, task, attempt):
                fail(attempt.error)
        else:
            heapq.heappush(host.delayed, (now + attempt.retry_in, next(self._seq), task))

    def _take_back(self, holder: Holder, faces: int, now: float) -> None:
        """An image on disk whose bytes turned out to be a placeholder: it fails, its file and row
        go, and if this run stored it, its delivery is undone and it counts against its host."""
        task = holder.task
        failure = Failure(holder.image, holder.url, placeholder_reason(host_key(holder.url), faces),
                          task.attempts if task is not None else 0)
        self._sink.placeholder(failure, holder.path)
        if task is not None:
            host = self.hosts[task.host]
            host.deliveries -= 1
            self._learn(host, task, Attempt(error=failure.error, trouble=Trouble.PLACEHOLDER, conclusive=True), now)

    def _verdict(self, host: _Host) -> str:
        """Why the host is to be given up, or "" while it is not."""
        threshold = self._policy.breaker_threshold
        if len(host.refused) >= threshold:
            return _unreachable(len(host.refused), host.last_error)
        # A host that has delivered this run is live: one slow page must not take it down.
        if len(host.failing) >= (2 * threshold if host.delivered else threshold):
            tried = len(host.failing)
            if host.troubles <= {Trouble.REFUSED, Trouble.NO_ANSWER}:
                return _unreachable(tried, host.last_error)
            if host.troubles == {Trouble.DENIED}:
                return f"{HOST_REFUSING}: {_run_of(host.errors, tried)}"
            return f"{HOST_FAILING}: {_run_of(host.errors, tried)}"
        if host.overloads >= self._policy.overload_threshold:
            # A server in maintenance answers 503 for hours; the next run will ask again.
            return f"{HOST_OVERLOADED} ({host.overloads} answers 429/503 in a row; last: {host.last_error})"
        return ""

    def _kill(self, name: str, host: _Host, reason: str) -> None:
        host.dead = reason
        never_tried = sum(1 for t in host.pending if t.attempts == 0)  # not those queued for another round
        left = list(host.pending) + [entry[2] for entry in host.delayed]
        host.pending.clear()
        host.delayed.clear()
        self._sink.given_up(name, reason, never_tried)
        for task in left:
            self._sink.failed(Failure(task.item.name, task.item.url, reason, task.attempts))


def _unreachable(images: int, last_error: str) -> str:
    return f"{HOST_UNREACHABLE} ({images} images in a row could not reach it; last: {last_error})"


def _run_of(errors: Counter, images: int) -> str:
    """'HTTP 500 on 8 images in a row ...', or the commonest kinds of error when they differed."""
    kinds = Counter()
    for error, count in errors.items():
        kinds[_kind(error)] += count
    run = f"{images} images in a row, none delivered in between"
    if len(errors) == 1:
        return f"{next(iter(errors))} on {run}"
    if len(kinds) == 1:
        return f"{next(iter(kinds))} on {run} (e.g. {errors.most_common(1)[0][0]})"
    common = ", ".join(f"{kind} {count}x" for kind, count in kinds.most_common(3))
    return f"{images} images in a row failed, none delivered in between ({common})"


def _kind(error: str) -> str:
    """'HTTP 500', 'incomplete response', 'connection error': an error text without its details."""
    return error.split(":", 1)[0].split(" (", 1)[0].strip() or error
