"""One failure model per host: how a failing host is slowed, paused and given up.

Every failed attempt with no image delivered by that host since counts against the
host as a whole, whatever the failure was (refused, cut, timed out, 5xx, not an image,
a refusal such as 403 or 404, a redirect loop, an oversize body, a placeholder): its pace
slows (fewer slots, then a growing pause between requests) and, after a bounded run of
distinct images, it is given up for this run. An image delivered resets all of it, so a
flaky but working host is slowed a little and never given up, and a 404 among good
images fails that image alone.
"""
from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field

from ..dataset.iiif import page_key
from .records import Attempt, Kind, RetryPolicy, Task, Trouble

HOST_UNREACHABLE = "host unreachable"
HOST_FAILING = "host failing"
HOST_REFUSING = "host refusing"
HOST_OVERLOADED = "host overloaded"
# How placeholders count in a host's run: their texts name how many faces, which varies.
PLACEHOLDER_RUN = "a placeholder (one image sent for different faces)"
# Failures in a row before a host's requests are spaced out by a pause; before that, its
# slots shrink. A 20%-flaky host reaches this on under 1% of its attempts.
PAUSE_AFTER = 3
# The host's server did work for these, so its pace slows by slots, not only by pauses.
_STRAINING = frozenset({Trouble.BAD_ANSWER, Trouble.OVERLOADED, Trouble.PLACEHOLDER})
# A refusal costs the server nothing, and pausing would only slow telling a dead or refusing host.
_UNPAUSED = frozenset({Trouble.REFUSED, Trouble.DENIED})


@dataclass
class Host:
    """One host's queues and its failure model (the scheduler holds its lock around every call)."""

    name: str
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
    errors: Counter = field(default_factory=Counter)  # what the failures said: (kind's label, error)
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

    def probe(self) -> Task:
        """The next fresh image of a failing host, from a page that has not failed: the faces of one
        broken page follow each other in urls.txt, and probing them would blame the host for the page."""
        for i, task in enumerate(self.pending):
            if _page(task) not in self.failing_pages:
                del self.pending[i]
                return task
        return self.pending.popleft()

    def learn(self, task: Task, attempt: Attempt, now: float, policy: RetryPolicy) -> None:
        """Update the failure model with one attempt's outcome."""
        trouble = attempt.trouble
        if attempt.row is not None:
            self._delivered()
            return
        if trouble is None:
            if attempt.error and not attempt.fatal_host_error:
                self.refused.clear()  # an answer (a 404, say): the host is reachable
            return
        self.streak += 1
        self.troubles.add(trouble)
        self.last_error = attempt.error
        if trouble is Trouble.REFUSED:
            self.refused.add(task.item.name)
        elif trouble is not Trouble.NO_ANSWER:
            self.refused.clear()
        if trouble in _STRAINING:
            self.strain += 1
        pause = attempt.host_pause
        self.asked_until = max(self.asked_until, now + pause)
        if trouble is Trouble.OVERLOADED:
            self.overloads += 1
        else:
            self.failing.add(task.item.name)
            self.failing_pages.add(_page(task))
            self.errors[self._what(attempt)] += 1
        # Without this, fresh images would keep refilling the slots of a host whose images all back off.
        if trouble not in _UNPAUSED and self.streak >= PAUSE_AFTER:
            pause = max(pause, policy.host_pause(self.streak - PAUSE_AFTER))
        if pause:
            self.paused_until = max(self.paused_until, now + pause)

    def _delivered(self) -> None:
        self.deliveries += 1
        self.paused_until = self.asked_until  # our own caution ends with an image; the server's request stands
        self.streak = self.strain = self.overloads = 0
        self.failing.clear()
        self.failing_pages.clear()
        self.refused.clear()
        self.errors.clear()
        self.troubles.clear()

    def _what(self, attempt: Attempt) -> tuple[str, str]:
        """The failure as the host's run counts it: its kind's label, and its error."""
        if attempt.trouble is Trouble.PLACEHOLDER:
            return Kind.PLACEHOLDER.label(), PLACEHOLDER_RUN
        if attempt.kind is None:
            return attempt.error, attempt.error
        return attempt.kind.label(attempt.status, self.name), attempt.error

    def verdict(self, policy: RetryPolicy) -> str:
        """Why the host is to be given up, or "" while it is not."""
        threshold = policy.breaker_threshold
        if len(self.refused) >= threshold:
            return _unreachable(len(self.refused), self.last_error)
        # A host that has delivered this run is live: one slow page must not take it down.
        if len(self.failing) >= (2 * threshold if self.delivered else threshold):
            tried = len(self.failing)
            if self.troubles <= {Trouble.REFUSED, Trouble.NO_ANSWER}:
                return _unreachable(tried, self.last_error)
            if self.troubles == {Trouble.DENIED}:
                return f"{HOST_REFUSING}: {_run_of(self.errors, tried)}"
            return f"{HOST_FAILING}: {_run_of(self.errors, tried)}"
        if self.overloads >= policy.overload_threshold:
            # A server in maintenance answers 503 for hours; the next run will ask again.
            return f"{HOST_OVERLOADED} ({self.overloads} answers 429/503 in a row; last: {self.last_error})"
        return ""


def _page(task: Task) -> str:
    """The IIIF image (a page of a scroll or book) a face is cut from."""
    return page_key(task.item.url)


def _unreachable(images: int, last_error: str) -> str:
    return f"{HOST_UNREACHABLE} ({images} images in a row could not reach it; last: {last_error})"


def _run_of(errors: Counter, images: int) -> str:
    """'HTTP 500 on 8 images in a row ...', or the commonest kinds of error when they differed."""
    kinds = Counter()
    for (kind, _), count in errors.items():
        kinds[kind] += count
    run = f"{images} images in a row, none delivered in between"
    if len(errors) == 1:
        return f"{next(iter(errors))[1]} on {run}"
    if len(kinds) == 1:
        return f"{next(iter(kinds))} on {run} (e.g. {errors.most_common(1)[0][0][1]})"
    common = ", ".join(f"{kind} {count}x" for kind, count in kinds.most_common(3))
    return f"{images} images in a row failed, none delivered in between ({common})"
