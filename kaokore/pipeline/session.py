"""The HTTP session: one pool of kept-alive connections, bounded responses, TLS options.

Everything that talks to a server goes through `HttpOptions` and `get_body`, so
size caps, redirects, timeouts and certificate handling are decided in one place.
"""
from __future__ import annotations

import os
import re
import ssl
import threading
import time
import warnings
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter
from requests.utils import requote_uri
from urllib3.exceptions import InsecureRequestWarning

from .. import defaults
from .._version import __version__
from ..errors import UsageError

USER_AGENT = f"kaokore/{__version__} (KaoKore dataset downloader; python-requests/{requests.__version__})"
DEFAULT_MAX_BYTES = 20 * 1024 * 1024  # a 256x256 face crop is ~20 KiB; anything near this is not one
DEFAULT_MAX_REDIRECTS = 5
CHUNK = 64 * 1024  # also the largest redirect body read to keep its connection
TLS_HINT = "pass --ca-bundle PEM if you use a private CA, or --ssl_unverified_context to skip the check"
CA_BUNDLE_ENV = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")  # what requests reads, in its order
GLANCE_BYTES = 16 * 1024 * 1024  # a system CA bundle is ~0.2 MB


@dataclass(frozen=True)
class HttpOptions:
    timeout: float = defaults.TIMEOUT
    ssl_unverified: bool = False
    ca_bundle: str | None = None
    max_bytes: int = DEFAULT_MAX_BYTES
    max_redirects: int = DEFAULT_MAX_REDIRECTS

    def __post_init__(self) -> None:
        # A CA file that cannot be loaded fails every https request alike, and
        # requests reports it as an OSError or a bare SSLError that looks like a
        # flaky or dead server: refuse it before anything is fetched. Here, what
        # a glance tells (missing, unreadable, no PEM block); loading it in full
        # is `CaCheck`'s, on a thread.
        named = self.ca_file()
        if named is not None:
            _glance_at_ca_file(*named)

    def ca_file(self) -> tuple[str, str] | None:
        """The CA file (or c_rehash folder) https requests will trust and who named it, as
        (path, "--ca-bundle" or the variable's name); None for the system's CAs or no check."""
        if self.ssl_unverified:
            return None
        if self.ca_bundle is not None:
            return self.ca_bundle, "--ca-bundle"
        for name in CA_BUNDLE_ENV:
            value = os.environ.get(name)
            if value:  # requests skips an empty variable too
                return value, name
        return None

    @property
    def verify(self) -> bool | str:
        # Passed on every request, not set on the session: requests lets
        # REQUESTS_CA_BUNDLE override a session-level `verify`, which would
        # silently undo --ssl_unverified_context and --ca-bundle.
        if self.ssl_unverified:
            return False
        return self.ca_bundle or True


class CaCheck:
    """`options`' CA file loaded the way urllib3 will load it, on a thread from now on.

    OpenSSL takes ~25 ms over a system bundle and releases the GIL meanwhile, so the
    load runs beside DIR's inspection and the metadata's parsing instead of in front of
    them. `wait()` raises its `UsageError`; call it before the first request.
    """

    def __init__(self, options: HttpOptions):
        self._error: str | None = None
        named = options.ca_file()
        self._thread = None
        if named is not None:
            # Not a daemon: the interpreter waits for it at exit. A run refused early (DIR locked)
            # would otherwise exit while OpenSSL still loads the file, and its exit handlers
            # free what the load is using (a segfault, seen in tests/test_dir_safety.py).
            self._thread = threading.Thread(target=self._load, args=named, name="kaokore-ca-check")
            self._thread.start()

    def _load(self, path: str, source: str) -> None:
        try:
            _load_ca_file(path, source)
        except UsageError as exc:
            self._error = str(exc)

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()
        if self._error is not None:
            raise UsageError(self._error)


def check_ca(options: HttpOptions) -> None:
    """`CaCheck`, waited for at once: for a caller with nothing to do meanwhile."""
    CaCheck(options).wait()


def _glance_at_ca_file(path: str, source: str) -> None:
    """The CA file's faults that need no parsing, found in a fraction of a millisecond."""
    if os.path.isdir(path):  # requests accepts an OpenSSL c_rehash directory: loading it is the check
        return
    try:
        with open(path, "rb") as f:
            data = f.read(GLANCE_BYTES)
    except OSError as exc:
        raise _refused(path, source, exc) from None
    if b"-----BEGIN " not in data and len(data) < GLANCE_BYTES:  # longer (/dev/zero...): the full load decides
        raise UsageError(f"{source} {path!r} holds no usable PEM CA certificate (no PEM block in it)")


def _load_ca_file(path: str, source: str) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        if os.path.isdir(path):
            context.load_verify_locations(capath=path)
        else:
            context.load_verify_locations(cafile=path)
    except OSError as exc:  # ssl.SSLError included
        raise _refused(path, source, exc) from None


def _refused(path: str, source: str, exc: OSError) -> UsageError:
    """The one line that refuses the CA file `source` named, for the error met reading or loading it."""
    if isinstance(exc, FileNotFoundError):
        why = "does not exist"
    elif isinstance(exc, ssl.SSLError):
        why = f"holds no usable PEM CA certificate ({exc.reason or exc})"
    else:
        why = f"cannot be read: {exc.strerror or exc}"
    return UsageError(f"{source} {path!r} {why}")


class ResponseTooLarge(Exception):
    """The server sent (or announced) more than `max_bytes`."""


class SlowResponse(requests.exceptions.Timeout):
    """The body trickled in for longer than a whole read timeout allows."""


@dataclass(frozen=True)
class Response:
    status: int
    headers: requests.structures.CaseInsensitiveDict
    body: bytes
    url: str


def make_session(options: HttpOptions, per_host: int) -> requests.Session:
    if options.ssl_unverified:
        # The user asked for this once; they are told once (by the caller), not per connection.
        warnings.filterwarnings("ignore", category=InsecureRequestWarning)
    session = requests.Session()
    session.headers["User-Agent"] = USER_AGENT
    session.max_redirects = options.max_redirects
    # One pool per (scheme, host, port), each as large as the per-host limit,
    # so every request finds a kept-alive connection and none is thrown away.
    adapter = HTTPAdapter(pool_connections=16, pool_maxsize=max(1, per_host))
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def get_body(session: requests.Session, url: str, options: HttpOptions) -> Response:
    """GET `url` and read the whole body, refusing more than `options.max_bytes` (decompressed).

    Redirects are followed here, at most `options.max_redirects`. One back to a URL this
    request already asked stops at once (a loop would only repeat), unless it set a cookie:
    a cookie check sends a client back where it came from, once, with the cookie.

    Raises
    ------
    requests.exceptions.TooManyRedirects
        A redirect loop, or more than `options.max_redirects` redirects.
    ResponseTooLarge
        A Content-Length over the cap (nothing of the body is read), or a body that grew past it.
    requests.exceptions.ContentDecodingError
        A body its Content-Encoding (gzip, deflate...) does not decode.
    """
    deadline = time.monotonic() + 4 * options.timeout
    asked = {requote_uri(url)}
    for _ in range(options.max_redirects + 1):
        with session.get(url, timeout=options.timeout, verify=options.verify, stream=True,
                         allow_redirects=False) as r:
            target = session.get_redirect_target(r)
            if target is None:
                return _read(r, options, deadline)
            _keep_connection(r)
            cookie = "Set-Cookie" in r.headers
        location = _resolve(url, target)
        if location in asked and not cookie:
            raise requests.exceptions.TooManyRedirects(f"redirect loop: redirected back to {location}")
        asked.add(location)
        url = location
    raise requests.exceptions.TooManyRedirects(f"more than {options.max_redirects} redirects, the last to {url}")


def _read(r: requests.Response, options: HttpOptions, deadline: float) -> Response:
    announced = r.headers.get("Content-Length")
    if announced and announced.isascii() and announced.isdigit() and int(announced) > options.max_bytes:
        raise ResponseTooLarge(f"response of {int(announced)} bytes exceeds the {options.max_bytes}-byte cap")
    chunks = []
    size = 0
    for chunk in _arriving(r):
        size += len(chunk)
        if size > options.max_bytes:
            encoding = r.headers.get("Content-Encoding")
            inflated = f" once decoded (Content-Encoding: {encoding[:40]})" if encoding else ""
            raise ResponseTooLarge(f"response exceeds the {options.max_bytes}-byte cap{inflated}")
        if time.monotonic() > deadline:
            raise SlowResponse(f"body still arriving after {4 * options.timeout:g}s")
        chunks.append(chunk)
    return Response(r.status_code, r.headers, b"".join(chunks), r.url)


def _resolve(current: str, target: str) -> str:
    """The absolute URL a Location header names, as requests would follow it."""
    if target.startswith("//"):
        target = f"{urlsplit(current).scheme}:{target}"
    return requote_uri(urljoin(current, target))


def _keep_connection(r: requests.Response) -> None:
    """Read a redirect's small body so its kept-alive connection goes back to the pool; a large or
    unannounced one is not worth reading: leaving it unread drops the connection instead."""
    announced = r.headers.get("Content-Length")
    if announced and announced.isascii() and announced.isdigit() and int(announced) <= CHUNK:
        try:
            r.content  # noqa: B018 - reading it is the point
        except (requests.exceptions.RequestException, OSError):
            pass


def _arriving(r: requests.Response):
    """The body in pieces as they arrive, so the deadline is checked while a slow server trickles.

    requests' iter_content waits for a whole chunk (or the end), and a face crop is smaller than
    any useful chunk: a server sending a byte every few seconds would hold a host slot for days.
    """
    read1 = getattr(r.raw, "read1", None)  # urllib3 >= 2
    if read1 is None:
        yield from r.iter_content(CHUNK)
        return
    try:
        while chunk := read1(CHUNK, decode_content=True):
            yield chunk
    except urllib3.exceptions.ReadTimeoutError as exc:
        raise requests.exceptions.ReadTimeout(exc) from exc
    except urllib3.exceptions.ProtocolError as exc:
        raise requests.exceptions.ChunkedEncodingError(exc) from exc
    except urllib3.exceptions.DecodeError as exc:
        cause = exc.args[1] if len(exc.args) > 1 else exc  # urllib3 wraps zlib's own words
        encoding = r.headers.get("Content-Encoding", "")[:40]
        raise requests.exceptions.ContentDecodingError(f"Content-Encoding {encoding}: {cause}") from exc


def describe(exc: BaseException) -> str:
    """A transport error as a person reads it: requests wraps the useful part
    ("Connection refused") in pool and retry text that says nothing to a user."""
    inner = exc.args[0] if exc.args else None
    if isinstance(inner, urllib3.exceptions.MaxRetryError) and inner.reason is not None:
        exc = inner.reason
    elif isinstance(inner, urllib3.exceptions.ProtocolError):
        exc = inner
    if (isinstance(exc, urllib3.exceptions.ProtocolError) and len(exc.args) == 2
            and isinstance(exc.args[1], BaseException)):
        # ('Connection aborted.', RemoteDisconnected('Remote end closed ...')) as a sentence
        exc = Exception(f"{str(exc.args[0]).rstrip('.')}: {exc.args[1]}")
    text = str(exc).replace("\n", " ")
    text = re.sub(r"^\(?(HTTPS?Connection(Pool)?\([^)]*\)|<urllib3[^>]*>):? ", "", text)
    text = text.replace("Failed to establish a new connection: ", "cannot connect: ")
    return text if len(text) <= 200 else text[:197] + "..."


def host_key(url: str) -> str:
    """The politeness key: one server, whatever the scheme, but distinct ports stay distinct."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    default = {"http": 80, "https": 443}.get(parts.scheme)
    port = parts.port
    return host if port in (None, default) else f"{host}:{port}"
