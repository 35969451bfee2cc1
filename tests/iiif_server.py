"""A real loopback HTTP server standing in for the KaoKore IIIF image servers.

Used by the downloader's test-suite and by ``benchmarks/throughput.py``, so it
must stay importable as a plain module: standard library + Pillow only, and no
mutable module-level state (every cache and counter lives on the instance).

    with FakeIIIF(hosts=3) as srv:
        url = srv.url(0, "NRE/110X-445-3-2/tif/2_004.tif")
        srv.inject(url, Fault.S503, times=2)   # two 503s, then the image
        ...
        assert srv.requests(url) == 3

Whole hosts can misbehave too: ``fail_host(i, Fault.S500)`` (every image request),
``flaky_host(i, Fault.RESET, every=5)`` (a fixed share of first requests),
``blackhole_host(i)`` (connections accepted, never answered), ``kill_host(i)``
(connections refused), and ``proxy_url`` is a forward proxy in front of all of
them whose tunnels to a host can be refused (``refuse_tunnels(i)``).

Some faults answer wrongly rather than fail: ``Fault.PLACEHOLDER`` sends one and the
same valid 256x256 JPEG for every image (``srv.placeholder_bytes``), as servers and CDNs
do for a missing image; ``HUGE_BODY`` and ``HUGE_BODY_NO_LENGTH`` send
``srv.huge_body_size`` bytes with and without a Content-Length; ``GZIP_BOMB`` sends a
gzip body inflating to ``srv.gzip_bomb_size`` bytes; ``BAD_GZIP`` says gzip and is not.
``redirect(url, location)`` moves an image for good (a 301 every time), and
``COOKIE_CHECK`` sends a client without its cookie back to the same URL with the cookie.

With ``ssl_context`` and ``plain_too=True`` every host answers https and http on its one port
(the first byte of a connection tells which), so two URLs that differ only in their scheme
reach the same host, and count as one URL.

URLs given to ``inject``/``requests``/``expected_bytes`` may be full URLs (they
then apply to that host only) or bare paths (they apply to every host).  Paths
are compared percent-decoded and without the query string, so a client that
quotes ``/`` as ``%2F`` inside identifiers is still counted against the same URL.
"""

from __future__ import annotations

import collections
import gzip
import hashlib
import http.client
import io
import mimetypes
import re
import select
import socket
import socketserver
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import Enum
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

from PIL import Image, ImageDraw

__all__ = ["FakeIIIF", "Fault", "PAGE_SIZE", "HUGE_BODY_SIZE", "GZIP_BOMB_SIZE"]

PAGE_SIZE = (2000, 3000)  # every synthetic source page is this big (w, h)
HUGE_BODY_SIZE = 25 * 2**20
GZIP_BOMB_SIZE = 2 * 2**30  # what the gzip bomb inflates to
GZIP_MEMBER = 16 * 2**20  # the bomb is a series of gzip members of this many zeros each
BOMB_SIDE = 20_000
COOKIE = "fakeiiif-check=passed"  # what Fault.COOKIE_CHECK sets and then asks for
TRICKLE_LENGTH = 100  # bytes announced by a TRICKLE answer, sent one at a time
JPEG_QUALITY = 90
# Refuse absurd output sizes so a buggy client cannot make the test box swap.
MAX_OUTPUT_PIXELS = 25_000_000
OUTSIDE_BODY = b"Error: region outside image"
GARBAGE_BODY = b"\x00GARBAGE-NOT-AN-IMAGE\xff" * 256
HTML_BODY = (
    b"<!DOCTYPE html><html><head><title>503 Service Unavailable</title></head>"
    b"<body><h1>Service temporarily unavailable</h1>"
    b"<p>The image server is under maintenance.</p></body></html>"
)
_POLL = 0.02  # how often blocked loops re-check for shutdown
_STREAM_CHUNK = bytes(256 * 1024)
_REGION_RE = re.compile(r"(-?\d+),(-?\d+),(-?\d+),(-?\d+)")
_SIZE_RE = re.compile(r"(!)?(-?\d*),(-?\d*)")


class Fault(str, Enum):  # not StrEnum: the package supports Python 3.10
    S503 = "s503"
    S503_RETRY_AFTER = "s503_retry_after"  # Retry-After: 5 (or FakeIIIF(retry_after=)), as in maintenance
    S429 = "s429"
    S500 = "s500"
    S502 = "s502"
    S504 = "s504"
    S400 = "s400"
    S403 = "s403"  # refused: a firewall, a proxy or a blocked user agent
    S404 = "s404"
    S410 = "s410"  # gone: the URL moved for good
    RESET = "reset"  # the connection is dropped with a TCP RST instead of an answer
    CUT = "cut"  # the request is read, then the connection closed without an answer
    TRUNCATED = "truncated"
    HTML200 = "html200"
    GARBAGE200 = "garbage200"
    EMPTY200 = "empty200"
    STALL = "stall"
    TRICKLE = "trickle"  # a 200 whose body arrives a byte every `trickle_interval` seconds
    GRAY = "gray"
    CMYK = "cmyk"
    PNG = "png"
    BOMB = "bomb"
    HUGE_BODY = "huge_body"  # huge_body_size bytes, announced in Content-Length
    HUGE_BODY_NO_LENGTH = "huge_body_no_length"  # the same, unannounced: the body ends when the connection closes
    PLACEHOLDER = "placeholder"  # 200 with one and the same valid 256x256 JPEG for every image
    GZIP_BOMB = "gzip_bomb"  # Content-Encoding: gzip, inflating to gzip_bomb_size bytes
    BAD_GZIP = "bad_gzip"  # Content-Encoding: gzip on a body that is not gzip
    # A cookie check, as some firewalls do: a request without the cookie gets it with a 302 to the
    # same URL; one with it, the image.
    COOKIE_CHECK = "cookie_check"
    REDIRECT_FILE = "redirect_file"
    REDIRECT_LOOP = "redirect_loop"


# Faults that replace the normal content with another *valid* image.
IMAGE_VARIANTS = frozenset(
    {Fault.GRAY, Fault.CMYK, Fault.PNG, Fault.BOMB}
)


@dataclass(frozen=True)
class _Reply:
    status: int
    body: bytes = b""
    content_type: str | None = None
    headers: tuple[tuple[str, str], ...] = ()


class _BadRequest(Exception):
    status = 400


class _NotFound(_BadRequest):
    status = 404


@dataclass(frozen=True)
class _ImageRequest:
    identifier: str
    box: tuple[int, int, int, int] | None  # clipped to the page; None = fully outside
    size: tuple[int, int]


def _text(status: int, message: str, content_type: str | None = "text/plain") -> _Reply:
    return _Reply(status, message.encode() + b"\n", content_type)


# --------------------------------------------------------------------------
# IIIF URL parsing (pure functions)
# --------------------------------------------------------------------------


def _normalize_path(path: str) -> str:
    path = unquote(path.split("?", 1)[0].split("#", 1)[0])
    return path if path.startswith("/") else "/" + path


def _parse_region(text: str) -> tuple[int, int, int, int] | None:
    page_w, page_h = PAGE_SIZE
    if text == "full":
        return (0, 0, page_w, page_h)
    if text == "square":
        side = min(page_w, page_h)
        return ((page_w - side) // 2, (page_h - side) // 2, side, side)
    match = _REGION_RE.fullmatch(text)
    if not match:
        raise _BadRequest(f"bad region {text!r}")
    x, y, w, h = map(int, match.groups())
    if min(x, y) < 0 or w <= 0 or h <= 0:
        raise _BadRequest(f"bad region {text!r}")
    if x >= page_w or y >= page_h:
        return None
    return (x, y, min(w, page_w - x), min(h, page_h - y))


def _parse_size(text: str, region_w: int, region_h: int) -> tuple[int, int]:
    if text in ("full", "max"):
        size = (region_w, region_h)
    else:
        size = _parse_wh(text.removeprefix("^"), region_w, region_h)
    if min(size) < 1 or size[0] * size[1] > MAX_OUTPUT_PIXELS:
        raise _BadRequest(f"bad size {text!r}")
    return size


def _parse_wh(text: str, region_w: int, region_h: int) -> tuple[int, int]:
    match = _SIZE_RE.fullmatch(text)
    if not match:
        raise _BadRequest(f"bad size {text!r}")
    best_fit, w_txt, h_txt = match.groups()
    w = int(w_txt) if w_txt else None
    h = int(h_txt) if h_txt else None
    if (w is not None and w <= 0) or (h is not None and h <= 0):
        raise _BadRequest(f"bad size {text!r}")
    if best_fit:
        if w is None or h is None:
            raise _BadRequest(f"bad size {text!r}")
        scale = min(w / region_w, h / region_h)
        return (max(1, round(region_w * scale)), max(1, round(region_h * scale)))
    if w is not None and h is not None:
        return (w, h)
    if w is not None:
        return (w, max(1, round(w * region_h / region_w)))
    if h is not None:
        return (max(1, round(h * region_w / region_h)), h)
    raise _BadRequest(f"bad size {text!r}")


def _parse_image_path(path: str) -> _ImageRequest:
    """Parse ``/iiif/{identifier}/{region}/{size}/{rotation}/{quality}.{format}``.

    Identifiers contain slashes (Keio: ``NRE/110X-445-3-2/tif/2_004.tif``), so
    the four IIIF parameters are taken from the end.
    """
    segments = path.removeprefix("/iiif/").split("/")
    if len(segments) < 5 or not all(segments[:-4]):
        raise _NotFound("not an IIIF image request")
    identifier = "/".join(segments[:-4])
    region_txt, size_txt, rotation, last = segments[-4:]
    if rotation != "0" or last != "default.jpg":
        raise _BadRequest("only rotation 0, quality default and format jpg are supported")
    region = _parse_region(region_txt)
    # Size syntax is validated even for out-of-page regions, as a real server would.
    ref_w, ref_h = (region or (0, 0, *PAGE_SIZE))[2:]
    return _ImageRequest(identifier, region, _parse_size(size_txt, ref_w, ref_h))


# --------------------------------------------------------------------------
# Image synthesis (pure functions)
# --------------------------------------------------------------------------


def _page_colour(seed: bytes, x: float, y: float) -> tuple[int, int, int]:
    """Colour of the synthetic page at (x, y): a bilinear blend of four corner
    colours derived from the identifier, so any crop is computable without
    materialising the 2000x3000 page."""
    fx, fy = x / PAGE_SIZE[0], y / PAGE_SIZE[1]
    weights = ((1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy)
    corners = (seed[0:3], seed[3:6], seed[6:9], seed[9:12])
    return tuple(
        round(sum(wt * corner[c] for wt, corner in zip(weights, corners))) for c in range(3)
    )


def _synthesize(identifier: str, box: tuple[int, int, int, int], size: tuple[int, int]) -> Image.Image:
    seed = hashlib.sha256(identifier.encode()).digest()
    x, y, w, h = box
    tile = Image.new("RGB", (2, 2))
    tile.putdata([_page_colour(seed, px, py) for py in (y, y + h) for px in (x, x + w)])
    image = tile.resize(size, Image.Resampling.BILINEAR)
    # A region-dependent "face" makes neighbouring crops differ in bytes even
    # when the gradient alone would round to the same colours.
    face = hashlib.sha256(f"{identifier}|{box}".encode()).digest()[:3]
    out_w, out_h = size
    ImageDraw.Draw(image).ellipse(
        (out_w * 0.25, out_h * 0.2, out_w * 0.75, out_h * 0.8), fill=tuple(face)
    )
    return image


def _encode(image: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    if fmt == "JPEG":
        image.save(buf, "JPEG", quality=JPEG_QUALITY)  # baseline: no progressive/optimize
    else:
        image.save(buf, fmt)
    return buf.getvalue()


def _render_variant(req: _ImageRequest, variant: Fault | None) -> _Reply:
    box = req.box or (0, 0, *PAGE_SIZE)
    image = _synthesize(req.identifier, box, req.size)
    if variant is Fault.GRAY:
        return _Reply(200, _encode(image.convert("L"), "JPEG"), "image/jpeg")
    if variant is Fault.CMYK:
        return _Reply(200, _encode(image.convert("CMYK"), "JPEG"), "image/jpeg")
    if variant is Fault.PNG:
        return _Reply(200, _encode(image.convert("RGBA"), "PNG"), "image/png")
    return _Reply(200, _encode(image, "JPEG"), "image/jpeg")


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _build_bomb_png(side: int = BOMB_SIDE) -> bytes:
    """A valid, fully decodable 1-bit PNG of side x side pixels: ~50 kB on the
    wire but far above Pillow's MAX_IMAGE_PIXELS.  Built by hand because letting
    Pillow save it would allocate the whole bitmap first."""
    row = b"\x00" * (1 + (side + 7) // 8)  # filter byte + packed bits
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)  # bit depth 1, greyscale
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def _build_gzip_bomb(size: int) -> bytes:
    """`size` zero bytes gzipped (~1000:1). A gzip stream may be a series of members (RFC 1952)
    and every client inflates them as one body, so one 16 MiB member is compressed and repeated:
    compressing gigabytes of zeros would take the test box many seconds."""
    member_size = min(size, GZIP_MEMBER)
    count, rest = divmod(size, member_size)
    member = gzip.compress(bytes(member_size), compresslevel=9, mtime=0)
    return member * count + (gzip.compress(bytes(rest), compresslevel=9, mtime=0) if rest else b"")


def _build_placeholder() -> bytes:
    """A grey 256x256 RGB JPEG with a crossed frame: what a server sends for an image it does not have."""
    image = Image.new("RGB", (256, 256), (200, 200, 200))
    draw = ImageDraw.Draw(image)
    draw.rectangle((16, 16, 239, 239), outline=(120, 120, 120), width=4)
    draw.line((16, 16, 239, 239), fill=(120, 120, 120), width=4)
    draw.line((16, 239, 239, 16), fill=(120, 120, 120), width=4)
    return _encode(image, "JPEG")


def _instant_fault_reply(fault: Fault, self_url: str, retry_after: str = "5") -> _Reply | None:
    """Replies for faults that never reach the (capacity-limited) renderer."""
    if fault is Fault.S503:
        return _text(503, "Service Unavailable")
    if fault is Fault.S503_RETRY_AFTER:
        return _Reply(503, b"Service Unavailable\n", "text/plain", (("Retry-After", retry_after),))
    if fault is Fault.S429:
        return _Reply(429, b"Too Many Requests\n", "text/plain", (("Retry-After", "1"),))
    if fault is Fault.S500:
        return _text(500, "Internal Server Error")
    if fault is Fault.S502:
        return _text(502, "Bad Gateway")
    if fault is Fault.S504:
        return _text(504, "Gateway Timeout")
    if fault is Fault.S400:
        return _text(400, "Bad Request")
    if fault is Fault.S403:
        return _text(403, "Forbidden", content_type="text/html")
    if fault is Fault.S404:
        return _text(404, "Not Found", content_type=None)
    if fault is Fault.S410:
        return _text(410, "Gone")
    if fault is Fault.HTML200:
        return _Reply(200, HTML_BODY, "text/html; charset=utf-8")
    if fault is Fault.GARBAGE200:
        return _Reply(200, GARBAGE_BODY, "image/jpeg")
    if fault is Fault.EMPTY200:
        return _Reply(200, b"", "image/jpeg")
    if fault is Fault.REDIRECT_FILE:
        return _Reply(302, headers=(("Location", "file:///etc/passwd"),))
    if fault is Fault.REDIRECT_LOOP:
        return _Reply(302, headers=(("Location", self_url),))
    return None


# --------------------------------------------------------------------------
# HTTP plumbing
# --------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so connection reuse is observable
    server_version = "FakeIIIF/1.0"
    sys_version = ""
    # Headers and body go out in separate writes; without TCP_NODELAY, Nagle
    # plus delayed ACKs would add ~40 ms to every keep-alive response.
    disable_nagle_algorithm = True

    def setup(self) -> None:
        super().setup()
        self.server.fake._pause(self.server.fake.rtt)  # the TCP handshake's round trip

    def handle(self) -> None:
        if self.server.fake._held_in_blackhole(self.server.index):
            self.close_connection = True
            return
        super().handle()

    def do_GET(self) -> None:
        self.server.fake._serve(self, self.server.index)

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep pytest / benchmark output clean

    # Set per request by FakeIIIF: ends the request's "in flight" period.
    # Called just before the final write, because once the client has the
    # last byte it may open its next connection before this thread returns,
    # and a sequential client must never look concurrent.
    request_done = staticmethod(lambda: None)

    def write_reply(self, reply: _Reply, *, content_length: int | None = None) -> None:
        self.send_response(reply.status)
        if reply.content_type:
            self.send_header("Content-Type", reply.content_type)
        for name, value in reply.headers:
            self.send_header(name, value)
        length = len(reply.body) if content_length is None else content_length
        self.send_header("Content-Length", str(length))
        if content_length is None:
            self.request_done()
        self.end_headers()
        if content_length is None:
            self.wfile.write(reply.body)

    def write_truncated(self, reply: _Reply) -> None:
        self.write_reply(reply, content_length=len(reply.body))
        self.wfile.write(reply.body[: len(reply.body) // 2])
        self.close_connection = True  # the FIN tells the client the body ended early

    def write_padded(self, reply: _Reply, total: int, stopping: threading.Event) -> None:
        """Stream ``reply.body`` zero-padded to ``total`` bytes without holding it in memory."""
        self.write_reply(reply, content_length=total)
        self.close_connection = self._write_zero_padded(reply.body, total, stopping) > 0

    def _write_zero_padded(self, body: bytes, total: int, stopping: threading.Event) -> int:
        """`body`, then zeros up to `total` bytes in chunks, until done or `stopping`; the bytes left unsent."""
        self.wfile.write(body)
        remaining = total - len(body)
        view = memoryview(_STREAM_CHUNK)
        while remaining > 0 and not stopping.is_set():
            n = min(remaining, len(view))
            if n == remaining:
                self.request_done()
            self.wfile.write(view[:n])
            remaining -= n
        return remaining

    def write_unannounced(self, reply: _Reply, total: int, stopping: threading.Event) -> None:
        """Stream ``reply.body`` zero-padded to ``total`` bytes with no Content-Length: the end of
        the body is the end of the connection, as HTTP/1.0 servers and some proxies send it."""
        self.send_response(reply.status)
        if reply.content_type:
            self.send_header("Content-Type", reply.content_type)
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        self._write_zero_padded(reply.body, total, stopping)

    def write_trickle(self, interval: float, stopping: threading.Event) -> None:
        """Announce TRICKLE_LENGTH bytes, then send them one at a time, each within any read timeout."""
        self.write_reply(_Reply(200, content_type="image/jpeg"), content_length=TRICKLE_LENGTH)
        self.close_connection = True
        for sent in range(TRICKLE_LENGTH):
            if stopping.wait(interval):
                return
            if sent == TRICKLE_LENGTH - 1:
                self.request_done()
            try:
                self.wfile.write(b"x")
                self.wfile.flush()
            except OSError:
                return

    def cut(self) -> None:
        """Read the request, then close the connection without a word (a FIN, not an RST)."""
        self.close_connection = True
        self.request_done()

    def reset(self) -> None:
        """Drop the connection with a TCP RST instead of a response."""
        self.close_connection = True
        self.request_done()
        # Linger 0 turns close() into an RST.  The makefile() reader holds a
        # reference that would defer the real close, so close it first.
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.rfile.close()
        self.connection.close()


class _HostServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # default 5 drops SYNs under a 12-client burst

    def __init__(self, fake: FakeIIIF, index: int, ssl_context, plain_too: bool = False) -> None:
        self.fake = fake
        self.index = index
        self.ssl_context = ssl_context
        self.plain_too = plain_too  # with ssl_context: a connection that does not open with TLS is served plain
        self._live_lock = threading.Lock()
        self._live_conns: set[socket.socket] = set()
        self._live_threads: set[threading.Thread] = set()
        super().__init__(("127.0.0.1", 0), _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls getfqdn(), a reverse DNS lookup that can
        # take seconds in sandboxes; we know the name already.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def get_request(self):
        sock, addr = super().get_request()
        self.fake._count_connection(self.index)
        if self.ssl_context is not None and not self.plain_too:
            # Handshake lazily in the handler thread so a slow or failing TLS
            # client cannot block the accept loop.
            sock = self.ssl_context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, addr

    def process_request(self, request, client_address) -> None:
        # Track sockets and threads so stop() can wake idle keep-alive readers
        # and join every handler.
        thread = threading.Thread(
            target=self._run_connection, args=(request, client_address), daemon=True
        )
        with self._live_lock:
            self._live_conns.add(request)
            self._live_threads.add(thread)
        thread.start()

    def _run_connection(self, request, client_address) -> None:
        try:
            if self.ssl_context is not None and self.plain_too:
                request = self._tls_if_asked(request)
            self.process_request_thread(request, client_address)
        finally:
            with self._live_lock:
                self._live_conns.discard(request)
                self._live_threads.discard(threading.current_thread())

    def _tls_if_asked(self, sock: socket.socket) -> socket.socket:
        """One port for both schemes: a TLS connection opens with a handshake record (0x16),
        an HTTP one with a method name. Peeked in the handler thread, so a silent client
        holds up only its own connection (stop() shuts it down)."""
        try:
            first = sock.recv(1, socket.MSG_PEEK)
        except OSError:
            return sock
        if first != b"\x16":
            return sock
        wrapped = self.ssl_context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        with self._live_lock:  # the plain socket was detached into the wrapped one
            self._live_conns.discard(sock)
            self._live_conns.add(wrapped)
        return wrapped

    def handle_error(self, request, client_address) -> None:
        pass  # clients hanging up mid-response is expected here; stay quiet

    def drop_connections(self) -> None:
        with self._live_lock:
            conns = list(self._live_conns)
        for conn in conns:
            try:
                # The plain-socket method also works on SSLSockets and does not
                # disturb the SSL object a handler thread may be using.
                socket.socket.shutdown(conn, socket.SHUT_RDWR)
            except OSError:
                pass

    def live_threads(self) -> list[threading.Thread]:
        with self._live_lock:
            return list(self._live_threads)


@dataclass
class _HostFault:
    """A host-wide rule: every `every`-th image request gets `fault` (after `delay` seconds)."""

    fault: Fault
    every: int = 1
    delay: float = 0.0
    first_only: bool = False  # only a URL's first request: its retries always succeed
    after: int = 0  # the host's first `after` image requests are answered normally: a host that delivered, then broke
    requests: int = field(default=0, compare=False)


class _ProxyHandler(BaseHTTPRequestHandler):
    """A forward proxy for loopback only: absolute-URI GETs and CONNECT tunnels."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _refused(self, method: str, port: int | None) -> bool:
        fake = self.server.fake
        with fake._lock:
            self.server.seen.append((method, self.path))
            self.server.times.append(time.monotonic())
        status = fake._tunnel_refusal(port) if port is not None else None
        if status is None:
            return False
        # As a proxy says it could not reach the host: a status line, no body, and the connection closed.
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        return True

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        if parts.scheme != "http" or parts.hostname != "127.0.0.1":
            self.send_error(403, "loopback only")
            return
        if self._refused("GET", parts.port):
            return
        upstream = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
        try:
            target = parts.path + (f"?{parts.query}" if parts.query else "")
            upstream.request("GET", target, headers={"User-Agent": self.headers.get("User-Agent", "")})
            reply = upstream.getresponse()
            body = reply.read()
        finally:
            upstream.close()
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.getheader("Content-Type") or "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_CONNECT(self) -> None:
        host, _, port = self.path.rpartition(":")
        if host != "127.0.0.1" or not port.isdigit():
            self.send_error(403, "loopback only")
            return
        if self._refused("CONNECT", int(port)):
            return
        upstream = socket.create_connection((host, int(port)), timeout=10)
        self.send_response(200, "Connection established")
        self.end_headers()
        self.close_connection = True
        ends = [self.connection, upstream]
        stopping = self.server.fake._stopping
        try:
            while not stopping.is_set():
                readable, _, _ = select.select(ends, [], [], _POLL)
                for end in readable:
                    data = end.recv(65536)
                    if not data:
                        return
                    (upstream if end is self.connection else self.connection).sendall(data)
        except OSError:
            pass
        finally:
            upstream.close()


class _ProxyServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, fake: FakeIIIF) -> None:
        self.fake = fake
        self.seen: list[tuple[str, str]] = []  # guarded by fake._lock
        self.times: list[float] = []  # each request's arrival, parallel to seen
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": _POLL}, daemon=True,
                                        name="FakeIIIF-proxy")
        self._thread.start()

    def server_bind(self) -> None:
        socketserver.TCPServer.server_bind(self)  # no reverse DNS lookup (see _HostServer)
        self.server_name, self.server_port = self.server_address[:2]

    def handle_error(self, request, client_address) -> None:
        pass

    def close(self) -> None:
        self.shutdown()
        self.server_close()

    def threads(self) -> list[threading.Thread]:
        return [self._thread]


# --------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------


class FakeIIIF:
    """``hosts`` loopback IIIF servers sharing one set of fault rules and stats.

    Servers start listening in the constructor; ``stop()`` is idempotent.
    See the module docstring for how URLs are matched.
    """

    def __init__(
        self,
        hosts: int = 3,
        server_time: float = 0.0,
        rtt: float = 0.0,
        capacity: int | None = None,
        ssl_context=None,
        plain_too: bool = False,
        stall_seconds: float = 60.0,
        trickle_interval: float = 0.1,
        huge_body_size: int = HUGE_BODY_SIZE,
        gzip_bomb_size: int = GZIP_BOMB_SIZE,
        retry_after: int | str = 5,
    ) -> None:
        if hosts < 1:
            raise ValueError("hosts must be >= 1")
        if capacity is not None and capacity < 1:
            raise ValueError("capacity must be >= 1 or None")
        self.server_time = server_time
        self.rtt = rtt
        self.capacity = capacity
        self.stall_seconds = stall_seconds
        self.trickle_interval = trickle_interval
        self.huge_body_size = huge_body_size
        self.gzip_bomb_size = gzip_bomb_size
        self.retry_after = str(retry_after)  # what S503_RETRY_AFTER asks for: seconds or an HTTP date
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._faults: dict[tuple[int | None, str], collections.deque[list]] = {}
        self._files: dict[str, bytes] = {}
        self._cache: dict[tuple, _Reply] = {}
        self._bomb: bytes | None = None
        self._gzip_bomb: bytes | None = None
        self._placeholder: bytes | None = None
        self._redirects: dict[tuple[int | None, str], tuple[int, str]] = {}
        self._slots = [
            threading.BoundedSemaphore(capacity) if capacity else None for _ in range(hosts)
        ]
        self._killed: set[int] = set()
        self._host_faults: dict[int, _HostFault] = {}
        self._blackholed: set[int] = set()
        self._refused_tunnels: dict[int, int] = {}  # host -> the status its proxy tunnels get
        self._proxy: _ProxyServer | None = None
        self._init_stats(hosts)
        if plain_too and ssl_context is None:
            raise ValueError("plain_too needs an ssl_context")
        scheme = "https" if ssl_context is not None else "http"
        self._servers = [_HostServer(self, i, ssl_context, plain_too) for i in range(hosts)]
        self.base_urls = [f"{scheme}://127.0.0.1:{s.server_address[1]}" for s in self._servers]
        self._origins = {base: i for i, base in enumerate(self.base_urls)}
        if plain_too:  # the same hosts over http too, on the same ports: one request count per URL path
            self._origins.update({base.replace("https://", "http://", 1): i for i, base in enumerate(self.base_urls)})
        self._serve_threads = [
            threading.Thread(
                target=s.serve_forever, kwargs={"poll_interval": _POLL}, daemon=True,
                name=f"FakeIIIF-host{i}",
            )
            for i, s in enumerate(self._servers)
        ]
        for thread in self._serve_threads:
            thread.start()

    def _init_stats(self, hosts: int) -> None:
        self._counts: collections.Counter[tuple[int, str]] = collections.Counter()
        self._log: list[tuple[int, str]] = []
        self._times: list[float] = []
        self._agents: list[str] = []
        self._in_flight = {i: 0 for i in range(hosts)}
        self._peak = {i: 0 for i in range(hosts)}
        self._peak_total = 0  # across all hosts at once
        self._connections = {i: 0 for i in range(hosts)}

    # -- lifecycle ---------------------------------------------------------

    def __enter__(self) -> FakeIIIF:
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def stop(self, timeout: float = 5.0) -> None:
        """Shut every host down and join all threads, waking stalled handlers."""
        self._stopping.set()
        # In parallel: each serve_forever loop needs up to one poll interval to notice.
        closers = [threading.Thread(target=self._close_host, args=(i,)) for i in range(len(self._servers))]
        for closer in closers:
            closer.start()
        for closer in closers:
            closer.join()
        deadline = time.monotonic() + timeout
        threads = list(self._serve_threads)
        for server in self._servers:
            threads += server.live_threads()
        if self._proxy is not None:
            self._proxy.close()
            threads += self._proxy.threads()
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def kill_host(self, index: int) -> None:
        """Make host ``index`` dead: connections are refused and open ones are cut."""
        self._close_host(index)

    def fail_host(self, index: int, fault: Fault, *, delay: float = 0.0, after: int = 0) -> None:
        """Fault every image request to host ``index`` (after ``delay`` seconds each) until ``heal_host``;
        with ``after``, only once the host has answered that many image requests normally."""
        if after < 0:
            raise ValueError("after must be >= 0")
        self._set_host_fault(index, _HostFault(Fault(fault), every=1, delay=delay, after=after))

    def flaky_host(self, index: int, fault: Fault, every: int = 5) -> None:
        """Fault every ``every``-th image request to host ``index``, if it is its URL's first request.

        Deterministic, unlike a random share: no image fails twice, so no client is ever
        unlucky enough to run out of retries, yet a 1/``every`` share of requests fails."""
        if every < 1:
            raise ValueError("every must be >= 1")
        self._set_host_fault(index, _HostFault(Fault(fault), every=every, first_only=True))

    def heal_host(self, index: int) -> None:
        """Undo ``fail_host``, ``flaky_host``, ``blackhole_host`` and ``refuse_tunnels`` for host ``index``."""
        with self._lock:
            self._host_faults.pop(index, None)
            self._blackholed.discard(index)
            self._refused_tunnels.pop(index, None)

    def blackhole_host(self, index: int) -> None:
        """Accept connections to host ``index`` but never read or answer them (until ``heal_host``)."""
        with self._lock:
            self._blackholed.add(index)

    def refuse_tunnels(self, index: int, status: int = 502) -> None:
        """The proxy answers ``status`` to a CONNECT (or a proxied GET) for host ``index``,
        as a proxy does for a host it cannot reach."""
        with self._lock:
            self._refused_tunnels[index] = status

    @property
    def proxy_url(self) -> str:
        """A forward proxy (absolute-URI GETs and CONNECT tunnels, to 127.0.0.1 only), started on first use."""
        with self._lock:
            if self._proxy is None:
                self._proxy = _ProxyServer(self)
            return self._proxy.url

    @property
    def proxy_log(self) -> list[tuple[str, str]]:
        """``(method, target)`` of every request the proxy received, refused ones included."""
        with self._lock:
            return list(self._proxy.seen) if self._proxy is not None else []

    @property
    def proxy_times(self) -> list[float]:
        """``time.monotonic()`` at each of the proxy's requests, parallel to ``proxy_log``."""
        with self._lock:
            return list(self._proxy.times) if self._proxy is not None else []

    def _set_host_fault(self, index: int, rule: _HostFault) -> None:
        if not 0 <= index < len(self._servers):
            raise ValueError(f"no host {index}")
        with self._lock:
            self._host_faults[index] = rule

    def _close_host(self, index: int) -> None:
        with self._lock:
            if index in self._killed:
                return
            self._killed.add(index)
        server = self._servers[index]
        server.shutdown()  # stop accepting first, so no connection slips past drop
        server.server_close()
        server.drop_connections()

    # -- configuration -----------------------------------------------------

    def url(self, host: int, identifier: str, region: str = "0,0,512,512", size: str = "256,256") -> str:
        return f"{self.base_urls[host]}/iiif/{identifier}/{region}/{size}/0/default.jpg"

    def inject(self, url: str, fault: Fault, times: int | None = None) -> None:
        """Fault the next ``times`` requests of ``url`` (``None``: all of them).

        Injections on the same URL queue up, e.g. ``inject(u, S503, 2)`` then
        ``inject(u, TRUNCATED, 1)`` gives 503, 503, truncated, then normal.
        """
        fault = Fault(fault)
        if times is not None and times < 0:
            raise ValueError("times must be >= 0 or None")
        if times == 0:
            return
        key = self._locate(url)
        with self._lock:
            self._faults.setdefault(key, collections.deque()).append([fault, times])

    def redirect(self, url: str, location: str, status: int = 301) -> None:
        """Answer every request of ``url`` with ``status`` and ``Location: location`` (an image
        that moved for good), unless a fault is injected on it."""
        key = self._locate(url)
        with self._lock:
            self._redirects[key] = (status, location)

    @property
    def placeholder_bytes(self) -> bytes:
        """What ``Fault.PLACEHOLDER`` answers every image with: a valid 256x256 RGB JPEG."""
        with self._lock:
            if self._placeholder is None:
                self._placeholder = _build_placeholder()
            return self._placeholder

    def clear_faults(self, url: str | None = None) -> None:
        key = None if url is None else self._locate(url)
        with self._lock:
            if key is None:
                self._faults.clear()
            else:
                self._faults.pop(key, None)

    def set_file(self, path: str, data: bytes) -> None:
        """Serve ``data`` at ``path`` on every host (e.g. dataset metadata)."""
        with self._lock:
            self._files[_normalize_path(path)] = bytes(data)

    # -- statistics --------------------------------------------------------

    def requests(self, url: str | None = None) -> int:
        """Requests received for ``url`` (full URL: that host; path: all hosts; None: total)."""
        with self._lock:
            if url is None:
                return sum(self._counts.values())
            host, path = self._locate(url)
            hosts = range(len(self._servers)) if host is None else (host,)
            return sum(self._counts[(h, path)] for h in hosts)

    @property
    def request_log(self) -> list[tuple[int, str]]:
        """``(host_index, raw request path)`` in arrival order."""
        with self._lock:
            return list(self._log)

    @property
    def request_times(self) -> list[float]:
        """``time.monotonic()`` at each request's arrival, parallel to ``request_log``."""
        with self._lock:
            return list(self._times)

    @property
    def user_agents(self) -> list[str]:
        """User-Agent of every request, parallel to ``request_log`` ("" when absent)."""
        with self._lock:
            return list(self._agents)

    @property
    def peak_concurrency(self) -> dict[int, int]:
        with self._lock:
            return dict(self._peak)

    @property
    def peak_total_concurrency(self) -> int:
        """The most requests in flight at once, all hosts together."""
        with self._lock:
            return self._peak_total

    @property
    def connections_opened(self) -> dict[int, int]:
        with self._lock:
            return dict(self._connections)

    def reset_stats(self) -> None:
        """Zero counters, log and connection counts; injected faults are kept."""
        with self._lock:
            in_flight = dict(self._in_flight)
            self._init_stats(len(self._servers))
            self._in_flight = in_flight
            self._peak = dict(in_flight)  # requests still running remain "in flight"
            self._peak_total = sum(in_flight.values())

    def expected_bytes(self, url: str, fault: Fault | None = None) -> bytes:
        """Body a request for ``url`` gets when not faulted, or when faulted with
        one of the image variants (GRAY, CMYK, PNG, BOMB)."""
        if fault is not None and Fault(fault) not in IMAGE_VARIANTS:
            raise ValueError(f"{fault} does not produce a fixed body")
        host, path = self._locate(url)
        return self._content(host or 0, path, fault and Fault(fault)).body

    # -- internals: bookkeeping ----------------------------------------------

    def _locate(self, url: str) -> tuple[int | None, str]:
        parts = urlsplit(url)
        if parts.scheme and parts.netloc:
            host = self._origins.get(f"{parts.scheme}://{parts.netloc}")
            return host, _normalize_path(parts.path)
        return None, _normalize_path(url)

    def _count_connection(self, host: int) -> None:
        with self._lock:
            self._connections[host] += 1

    @contextmanager
    def _tracking(self, handler: _Handler, host: int, path: str) -> Iterator[None]:
        with self._lock:
            self._log.append((host, handler.path))
            self._times.append(time.monotonic())
            self._agents.append(handler.headers.get("User-Agent", ""))
            self._counts[(host, path)] += 1
            self._in_flight[host] += 1
            self._peak[host] = max(self._peak[host], self._in_flight[host])
            self._peak_total = max(self._peak_total, sum(self._in_flight.values()))
        finished = False

        def done() -> None:
            nonlocal finished
            with self._lock:
                if not finished:
                    finished = True
                    self._in_flight[host] -= 1

        handler.request_done = done
        try:
            yield
        finally:
            done()

    def _take_fault(self, host: int, path: str) -> Fault | None:
        with self._lock:
            for key in ((host, path), (None, path)):
                queue = self._faults.get(key)
                if not queue:
                    continue
                entry = queue[0]
                if entry[1] is not None:
                    entry[1] -= 1
                    if entry[1] == 0:
                        queue.popleft()
                if not queue:
                    del self._faults[key]
                return entry[0]
        return None

    def _host_fault(self, host: int, path: str) -> Fault | None:
        """The fault a host-wide rule puts on this request (its delay already waited), if any."""
        if not self._is_image_path(path):
            return None  # metadata files stay reachable: the rules are about the image server
        with self._lock:
            rule = self._host_faults.get(host)
            if rule is None:
                return None
            rule.requests += 1
            hit = (rule.requests > rule.after and rule.requests % rule.every == 0
                   and (not rule.first_only or self._counts[(host, path)] == 1))
        if not hit:
            return None
        self._pause(rule.delay)
        return rule.fault

    def _held_in_blackhole(self, host: int) -> bool:
        """Hold a new connection while its host is blackholed; True if it was (it gets no answer)."""
        held = False
        while True:
            with self._lock:
                if host not in self._blackholed:
                    return held
            held = True
            if self._pause(_POLL):
                return True

    def _tunnel_refusal(self, port: int) -> int | None:
        with self._lock:
            for index, status in self._refused_tunnels.items():
                if self._servers[index].server_address[1] == port:
                    return status
        return None

    def _pause(self, seconds: float) -> bool:
        """Sleep unless stopping; True means "stop() was called, give up"."""
        if seconds <= 0:
            return self._stopping.is_set()
        return self._stopping.wait(seconds)

    def _acquire_slot(self, host: int) -> bool:
        slot = self._slots[host]
        while slot is not None and not slot.acquire(timeout=_POLL):
            if self._stopping.is_set():
                return False
        return True

    def _release_slot(self, host: int) -> None:
        if self._slots[host] is not None:
            self._slots[host].release()

    # -- internals: content ---------------------------------------------------

    def _is_image_path(self, path: str) -> bool:
        with self._lock:
            if path in self._files:
                return False
        return path.startswith("/iiif/")

    def _content(self, host: int, path: str, variant: Fault | None = None) -> _Reply:
        """The reply for ``path`` ignoring transport faults; ``variant`` swaps in an alternative image."""
        if variant is Fault.BOMB:
            return _Reply(200, self._bomb_png(), "image/png")
        with self._lock:
            data = self._files.get(path)
        if data is not None and variant is None:
            content_type = mimetypes.guess_type(path)[0] or "application/octet-stream"
            return _Reply(200, data, content_type)
        if not path.startswith("/iiif/") and variant is None:
            return _text(404, "Not Found", content_type=None)  # iipsrv sends no Content-Type
        try:
            req = _parse_image_path(path)
        except _BadRequest as exc:
            if variant is None:
                # iipsrv sends no Content-Type on 404
                return _text(exc.status, str(exc), "text/plain" if exc.status == 400 else None)
            req = _ImageRequest(path, None, (256, 256))  # variant faults on odd paths still get an image
        if req.box is None and variant is None:
            return _Reply(200, OUTSIDE_BODY, "image/jpeg")  # iipsrv's quirk
        return self._cached_image(req, variant)

    def _cached_image(self, req: _ImageRequest, variant: Fault | None) -> _Reply:
        key = (req, variant)
        with self._lock:
            reply = self._cache.get(key)
        if reply is None:
            # Rendered outside the lock: a duplicate render is harmless (output
            # is deterministic) whereas serialising all renders would not be.
            reply = _render_variant(req, variant)
            with self._lock:
                reply = self._cache.setdefault(key, reply)
        return reply

    def _gzip_bomb_body(self) -> bytes:
        # Built outside the lock (it takes a moment); a second build by a racing thread is harmless.
        with self._lock:
            body = self._gzip_bomb
        if body is None:
            body = _build_gzip_bomb(self.gzip_bomb_size)
            with self._lock:
                body = self._gzip_bomb = self._gzip_bomb or body
        return body

    def _redirect_of(self, host: int, path: str) -> tuple[int, str] | None:
        with self._lock:
            return self._redirects.get((host, path)) or self._redirects.get((None, path))

    def _bomb_png(self) -> bytes:
        with self._lock:
            if self._bomb is None:
                self._bomb = _build_bomb_png()
            return self._bomb

    # -- internals: request handling -----------------------------------------

    def _serve(self, handler: _Handler, host: int) -> None:
        path = _normalize_path(handler.path)
        with self._tracking(handler, host, path):
            if self._pause(self.rtt):
                handler.close_connection = True
                return
            fault = self._take_fault(host, path) or self._host_fault(host, path)
            if fault is Fault.STALL:
                if self._pause(self.stall_seconds):
                    handler.close_connection = True
                    return
                fault = None
            if fault is Fault.RESET:
                handler.reset()
                return
            if fault is Fault.CUT:
                handler.cut()
                return
            if fault is Fault.TRICKLE:
                handler.write_trickle(self.trickle_interval, self._stopping)
                return
            if fault is Fault.PLACEHOLDER:
                handler.write_reply(_Reply(200, self.placeholder_bytes, "image/jpeg"))
                return
            if fault is Fault.COOKIE_CHECK:
                if COOKIE not in handler.headers.get("Cookie", ""):
                    handler.write_reply(_Reply(302, headers=(("Location", self.base_urls[host] + handler.path),
                                                             ("Set-Cookie", f"{COOKIE}; Path=/"))))
                    return
                fault = None
            if fault is Fault.GZIP_BOMB:
                handler.write_reply(_Reply(200, self._gzip_bomb_body(), "image/jpeg",
                                           (("Content-Encoding", "gzip"),)))
                return
            instant = fault and _instant_fault_reply(fault, self.base_urls[host] + handler.path, self.retry_after)
            if instant:
                handler.write_reply(instant)
                return
            moved = None if fault else self._redirect_of(host, path)
            if moved:
                handler.write_reply(_Reply(moved[0], headers=(("Location", moved[1]),)))
                return
            self._serve_content(handler, host, path, fault)

    def _serve_content(self, handler: _Handler, host: int, path: str, fault: Fault | None) -> None:
        # Only image renders occupy the host's worker pool and take server_time.
        is_image = self._is_image_path(path)
        if is_image and not self._acquire_slot(host):
            handler.close_connection = True
            return
        try:
            # Render first, then wait out the rest of server_time: the render is part of
            # the server's time, not an extra on every request's critical path.
            started = time.monotonic()
            variant = fault if fault in IMAGE_VARIANTS else None
            reply = self._content(host, path, variant)
            if is_image and self._pause(max(self.server_time - (time.monotonic() - started), 0.0)):
                handler.close_connection = True
                return
            if fault is Fault.TRUNCATED:
                handler.write_truncated(reply)
            elif fault is Fault.HUGE_BODY:
                handler.write_padded(reply, self.huge_body_size, self._stopping)
            elif fault is Fault.HUGE_BODY_NO_LENGTH:
                handler.write_unannounced(reply, self.huge_body_size, self._stopping)
            elif fault is Fault.BAD_GZIP:
                handler.write_reply(_Reply(reply.status, reply.body, reply.content_type,
                                           (*reply.headers, ("Content-Encoding", "gzip"))))
            else:
                handler.write_reply(reply)
        finally:
            if is_image:
                self._release_slot(host)
