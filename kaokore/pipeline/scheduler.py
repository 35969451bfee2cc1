"""Which request goes next: per-host slots, retries, and one failure model per host.

Workers never sleep on a retry: a failed image goes back to its host's queue
with a not-before time, so the worker moves on to another image (often on
another host) and one image's backoff never stalls anything else. The
per-host limit is enforced here, at the only place requests are started.

How a failing host is slowed, paused and given up is its own model (`hosts`).

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
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from .hosts import Host
from .placeholders import Holder, Ledger
from .placeholders import reason as placeholder_reason
from .records import Attempt, Failure, Kind, RetryPolicy, Task, Trouble
from .session import host_key


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
        self.hosts: dict[str, Host] = {}
        for task in tasks:
            host = self.hosts.get(task.host)
            if host is None:
                host = self.hosts[task.host] = Host(task.host)
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
                attempt = Attempt(error=placeholder_reason(task.host, faces), kind=Kind.PLACEHOLDER,
                                  trouble=Trouble.PLACEHOLDER, conclusive=True)
            host.learn(task, attempt, now, self._policy)
            self._route(host, task, attempt, now, written)
            self._cond.notify_all()

    def slots(self, name: str) -> int:
        """How many requests host `name` may have in flight now."""
        with self._cond:
            return self._slots(self.hosts[name])

    # -- the rules ----------------------------------------------------------

    def _slots(self, host: Host) -> int:
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
            task = best.probe()
        else:
            task = best.pending.popleft()
        best.in_flight += 1
        return Turn(task=task)

    def _another_round(self, host: Host, task: Task, attempt: Attempt) -> bool:
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

    def _route(self, host: Host, task: Task, attempt: Attempt, now: float, written: str | None = None) -> None:
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
        elif attempt.trouble is not None and (reason := host.verdict(self._policy)):
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
            host.learn(task, Attempt(error=failure.error, kind=Kind.PLACEHOLDER, trouble=Trouble.PLACEHOLDER,
                                     conclusive=True), now, self._policy)

    def _kill(self, name: str, host: Host, reason: str) -> None:
        host.dead = reason
        never_tried = sum(1 for t in host.pending if t.attempts == 0)  # not those queued for another round
        left = list(host.pending) + [entry[2] for entry in host.delayed]
        host.pending.clear()
        host.delayed.clear()
        self._sink.given_up(name, reason, never_tried)
        for task in left:
            self._sink.failed(Failure(task.item.name, task.item.url, reason, task.attempts))

