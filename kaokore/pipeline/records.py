"""The records the pipeline's stages share: how patiently to ask again, one image's task, what one
attempt came to, and an image that failed (a row of failures.csv).

Below every stage (the scheduler, the fetch, the report, reuse and the run all read them), so
none of them imports another for its records.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from urllib3.util import Retry

from .. import defaults
from ..dataset.metadata import Item

# Statuses worth another try: the server is busy or briefly broken. Any other
# non-200 status (400, 403, 404, 410, ...) will not change by asking again.
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504, 507, 509, 520, 521, 522, 523, 524})
# "Too many requests" and "unavailable" are the host asking to be left alone for a while.
OVERLOAD_STATUSES = frozenset({429, 503})


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
    backoff_factor: float = 0.5
    backoff_max: float = 30.0
    retry_after_cap: float = 60.0
    bad_body_tries: int = 6
    # Distinct images in a row failing, with no image delivered in between, that give a host up:
    # this many on a host that has delivered nothing this run, twice as many on one that has
    # (a slow page of a scroll stalls several faces in a row on a live server).
    breaker_threshold: int = 8
    host_pause_max: float = 10.0
    overload_threshold: int = 32

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

    def next_try(self, state: Retry, url: str, error: Exception | None,
                 retry_after: float | None = None) -> tuple[Retry, float, float] | None:
        """After a failed request counted by `state`: the state that counts it, the seconds to wait
        before asking again, and the pause the server asked of every request (its ``Retry-After``,
        else 0); None once the retries are spent. Images and metadata files are asked again alike."""
        try:
            state = state.increment(method="GET", url=url, error=error)
        except Exception:  # noqa: BLE001 - urllib3 signals "exhausted" by raising
            return None
        delay = self.backoff(state)
        pause = 0.0
        if retry_after is not None:
            # A floor, not a replacement: "Retry-After: 0" from a failing server must
            # not turn the backoff into a tight loop.
            pause = min(max(retry_after, 0.0), self.retry_after_cap)
            delay = max(delay, pause)
        return state, delay, pause


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


class Kind(Enum):
    """What went wrong with one request for an image; the value names it in a host's run of failures."""

    UNTRUSTED = "TLS certificate not trusted"
    TLS = "TLS error"  # any other TLS failure: a handshake cut, say
    TIMEOUT = "timeout"
    BAD_REDIRECT = "bad redirect"  # a loop, too many, or to somewhere requests cannot go
    TOO_LARGE = "response over the size cap"
    UNDECODABLE = "body does not decompress"
    PROXY_REFUSED = "proxy could not reach"  # the proxy answered; the host behind it did not
    PROXY = "cannot use the proxy"
    CONNECTION = "connection error"
    INCOMPLETE = "incomplete response"  # a body cut short, decoding errors, a slow trickle
    STATUS = "HTTP"  # any answer but 200
    NOT_AN_IMAGE = "body is not an image"
    NOT_DECODABLE = "body is not a decodable image"
    IMAGE_TOO_LARGE = "image too large"
    PLACEHOLDER = "a placeholder"
    PATH = "path unusable"  # DIR cannot take this one image (a folder squats its path)
    DISK = "DIR cannot take images"  # a full or read-only disk: the run stops
    INTERNAL = "internal error"

    def label(self, status: int = 0, host: str = "") -> str:
        """How a host's run of failures counts this kind: 'HTTP 500' and 'HTTP 502' apart."""
        if self is Kind.STATUS:
            return f"HTTP {status}"
        if self is Kind.PROXY_REFUSED:
            return f"{self.value} {host}"
        return self.value


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
    root: Path  # DIR
    rel_path: str
    host: str
    state: Retry
    attempts: int = 0
    bad_bodies: int = 0
    last_round: bool = False  # its retries already ran out once, on a host that delivers

    @property
    def path(self) -> Path:
        # Made when the image is written, by its worker: a Path for each of 9,683 tasks made before
        # the first request cost a tenth of the time to it.
        return self.root / self.rel_path


@dataclass(frozen=True)
class Attempt:
    """What one HTTP attempt came to."""

    row: object | None = None  # the stored image's manifest row
    digest: str = ""  # with `row`: the SHA-256 the image claimed (`HostScheduler.claim`) before it was written
    error: str = ""
    kind: Kind | None = None  # with `error`: what went wrong (None: its error text is its kind)
    status: int = 0  # with Kind.STATUS: the answer's status
    retry_in: float | None = None  # None with an error: final for this image
    trouble: Trouble | None = None  # set when the failure counts against the host
    # The server's last word on this image (a refusal, a placeholder, a redirect loop...): asking
    # again would get the same, so no second round either.
    conclusive: bool = False
    host_pause: float = 0.0  # Retry-After: what the server asked of every request
    fatal_host_error: str = ""  # e.g. an untrusted certificate: every image of the host will fail alike
