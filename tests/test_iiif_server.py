"""Tests for the fake IIIF server, driven through real sockets with ``requests``."""

from __future__ import annotations

import io
import os
import ssl
import struct
import subprocess
import sys
import threading
import time

import pytest
import requests
from PIL import Image, UnidentifiedImageError

from iiif_server import HUGE_BODY_SIZE, FakeIIIF, Fault

KEIO_ID = "NRE/110X-445-3-2/tif/2_004.tif"
TIMEOUT = 5


@pytest.fixture(autouse=True)
def _no_proxies(monkeypatch):
    # requests honours *_PROXY variables even for 127.0.0.1; never leave loopback.
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


@pytest.fixture
def srv():
    with FakeIIIF(hosts=3, stall_seconds=60) as server:
        yield server


def get(url: str, **kwargs) -> requests.Response:
    kwargs.setdefault("timeout", TIMEOUT)
    return requests.get(url, **kwargs)


def open_image(content: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(content))
    image.load()
    return image


# -- startup, URLs, import hygiene ------------------------------------------


def test_exposes_one_url_per_host():
    server = FakeIIIF(hosts=3)
    try:
        assert len(server.base_urls) == 3
        assert len(set(server.base_urls)) == 3
        assert all(u.startswith("http://127.0.0.1:") for u in server.base_urls)
        assert server.url(1, KEIO_ID) == (
            f"{server.base_urls[1]}/iiif/{KEIO_ID}/0,0,512,512/256,256/0/default.jpg"
        )
        assert server.url(0, "x", region="full", size="max").endswith("/iiif/x/full/max/0/default.jpg")
    finally:
        server.stop()
    server.stop()  # idempotent


def test_plain_too_serves_https_and_http_on_one_port(tmp_path):
    """One host, both schemes: URLs that differ only in their scheme reach it, get the same bytes
    and count as one URL (what a test of 1.2's http/https twins needs)."""
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    with FakeIIIF(hosts=1, ssl_context=context, plain_too=True) as server:
        secure = server.url(0, KEIO_ID)
        plain = secure.replace("https://", "http://", 1)
        assert secure.startswith("https://")
        a = get(secure, verify=str(tmp_path / "ca.pem"))
        b = get(plain)
        assert a.status_code == b.status_code == 200 and a.content == b.content == server.expected_bytes(plain)
        assert server.requests(secure) == server.requests(plain) == 2 and server.requests() == 2
    with pytest.raises(ValueError):
        FakeIIIF(hosts=1, plain_too=True)


def test_module_imports_without_pytest_or_requests():
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import iiif_server; "
        "bad = {'pytest', 'requests', '_pytest'} & set(sys.modules); "
        "assert not bad, bad"
    )
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    subprocess.run([sys.executable, "-c", code, tests_dir], check=True, timeout=30)


# -- image requests ----------------------------------------------------------


@pytest.mark.parametrize(
    "region, size, expected",
    [
        ("0,0,512,512", "256,256", (256, 256)),
        ("0,0,512,256", "256,", (256, 128)),
        ("0,0,512,256", ",64", (128, 64)),
        ("0,0,400,200", "!100,100", (100, 50)),
        ("0,0,200,400", "!100,100", (50, 100)),
        ("0,0,300,200", "full", (300, 200)),
        ("0,0,300,200", "max", (300, 200)),
        ("0,0,300,200", "600,50", (600, 50)),  # distortion and upscaling are allowed
        ("full", "!200,200", (133, 200)),  # page is 2000x3000
        ("1900,2900,500,500", "full", (100, 100)),  # clipped to the page
    ],
)
def test_size_syntax_gives_right_pixel_size(srv, region, size, expected):
    response = get(srv.url(0, KEIO_ID, region=region, size=size))
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "image/jpeg"
    image = open_image(response.content)
    assert image.format == "JPEG"
    assert image.mode == "RGB"
    assert image.size == expected
    assert "progressive" not in image.info  # baseline JPEG


@pytest.mark.parametrize(
    "tail",
    [
        "-1,0,10,10/10,10/0/default.jpg",
        "0,0,0,10/10,10/0/default.jpg",
        "0,0,10,-5/10,10/0/default.jpg",
        "a,b,c,d/10,10/0/default.jpg",
        "0,0,10,10/abc/0/default.jpg",
        "0,0,10,10/0,/0/default.jpg",
        "0,0,10,10/,/0/default.jpg",
        "0,0,10,10/!10,/0/default.jpg",
        "0,0,10,10/10,10/90/default.jpg",
        "0,0,10,10/10,10/0/gray.jpg",
        "0,0,10,10/10,10/0/default.png",
    ],
)
def test_malformed_image_requests_are_400(srv, tail):
    response = get(f"{srv.base_urls[0]}/iiif/{KEIO_ID}/{tail}")
    assert response.status_code == 400


def test_region_outside_page_mimics_iipsrv(srv):
    response = get(srv.url(0, KEIO_ID, region="2500,100,50,50"))
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "image/jpeg"
    with pytest.raises(UnidentifiedImageError):
        open_image(response.content)


@pytest.mark.parametrize("path", ["/", "/nothing/here", "/iiif/"])
def test_unknown_paths_are_404_without_content_type(srv, path):
    response = get(srv.base_urls[0] + path)
    assert response.status_code == 404
    assert "Content-Type" not in response.headers


def test_bytes_are_identical_on_repeat_and_match_expected_bytes(srv):
    url = srv.url(0, KEIO_ID)
    first, second = get(url).content, get(url).content
    assert first == second == srv.expected_bytes(url)
    # Same content whichever host serves it, and whether asked by URL or path.
    assert get(srv.url(2, KEIO_ID)).content == first
    assert srv.expected_bytes(url.removeprefix(srv.base_urls[0])) == first


def test_different_identifiers_and_regions_give_different_images(srv):
    bodies = {
        get(srv.url(0, ident, region=region)).content
        for ident in ("a/1.tif", "a/2.tif")
        for region in ("0,0,512,512", "10,0,512,512")
    }
    assert len(bodies) == 4


def test_set_file_serves_bytes_on_every_host(srv):
    srv.set_file("/meta/dataset/urls.txt", b"a\nb\n")
    for base in srv.base_urls:
        response = get(base + "/meta/dataset/urls.txt")
        assert response.status_code == 200
        assert response.content == b"a\nb\n"
        assert response.headers["Content-Type"].startswith("text/plain")
    assert srv.requests("/meta/dataset/urls.txt") == 3
    assert srv.expected_bytes("/meta/dataset/urls.txt") == b"a\nb\n"


# -- statistics ----------------------------------------------------------------


def test_request_counts_and_log(srv):
    url0, url1 = srv.url(0, KEIO_ID), srv.url(1, KEIO_ID)
    get(url0)
    get(url1)
    get(url1)
    path = url0.removeprefix(srv.base_urls[0])
    assert srv.requests(url0) == 1  # full URL: that host only
    assert srv.requests(url1) == 2
    assert srv.requests(path) == 3  # bare path: all hosts
    assert srv.requests(path.replace("/tif/", "%2Ftif%2F")) == 3  # percent-encoding is ignored
    assert srv.requests() == 3
    assert srv.request_log == [(0, path), (1, path), (1, path)]
    log = srv.request_log
    log.clear()
    assert len(srv.request_log) == 3  # a copy


def test_user_agents_are_recorded(srv):
    get(srv.url(0, KEIO_ID), headers={"User-Agent": "kaokore/0.1"})
    get(srv.url(1, KEIO_ID), headers={"User-Agent": ""})
    assert srv.user_agents == ["kaokore/0.1", ""]


def test_reset_stats_keeps_faults(srv):
    url = srv.url(0, KEIO_ID)
    srv.inject(url, Fault.S503)
    get(url)
    srv.reset_stats()
    assert srv.requests(url) == 0
    assert srv.request_log == []
    assert srv.user_agents == []
    assert srv.peak_concurrency == {0: 0, 1: 0, 2: 0}
    assert srv.connections_opened == {0: 0, 1: 0, 2: 0}
    assert get(url).status_code == 503


def test_keep_alive_session_uses_one_connection(srv):
    with requests.Session() as session:
        for i in range(20):
            response = session.get(srv.url(0, f"id/{i}"), timeout=TIMEOUT)
            assert response.status_code == 200
    assert srv.connections_opened[0] == 1
    assert srv.peak_concurrency[0] == 1


def test_fresh_connections_are_counted(srv):
    for _ in range(5):
        get(srv.url(1, KEIO_ID), headers={"Connection": "close"})
    assert srv.connections_opened == {0: 0, 1: 5, 2: 0}
    assert srv.peak_concurrency[1] == 1  # sequential clients never look concurrent


def run_concurrently(urls: list[str], answered: list[float] | None = None) -> list[requests.Response]:
    """GET every URL at once; `answered` gets the moment each answer was in."""
    barrier = threading.Barrier(len(urls))
    results: list = [None] * len(urls)

    def worker(i: int) -> None:
        barrier.wait()
        results[i] = get(urls[i])
        if answered is not None:
            answered.append(time.monotonic())

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(urls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_capacity_limits_service_but_peak_counts_waiting_requests():
    with FakeIIIF(hosts=1, server_time=0.5, capacity=2) as server:
        started = time.monotonic()
        results = run_concurrently([server.url(0, f"id/{i}") for i in range(6)])
        elapsed = time.monotonic() - started
        assert all(r.status_code == 200 for r in results)
        # More than the 2 being served were in flight at once: the waiting ones count too. (All six,
        # unless a loaded machine started a client more than a wave late.)
        assert 3 <= server.peak_concurrency[0] <= 6
        assert elapsed >= 1.45  # three waves of two


def test_peak_total_concurrency_counts_every_host_together():
    with FakeIIIF(hosts=3) as server:  # stall_seconds=60: a stalled request stays in flight
        for host in range(3):
            for i in range(2):
                url = server.url(host, f"id/{i}")
                server.inject(url, Fault.STALL, times=1)
                with pytest.raises(requests.exceptions.ReadTimeout):
                    get(url, timeout=0.2)  # one after the other, yet all six are in flight at the end
        assert server.peak_concurrency == {0: 2, 1: 2, 2: 2} and server.peak_total_concurrency == 6
        server.reset_stats()
        assert server.peak_total_concurrency == 6  # requests still running remain "in flight"


def test_server_time_without_capacity_runs_in_parallel():
    """No request waits for another: the server saw all six before it answered any (a server
    taking them one at a time would answer the first a whole server_time before seeing the last)."""
    answered: list[float] = []
    with FakeIIIF(hosts=1, server_time=1.5) as server:
        results = run_concurrently([server.url(0, f"id/{i}") for i in range(6)], answered)
        assert all(r.status_code == 200 for r in results)
        assert len(server.request_times) == 6 and max(server.request_times) < min(answered)


def test_rtt_is_paid_per_request_and_per_new_connection():
    with FakeIIIF(hosts=1, rtt=0.1) as server, requests.Session() as session:
        started = time.monotonic()
        session.get(server.url(0, "a"), timeout=TIMEOUT)
        first = time.monotonic() - started
        started = time.monotonic()
        session.get(server.url(0, "b"), timeout=TIMEOUT)
        second = time.monotonic() - started
        # The handshake's round trip is paid once per connection, and the session kept its one.
        assert server.connections_opened[0] == 1
    assert first >= 0.2  # a connection and a request
    assert second >= 0.1  # a request


def test_many_clients_many_urls_all_hosts(srv):
    urls = [srv.url(h, f"page/{i}.tif", size="64,64") for h in range(3) for i in range(60)]
    chunks = [urls[i::12] for i in range(12)]
    failures: list[str] = []

    def client(mine: list[str]) -> None:
        with requests.Session() as session:
            for url in mine:
                if session.get(url, timeout=TIMEOUT).content != srv.expected_bytes(url):
                    failures.append(url)

    threads = [threading.Thread(target=client, args=(c,)) for c in chunks]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert srv.requests() == len(urls)
    assert all(1 <= srv.peak_concurrency[h] <= 12 for h in range(3))
    assert all(srv.connections_opened[h] <= 12 for h in range(3))


# -- faults --------------------------------------------------------------------


@pytest.mark.parametrize(
    "fault, status, content_type, retry_after",
    [
        (Fault.S503, 503, "text/plain", None),
        (Fault.S429, 429, "text/plain", "1"),
        (Fault.S500, 500, "text/plain", None),
        (Fault.S502, 502, "text/plain", None),
        (Fault.S504, 504, "text/plain", None),
        (Fault.S400, 400, "text/plain", None),
        (Fault.S403, 403, "text/html", None),
        (Fault.S404, 404, None, None),
        (Fault.S410, 410, "text/plain", None),
        (Fault.S503_RETRY_AFTER, 503, "text/plain", "5"),
    ],
)
def test_status_faults(srv, fault, status, content_type, retry_after):
    url = srv.url(0, KEIO_ID)
    srv.inject(url, fault)
    response = get(url)
    assert response.status_code == status
    assert response.headers.get("Content-Type") == content_type
    assert response.headers.get("Retry-After") == retry_after


def test_html200(srv):
    url = srv.url(0, KEIO_ID)
    srv.inject(url, Fault.HTML200)
    response = get(url)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/html")
    assert response.content.startswith(b"<!DOCTYPE html>")


def test_garbage200(srv):
    url = srv.url(0, KEIO_ID)
    srv.inject(url, Fault.GARBAGE200)
    response = get(url)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "image/jpeg"
    with pytest.raises(UnidentifiedImageError):
        open_image(response.content)


def test_empty200(srv):
    url = srv.url(0, KEIO_ID)
    srv.inject(url, Fault.EMPTY200)
    response = get(url)
    assert (response.status_code, response.content) == (200, b"")


def test_cut_closes_without_an_answer(srv):
    url = srv.url(0, KEIO_ID)
    srv.inject(url, Fault.CUT, times=1)
    with pytest.raises(requests.ConnectionError, match="without response"):
        get(url)
    assert srv.requests(url) == 1  # the request was read before the cut
    assert get(url).status_code == 200


def test_trickle_sends_its_body_a_byte_at_a_time():
    with FakeIIIF(hosts=1, trickle_interval=0.01) as server:
        url = server.url(0, KEIO_ID)
        server.inject(url, Fault.TRICKLE, times=1)
        with requests.get(url, timeout=TIMEOUT, stream=True) as response:
            pieces = list(response.raw.stream(1))
        assert len(pieces) == int(response.headers["Content-Length"]) == 100


def test_reset_raises_connection_error(srv):
    url = srv.url(0, KEIO_ID)
    srv.inject(url, Fault.RESET, times=1)
    with pytest.raises(requests.ConnectionError):
        get(url)
    assert get(url).status_code == 200


def test_truncated_body_raises(srv):
    url = srv.url(0, KEIO_ID)
    srv.inject(url, Fault.TRUNCATED)
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        get(url)
    response = get(url, stream=True)
    assert int(response.headers["Content-Length"]) == len(srv.expected_bytes(url))
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        response.content  # noqa: B018


def test_stall_times_out_client_and_shutdown_stays_fast():
    server = FakeIIIF(hosts=1)  # default stall_seconds=60
    try:
        url = server.url(0, KEIO_ID)
        server.inject(url, Fault.STALL)
        with pytest.raises(requests.exceptions.ReadTimeout):
            requests.get(url, timeout=0.5)
        with requests.Session() as session:  # an idle keep-alive connection too
            session.get(server.url(0, "other"), timeout=TIMEOUT)
            handlers = server._servers[0].live_threads()
            assert len(handlers) == 2  # the stalled request's and the idle connection's
            server.stop()
            # Both were woken and joined, not left to the 60 s stall or to stop()'s 5 s join timeout.
            assert not any(thread.is_alive() for thread in handlers)
    finally:
        server.stop()


def test_short_stall_then_normal_answer():
    with FakeIIIF(hosts=1, stall_seconds=0.3) as server:
        url = server.url(0, KEIO_ID)
        server.inject(url, Fault.STALL, times=1)
        started = time.monotonic()
        response = get(url)
        assert time.monotonic() - started >= 0.3
        assert response.content == server.expected_bytes(url)


@pytest.mark.parametrize(
    "fault, content_type, fmt, mode, size",
    [
        (Fault.GRAY, "image/jpeg", "JPEG", "L", (256, 256)),
        (Fault.CMYK, "image/jpeg", "JPEG", "CMYK", (256, 256)),
        (Fault.PNG, "image/png", "PNG", "RGBA", (256, 256)),
    ],
)
def test_image_variant_faults(srv, fault, content_type, fmt, mode, size):
    url = srv.url(0, KEIO_ID)
    srv.inject(url, fault)
    response = get(url)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == content_type
    image = open_image(response.content)
    assert (image.format, image.mode, image.size) == (fmt, mode, size)
    assert response.content == srv.expected_bytes(url, fault)
    assert response.content != srv.expected_bytes(url)


def test_bomb_is_small_but_trips_pillow_guard(srv):
    url = srv.url(0, KEIO_ID)
    srv.inject(url, Fault.BOMB)
    response = get(url)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "image/png"
    assert len(response.content) < 200_000
    width, height, bit_depth = struct.unpack(">IIB", response.content[16:25])
    assert (width, height, bit_depth) == (20_000, 20_000, 1)
    with pytest.raises(Image.DecompressionBombError):
        Image.open(io.BytesIO(response.content))
    assert get(url).content == response.content  # cached, not rebuilt


def test_huge_body_is_streamed_in_full(srv):
    url = srv.url(0, KEIO_ID)
    srv.inject(url, Fault.HUGE_BODY, times=1)
    with get(url, stream=True) as response:
        assert response.status_code == 200
        assert response.headers["Content-Type"] == "image/jpeg"
        assert int(response.headers["Content-Length"]) == HUGE_BODY_SIZE
        received = sum(len(chunk) for chunk in response.iter_content(1 << 20))
    assert received == HUGE_BODY_SIZE


def test_huge_body_client_can_hang_up_early(srv):
    url = srv.url(0, KEIO_ID)
    srv.inject(url, Fault.HUGE_BODY, times=1)
    with get(url, stream=True) as response:
        next(response.iter_content(65536))
    assert get(url).content == srv.expected_bytes(url)


def test_redirect_to_file_url(srv):
    url = srv.url(0, KEIO_ID)
    srv.inject(url, Fault.REDIRECT_FILE)
    response = get(url, allow_redirects=False)
    assert response.status_code == 302
    assert response.headers["Location"] == "file:///etc/passwd"
    with pytest.raises(requests.exceptions.InvalidSchema):
        get(url)


def test_redirect_loop(srv):
    url = srv.url(0, KEIO_ID)
    srv.inject(url, Fault.REDIRECT_LOOP)
    response = get(url, allow_redirects=False)
    assert response.status_code == 302
    assert response.headers["Location"] == url
    with pytest.raises(requests.exceptions.TooManyRedirects):
        get(url)


def test_placeholder_is_one_valid_256_jpeg_for_every_image(srv):
    a, b = srv.url(0, KEIO_ID), srv.url(0, "other/page.tif", region="10,10,300,300")
    srv.fail_host(0, Fault.PLACEHOLDER)
    answers = [get(a), get(b)]
    assert [r.status_code for r in answers] == [200, 200]
    assert answers[0].content == answers[1].content == srv.placeholder_bytes
    assert answers[0].headers["Content-Type"] == "image/jpeg"
    image = open_image(srv.placeholder_bytes)
    assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (256, 256))  # kept byte for byte by a client
    assert srv.expected_bytes(a) != srv.placeholder_bytes
    assert get(srv.url(1, KEIO_ID)).content == srv.expected_bytes(srv.url(1, KEIO_ID))  # other hosts unaffected


def test_huge_body_without_length_ends_with_the_connection():
    with FakeIIIF(hosts=1, huge_body_size=3 * 2**20) as server:
        url = server.url(0, KEIO_ID)
        server.inject(url, Fault.HUGE_BODY_NO_LENGTH, times=1)
        with get(url, stream=True) as response:
            assert "Content-Length" not in response.headers
            assert response.headers["Connection"] == "close"
            received = sum(len(chunk) for chunk in response.iter_content(1 << 20))
        assert received == 3 * 2**20
        server.inject(url, Fault.HUGE_BODY, times=1)
        assert int(get(url, stream=True).headers["Content-Length"]) == 3 * 2**20  # the size is the instance's


def test_gzip_bomb_is_small_on_the_wire_and_inflates_to_its_size():
    with FakeIIIF(hosts=1, gzip_bomb_size=40 * 2**20 + 5) as server:
        url = server.url(0, KEIO_ID)
        server.fail_host(0, Fault.GZIP_BOMB)
        with get(url, stream=True) as response:
            assert response.headers["Content-Encoding"] == "gzip"
            assert int(response.headers["Content-Length"]) < 40 * 2**20 // 500
            inflated = sum(len(chunk) for chunk in response.iter_content(1 << 20))
        assert inflated == 40 * 2**20 + 5
        assert server._gzip_bomb_body() is server._gzip_bomb_body()  # built once per server


def test_the_default_gzip_bomb_inflates_to_2_gib_from_about_2_mb(srv):
    url = srv.url(0, KEIO_ID)
    srv.inject(url, Fault.GZIP_BOMB, times=1)
    with get(url, stream=True) as response:
        assert int(response.headers["Content-Length"]) < 3 * 10**6
        first = response.raw.read(2**20, decode_content=True)
    assert first == bytes(len(first)) and len(first) > 0
    assert srv.gzip_bomb_size == 2 * 2**30


def test_bad_gzip_does_not_decode(srv):
    url = srv.url(0, KEIO_ID)
    srv.inject(url, Fault.BAD_GZIP, times=1)
    with pytest.raises(requests.exceptions.ContentDecodingError):
        get(url)
    raw = get(url, stream=True, headers={"Accept-Encoding": "identity"})
    assert "Content-Encoding" not in raw.headers  # the next answer is the image, unencoded


def test_cookie_check_redirects_to_itself_once_with_the_cookie(srv):
    url = srv.url(0, KEIO_ID)
    srv.fail_host(0, Fault.COOKIE_CHECK)
    first = get(url, allow_redirects=False)
    assert first.status_code == 302 and first.headers["Location"] == url and "Set-Cookie" in first.headers
    with requests.Session() as session:
        response = session.get(url, timeout=TIMEOUT)
    assert response.content == srv.expected_bytes(url) and len(response.history) == 1
    assert get(url, allow_redirects=False, cookies={"fakeiiif-check": "passed"}).status_code == 200


def test_redirect_moves_an_image_for_good(srv):
    old, new = srv.url(0, KEIO_ID), srv.url(1, "moved/page.tif")
    srv.redirect(old, new)
    response = get(old, allow_redirects=False)
    assert response.status_code == 301 and response.headers["Location"] == new
    assert get(old).content == srv.expected_bytes(new)
    srv.inject(old, Fault.S503, times=1)  # a fault on the old URL comes first
    assert get(old, allow_redirects=False).status_code == 503


# -- fault scheduling ----------------------------------------------------------


def test_times_limits_fault_then_serves_normally(srv):
    url = srv.url(0, KEIO_ID)
    srv.inject(url, Fault.S503, times=2)
    assert [get(url).status_code for _ in range(4)] == [503, 503, 200, 200]
    assert srv.requests(url) == 4


def test_times_none_is_permanent(srv):
    url = srv.url(0, KEIO_ID)
    srv.inject(url, Fault.S404)
    assert {get(url).status_code for _ in range(5)} == {404}


def test_injections_on_one_url_queue_up(srv):
    url = srv.url(0, KEIO_ID)
    srv.inject(url, Fault.S429, times=1)
    srv.inject(url, Fault.S500, times=2)
    assert [get(url).status_code for _ in range(4)] == [429, 500, 500, 200]


def test_full_url_faults_one_host_path_faults_all(srv):
    srv.inject(srv.url(0, "one"), Fault.S503)
    assert get(srv.url(0, "one")).status_code == 503
    assert get(srv.url(1, "one")).status_code == 200
    path = srv.url(0, "all").removeprefix(srv.base_urls[0])
    srv.inject(path, Fault.S500)
    assert {get(srv.url(h, "all")).status_code for h in range(3)} == {500}


def test_clear_faults(srv):
    url = srv.url(0, KEIO_ID)
    srv.inject(url, Fault.S503)
    srv.clear_faults(url)
    assert get(url).status_code == 200


def test_faults_apply_to_files(srv):
    srv.set_file("/meta/urls.txt", b"x")
    srv.inject("/meta/urls.txt", Fault.S503, times=1)
    assert get(srv.base_urls[2] + "/meta/urls.txt").status_code == 503
    assert get(srv.base_urls[2] + "/meta/urls.txt").content == b"x"


# -- whole hosts: failing, flaky, blackholed, behind a proxy -----------------


def test_fail_host_faults_every_image_request_but_not_files(srv):
    srv.set_file("/meta/dataset/urls.txt", b"x")
    srv.fail_host(0, Fault.S500)
    assert [get(srv.url(0, f"id/{i}")).status_code for i in range(3)] == [500] * 3
    assert get(srv.base_urls[0] + "/meta/dataset/urls.txt").status_code == 200
    assert get(srv.url(1, "id/0")).status_code == 200
    srv.heal_host(0)
    assert get(srv.url(0, "id/0")).status_code == 200


def test_fail_host_after_serves_that_many_images_first(srv):
    srv.fail_host(0, Fault.S502, after=3)
    assert [get(srv.url(0, f"id/{i}")).status_code for i in range(5)] == [200, 200, 200, 502, 502]
    assert get(srv.url(0, "id/0")).status_code == 502  # from then on every image request, retries too


def test_retry_after_of_a_503_can_be_chosen():
    with FakeIIIF(hosts=1, retry_after=3600) as server:
        url = server.url(0, KEIO_ID)
        server.inject(url, Fault.S503_RETRY_AFTER, times=1)
        response = get(url)
        assert (response.status_code, response.headers["Retry-After"]) == (503, "3600")


def test_flaky_host_fails_every_nth_first_request_and_never_a_retry(srv):
    srv.flaky_host(0, Fault.S500, every=2)
    assert [get(srv.url(0, f"id/{i}")).status_code for i in range(4)] == [200, 500, 200, 500]
    assert get(srv.url(0, "id/1")).status_code == 200  # the 6th request, but a retry: no fault


def test_blackholed_host_accepts_but_never_answers_until_healed(srv):
    srv.blackhole_host(2)
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.get(srv.url(2, KEIO_ID), timeout=0.3)
    assert srv.connections_opened[2] == 1 and srv.requests() == 0
    srv.heal_host(2)
    assert get(srv.url(2, KEIO_ID)).status_code == 200


def test_proxy_forwards_and_refuses_the_hosts_it_is_told_to(srv):
    proxies = {"http": srv.proxy_url}
    url = srv.url(0, KEIO_ID)
    assert requests.get(url, proxies=proxies, timeout=TIMEOUT).content == srv.expected_bytes(url)
    srv.refuse_tunnels(0)
    assert requests.get(url, proxies=proxies, timeout=TIMEOUT).status_code == 502
    assert srv.proxy_log == [("GET", url), ("GET", url)]


# -- dead hosts and TLS --------------------------------------------------------


def test_kill_host_refuses_connections(srv):
    with requests.Session() as session:
        assert session.get(srv.url(1, KEIO_ID), timeout=TIMEOUT).status_code == 200
        srv.kill_host(1)
        with pytest.raises(requests.ConnectionError):
            session.get(srv.url(1, KEIO_ID), timeout=TIMEOUT)
    with pytest.raises(requests.ConnectionError):
        get(srv.url(1, KEIO_ID))
    assert get(srv.url(0, KEIO_ID)).status_code == 200


def test_https_with_trustme(tmp_path):
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))

    with FakeIIIF(hosts=2, ssl_context=context) as server:
        assert all(u.startswith("https://127.0.0.1:") for u in server.base_urls)
        url = server.url(1, KEIO_ID)
        with pytest.raises(requests.exceptions.SSLError):
            get(url)  # untrusted CA: handshake fails, server survives
        with requests.Session() as session:
            # Per request: REQUESTS_CA_BUNDLE in the environment beats session.verify.
            for _ in range(3):
                response = session.get(url, timeout=TIMEOUT, verify=str(ca_file))
                assert response.content == server.expected_bytes(url)
        assert server.connections_opened[1] == 2  # the failed handshake + one reused
        server.inject(url, Fault.RESET, times=1)
        with pytest.raises(requests.ConnectionError):
            get(url, verify=str(ca_file))
