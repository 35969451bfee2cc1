"""What a failed request means: one classifier for every transport error and every status, for
images and metadata files alike.

requests and urllib3 say the same thing many ways (a proxy's refusal is a ProxyError whose text
hides the status, a refused connection is wrapped three deep); `diagnose` turns each into a
`Kind`, the words a user reads, and what it says about the host (`Trouble`).
"""
from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import requests
from urllib3.exceptions import InvalidHeader, NewConnectionError
from urllib3.util import Retry

from .records import OVERLOAD_STATUSES, RETRY_STATUSES, Kind, Trouble
from .session import Response, ResponseTooLarge, describe

# What `get_body` raises for a request that failed: everything `diagnose` knows.
TRANSPORT_ERRORS = (requests.exceptions.RequestException, ResponseTooLarge, OSError)
# urllib3 words a proxy's refusal of a tunnel as "Tunnel connection failed: 502 Bad Gateway".
_TUNNEL_REFUSED = re.compile(r"Tunnel connection failed: (\d{3}[^'\")]*)")
# What a final status usually means, where the number alone leaves a user guessing.
STATUS_HINTS = {
    401: "the server asks for a login",
    403: "forbidden: usually a proxy or firewall in between, or a server blocking this User-Agent or address",
    407: "the proxy asks for credentials (put them in HTTPS_PROXY)",
    451: "unavailable for legal reasons",
}


@dataclass(frozen=True)
class Diagnosis:
    """One failed request, classified."""

    kind: Kind
    detail: str  # the error in its own words (what a metadata fetch reports)
    message: str  # the same, named by its kind (what failures.csv says of an image)
    trouble: Trouble | None = None  # what it says about the host
    conclusive: bool = False  # asking again would get the same answer
    status: int = 0  # with Kind.STATUS


def diagnose(exc: Exception, host: str) -> Diagnosis:
    """A transport error of a request to `host` (one of `TRANSPORT_ERRORS`), classified."""
    detail = describe(exc)
    if isinstance(exc, requests.exceptions.SSLError):
        if "CERTIFICATE_VERIFY_FAILED" in str(exc) or "certificate verify failed" in str(exc):
            return Diagnosis(Kind.UNTRUSTED, detail, f"TLS error: {detail}")
        return Diagnosis(Kind.TLS, detail, f"TLS error: {detail}", Trouble.REFUSED)
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return Diagnosis(Kind.TIMEOUT, detail, f"timeout: {detail}", Trouble.REFUSED)
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return Diagnosis(Kind.TIMEOUT, detail, f"timeout: {detail}", Trouble.NO_ANSWER)
    if isinstance(exc, (requests.exceptions.TooManyRedirects, requests.exceptions.InvalidSchema,
                        requests.exceptions.InvalidURL, requests.exceptions.MissingSchema)):
        return Diagnosis(Kind.BAD_REDIRECT, detail, f"bad redirect: {detail}", Trouble.BAD_ANSWER, conclusive=True)
    if isinstance(exc, ResponseTooLarge):
        return Diagnosis(Kind.TOO_LARGE, str(exc), str(exc), Trouble.BAD_ANSWER, conclusive=True)
    if isinstance(exc, requests.exceptions.ContentDecodingError):
        return Diagnosis(Kind.UNDECODABLE, detail, f"body does not decompress: {detail}", Trouble.BAD_ANSWER,
                         conclusive=True)
    if isinstance(exc, requests.exceptions.ProxyError):
        # The proxy answered; what failed is the host behind it (or the proxy itself).
        match = _TUNNEL_REFUSED.search(" | ".join(str(e) for e in _chain(exc)))
        if match:
            refused = f"{Kind.PROXY_REFUSED.value} {host}: {match.group(1).strip()}"
            return Diagnosis(Kind.PROXY_REFUSED, refused, refused, Trouble.REFUSED)
        return Diagnosis(Kind.PROXY, f"cannot use the proxy: {detail}", f"cannot use the proxy: {detail}",
                         Trouble.REFUSED)
    if isinstance(exc, requests.exceptions.ConnectionError):
        trouble = Trouble.REFUSED if _could_not_connect(exc) else Trouble.BAD_ANSWER
        return Diagnosis(Kind.CONNECTION, detail, f"connection error: {detail}", trouble)
    # Truncated bodies, decoding errors, slow trickles: the host is up, the answer was bad.
    return Diagnosis(Kind.INCOMPLETE, detail, f"incomplete response: {detail}", Trouble.BAD_ANSWER)


def diagnose_status(status: int) -> Diagnosis:
    """An answer other than 200. One asking again may change is retried, and a 429 or 503 is the
    host asking to be left alone; any other is final for the image, and counts against the host
    (one 404 among good images is the image's; a run of them, with nothing delivered, is the host's)."""
    if status in RETRY_STATUSES:
        trouble = Trouble.OVERLOADED if status in OVERLOAD_STATUSES else Trouble.BAD_ANSWER
        return Diagnosis(Kind.STATUS, f"HTTP {status}", f"HTTP {status}", trouble, status=status)
    hint = STATUS_HINTS.get(status)
    message = f"HTTP {status}" + (f" ({hint})" if hint else "")
    trouble = Trouble.DENIED if 400 <= status < 500 else Trouble.BAD_ANSWER
    return Diagnosis(Kind.STATUS, f"HTTP {status}", message, trouble, conclusive=True, status=status)


def retry_after(state: Retry, response: Response) -> float | None:
    """The seconds an answer's ``Retry-After`` asks for; None when it has none (or a malformed one:
    our own backoff then)."""
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return state.parse_retry_after(value)
    except InvalidHeader:
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
