"""Retries, faults and dead hosts against loopback IIIF hosts: what arrives, what is requested, what is reported."""
from __future__ import annotations

import csv
import io
import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from helpers import image_files, make_synthetic, run_cli
from iiif_server import Fault

import kaokore
from kaokore.errors import EXIT_INCOMPLETE, EXIT_OK
from kaokore.fetch import RetryPolicy, _transient, make_task
from kaokore.metadata import Item
from kaokore.session import host_key

FAST = RetryPolicy(backoff_factor=0.01)


def failures(root: Path) -> dict[str, dict]:
    path = root / "failures.csv"
    if not path.exists():
        return {}
    return {r["image"]: r for r in csv.DictReader(open(path, newline=""))}


def assert_server_bytes(srv, root: Path, urls: dict[int, str], indices) -> None:
    """Each image is on disk with exactly the bytes the server renders for its URL (none truncated, none mixed up)."""
    files = image_files(root)
    for i in indices:
        name = f"{i:08d}.jpg"
        assert name in files, f"{name} missing"
        assert files[name].read_bytes() == srv.expected_bytes(urls[i]), f"{name} differs from its URL's image"


def hold_port(base_url: str) -> socket.socket:
    """Keep a killed host's port refusing connections and out of other processes' hands.

    Other test runs share this machine; one of their servers given the freed port would
    answer in the dead host's place (and count our requests as its own)."""
    sock = socket.socket()  # no SO_REUSEADDR, so no server can bind the port alongside it
    sock.bind(("127.0.0.1", int(base_url.rsplit(":", 1)[1])))  # bound, never listening: refused
    return sock


# --------------------------------------------------------------------------
# Retry discipline
# --------------------------------------------------------------------------


def test_backoff_doubles_with_jitter_up_to_its_cap():
    policy = RetryPolicy(retries=8, backoff_factor=0.5, backoff_max=3.0)
    task = make_task(Item(0, "http://127.0.0.1:1/x"), Path("/nonexistent"), "x.jpg", policy)
    delays = []
    for _ in range(6):
        delays.append(_transient(task, policy, "HTTP 503", None).retry_in)
    for delay, base in zip(delays, (0.5, 1.0, 2.0, 3.0, 3.0, 3.0)):
        assert base <= delay <= base * 1.5
    many = {_transient(make_task(Item(0, "http://h/x"), Path("/n"), "x", policy), policy, "e", None).retry_in
            for _ in range(20)}
    assert len(many) > 1  # jittered: clients that failed together do not come back together


def test_retry_after_is_a_floor_and_capped():
    policy = RetryPolicy(backoff_factor=0.01, retry_after_cap=5.0)

    def delay(retry_after):
        task = make_task(Item(0, "http://h/x"), Path("/n"), "x", policy)
        return _transient(task, policy, "HTTP 429", None, status=429, retry_after=retry_after)

    assert delay(3600).retry_in == 5.0 and delay(3600).host_pause == 5.0  # an hour is not waited for
    assert delay(2).retry_in == 2.0
    assert 0.01 <= delay(0).retry_in  # "Retry-After: 0" still backs off


def test_429_waits_for_retry_after_and_holds_back_only_its_own_host(srv, synth, tmp_path):
    url = synth.urls[0]  # host 0
    srv.inject(url, Fault.S429, times=1)  # Retry-After: 1
    started = time.monotonic()
    summary = kaokore.download(tmp_path / "data", metadata_dir=synth.meta_dir, quiet=True, policy=FAST)
    assert summary.exit_status == EXIT_OK
    assert srv.requests(url) == 2
    assert time.monotonic() - started >= 1.0  # our own backoff alone would be ~10 ms
    log = srv.request_log
    retry_at = max(i for i, (_, path) in enumerate(log) if url.endswith(path))
    others = [i for i, (host, _) in enumerate(log) if host != 0]
    assert others and max(others) < retry_at  # hosts 1 and 2 finished while host 0 waited


def test_a_waiting_retry_holds_no_worker(srv, tmp_path):
    """One worker, one image in backoff: every other image is fetched before its retry."""
    synth = make_synthetic(srv, tmp_path, n=12, blank=(), unlabeled=())  # ~0.1 s of work against a 1 s backoff
    url = synth.urls[0]
    srv.inject(url, Fault.S503, times=1)
    summary = kaokore.download(tmp_path / "data", metadata_dir=synth.meta_dir, quiet=True, threads=1, per_host=1,
                               policy=RetryPolicy(backoff_factor=1.0))
    assert summary.exit_status == EXIT_OK
    paths = [path for _, path in srv.request_log]
    assert len(paths) == len(synth.urls) + 1
    assert paths.count(urlsplit(url).path) == 2 and paths[-1] == urlsplit(url).path  # its retry came last


def test_bad_bodies_are_bounded_permanent_errors_final_and_retries_run_out(srv, tmp_path):
    synth = make_synthetic(srv, tmp_path, n=12, blank=(), unlabeled=())
    garbage, html, outside, bad_request, always_503 = 0, 1, 2, 3, 4
    # iipsrv's quirk: a region outside the page is a 200 "image/jpeg" of error text.
    urls = dict(synth.urls)
    urls[outside] = srv.url(outside % 3, "book/page.tif", region="9000,9000,300,300")
    urls[bad_request] = urls[bad_request].replace("/0/default.jpg", "/90/default.jpg")  # HTTP 400
    synth.rewrite("urls.txt", ("\n".join(urls[i] for i in range(12)) + "\n").encode())
    srv.inject(urls[garbage], Fault.GARBAGE200)
    srv.inject(urls[html], Fault.HTML200, times=2)
    srv.inject(urls[always_503], Fault.S503)

    summary = kaokore.download(tmp_path / "data", metadata_dir=synth.meta_dir, quiet=True, retries=3,
                               policy=RetryPolicy(retries=3, backoff_factor=0.01, bad_body_tries=3))
    assert summary.exit_status == EXIT_INCOMPLETE
    # A transient failure that runs out of tries on a host that delivers other images gets one
    # more round at the end (3 + 3 bad bodies, 4 + 4 answers 503); a 400 is final at once.
    assert [srv.requests(urls[i]) for i in (garbage, html, outside, bad_request, always_503)] == [6, 3, 6, 1, 8]
    failed = failures(tmp_path / "data")
    assert sorted(failed) == [f"{i:08d}.jpg" for i in (garbage, outside, bad_request, always_503)]
    assert failed[f"{garbage:08d}.jpg"]["error"].startswith("body is not an image")
    assert failed[f"{bad_request:08d}.jpg"]["error"] == "HTTP 400"
    assert (failed[f"{always_503:08d}.jpg"]["error"], failed[f"{always_503:08d}.jpg"]["attempts"]) == ("HTTP 503", "8")
    assert_server_bytes(srv, tmp_path / "data", urls, [html, *range(5, 12)])


@pytest.mark.parametrize("retries, expected", [(2, EXIT_OK), (0, EXIT_INCOMPLETE)])
def test_an_image_unlucky_on_a_flaky_host_gets_one_more_round_unless_retries_is_0(srv, tmp_path, retries, expected):
    synth = make_synthetic(srv, tmp_path, n=12, blank=(), unlabeled=())
    unlucky = synth.urls[0]
    srv.inject(unlucky, Fault.S500, times=retries + 1)  # every try of its first round fails
    summary = kaokore.download(tmp_path / "data", metadata_dir=synth.meta_dir, quiet=True,
                               policy=RetryPolicy(retries=retries, backoff_factor=0.01))
    assert summary.exit_status == expected
    assert srv.requests(unlucky) == (retries + 2 if retries else 1)
    if expected == EXIT_OK:
        assert (tmp_path / "data" / "train" / synth.name(0)).read_bytes() == srv.expected_bytes(unlucky)


# --------------------------------------------------------------------------
# Every transient fault at once
# --------------------------------------------------------------------------

TRANSIENT = (Fault.S503, Fault.S500, Fault.RESET, Fault.TRUNCATED, Fault.HTML200, Fault.GARBAGE200)
PERMANENT_404 = (10, 51, 131, 212, 299)  # on every host, none of them otherwise faulted
THROTTLED = (7, 8, 9)  # one 429 per host, so the Retry-After pauses overlap


def fault_plan(urls: dict[int, str]) -> dict[int, list[tuple[Fault, int]]]:
    """Deterministic: each transient kind on its own fifteenth of the images, once or twice; some mixed."""
    plan: dict[int, list[tuple[Fault, int]]] = {}
    for i in urls:
        kind, times = i % 20, 1 + (i // 20) % 2
        if kind < len(TRANSIENT):
            plan[i] = [(TRANSIENT[kind], times)]
        elif kind == len(TRANSIENT):
            plan[i] = [(Fault.S503, 1), (Fault.TRUNCATED, 1), (Fault.GARBAGE200, 1)]
    for i in THROTTLED:
        plan[i] = [(Fault.S429, 1)]
    return plan


def test_every_transient_fault_across_300_urls_loses_nothing(srv, tmp_path):
    synth = make_synthetic(srv, tmp_path, n=300, blank=(), unlabeled=())
    # make_synthetic's regions leave the 2000-pixel page after image 200; keep every crop on its page.
    synth.urls = {i: srv.url(i % 3, f"book{i % 3}/page{i // 5}.tif", region=f"{10 * (i % 160)},{20 + i // 160},300,300")
                  for i in range(300)}
    synth.rewrite("urls.txt", ("\n".join(synth.urls[i] for i in range(300)) + "\n").encode())
    plan = fault_plan(synth.urls)
    for i, faults in plan.items():
        for fault, times in faults:
            srv.inject(synth.urls[i], fault, times=times)
    for i in PERMANENT_404:
        srv.inject(synth.urls[i], Fault.S404)
    root = tmp_path / "data"

    summary = kaokore.download(root, metadata_dir=synth.meta_dir, quiet=True, threads=12, per_host=3, policy=FAST)

    assert summary.exit_status == EXIT_INCOMPLETE
    good = [i for i in synth.urls if i not in PERMANENT_404]
    assert (summary.downloaded, summary.failed) == (len(good), len(PERMANENT_404))
    assert_server_bytes(srv, root, synth.urls, good)
    assert len(image_files(root)) == len(good)
    # Each faulted image was asked exactly once per fault plus once more: retried, never abandoned early.
    for i, faults in plan.items():
        assert srv.requests(synth.urls[i]) == sum(t for _, t in faults) + 1, (i, faults)
    assert [srv.requests(synth.urls[i]) for i in PERMANENT_404] == [1] * len(PERMANENT_404)  # never retried
    assert {(r["image"], r["url"], r["error"], r["attempts"]) for r in failures(root).values()} == {
        (f"{i:08d}.jpg", synth.urls[i], "HTTP 404", "1") for i in PERMANENT_404}
    assert max(srv.peak_concurrency.values()) <= 3
    assert summary.hosts_unreachable == []

    srv.reset_stats()
    again = kaokore.download(root, metadata_dir=synth.meta_dir, quiet=True, threads=12, per_host=3, policy=FAST)
    assert again.exit_status == EXIT_INCOMPLETE
    assert sorted(path for _, path in srv.request_log) == sorted(urlsplit(synth.urls[i]).path for i in PERMANENT_404)
    assert set(failures(root)) == {f"{i:08d}.jpg" for i in PERMANENT_404}


# --------------------------------------------------------------------------
# The dead-host breaker
# --------------------------------------------------------------------------


def test_stalls_and_resets_on_a_live_host_do_not_trip_the_breaker(srv, tmp_path):
    synth = make_synthetic(srv, tmp_path, n=45, blank=(), unlabeled=())
    # Host 0's last three images stall three times each: once everything else is done they
    # time out back to back, nine connection-level failures in a row with no answer between.
    tail = (36, 39, 42)
    for i in tail:
        srv.inject(synth.urls[i], Fault.STALL, times=3)
    for i, times in ((1, 1), (5, 2), (9, 1)):
        srv.inject(synth.urls[i], Fault.STALL, times=times)
    for i in (3, 4, 6, 8, 10, 20, 25):
        srv.inject(synth.urls[i], Fault.RESET, times=2)
    err = io.StringIO()

    summary = kaokore.download(tmp_path / "data", metadata_dir=synth.meta_dir, timeout=1.0, per_host=4,
                               policy=FAST, stream=err)

    assert summary.exit_status == EXIT_OK, failures(tmp_path / "data")
    assert summary.hosts_unreachable == [] and "unreachable" not in err.getvalue()
    assert [srv.requests(synth.urls[i]) for i in tail] == [4, 4, 4]
    assert_server_bytes(srv, tmp_path / "data", synth.urls, synth.urls)


@pytest.mark.parametrize("retries", ["5", "0"])
def test_a_dead_host_is_given_up_quickly_and_named_once(srv, tmp_path, capsys, retries):
    synth = make_synthetic(srv, tmp_path, n=60, blank=(), unlabeled=())
    dead = [i for i in synth.urls if i % 3 == 2]
    srv.kill_host(2)
    with hold_port(srv.base_urls[2]):
        code, _, err = run_cli(capsys, "download", "--dir", str(tmp_path / "data"), "--metadata-dir",
                               str(synth.meta_dir), "--quiet", "--timeout", "2", "--retries", retries)
    assert code == EXIT_INCOMPLETE
    assert_server_bytes(srv, tmp_path / "data", synth.urls, [i for i in synth.urls if i not in dead])
    failed = failures(tmp_path / "data")
    assert sorted(failed) == [f"{i:08d}.jpg" for i in dead]
    # Given up after a short run, not image by image: attempts are counted per image in failures.csv.
    assert sum(int(r["attempts"]) for r in failed.values()) <= RetryPolicy().breaker_threshold + 4
    unreachable = [r for r in failed.values() if r["error"].startswith("host unreachable")]
    if retries == "5":
        assert len(unreachable) == len(dead)
    else:  # each failure is final, yet the breaker still spares the rest of the host
        assert len(unreachable) >= len(dead) - RetryPolicy().breaker_threshold
    host = host_key(srv.base_urls[2])
    # One line as it happens (not one per image), and the final summary line names the host too.
    lines = [line for line in err.splitlines() if "host unreachable" in line]
    assert len(lines) == 1 and host in lines[0]
    assert f"given up: {host}" in err.strip().splitlines()[-1]
    assert "Traceback" not in err


def test_a_blackholed_host_ends_the_run_within_a_few_timeouts_and_the_next_run_tries_it_again(srv, tmp_path):
    synth = make_synthetic(srv, tmp_path, n=45, blank=(), unlabeled=())
    urls = synth.urls
    srv.blackhole_host(2)  # connections are accepted, requests never answered
    behind = [i for i in urls if i % 3 == 2]
    root, timeout, err = tmp_path / "data", 1.0, io.StringIO()

    summary = kaokore.download(root, metadata_dir=synth.meta_dir, timeout=timeout, policy=FAST, stream=err)

    assert summary.exit_status == EXIT_INCOMPLETE
    assert summary.hosts_unreachable == [host_key(srv.base_urls[2])]
    assert_server_bytes(srv, root, urls, [i for i in urls if i not in behind])
    failed = failures(root)
    assert sorted(failed) == [f"{i:08d}.jpg" for i in behind]
    assert all(r["error"].startswith("host unreachable") for r in failed.values())
    assert len([line for line in err.getvalue().splitlines() if "host unreachable" in line]) == 1
    assert f"given up: {host_key(srv.base_urls[2])}" in err.getvalue().strip().splitlines()[-1]
    # Given up after a few rounds of timeouts, not waited out image by image.
    assert srv.connections_opened[2] <= RetryPolicy().breaker_threshold + 4 < len(behind)

    srv.heal_host(2)  # the host is back
    srv.reset_stats()
    summary = kaokore.download(root, metadata_dir=synth.meta_dir, timeout=timeout, policy=FAST, quiet=True)
    assert summary.exit_status == EXIT_OK
    assert len(srv.request_log) == len(behind)
    assert_server_bytes(srv, root, urls, urls)
    assert not (root / "failures.csv").exists()


def test_an_overloaded_host_is_slowed_as_a_whole_then_given_up(srv, tmp_path):
    """503s without Retry-After on every image of one host: the host is paused as a whole
    (not just each image) and given up after a bounded number of answers, not after
    every image has used up its own retries."""
    synth = make_synthetic(srv, tmp_path, n=60, blank=(), unlabeled=())
    overloaded = [url for i, url in synth.urls.items() if i % 3 == 0]
    for url in overloaded:
        srv.inject(url, Fault.S503)  # forever
    policy = RetryPolicy(backoff_factor=0.01, host_pause_max=0.05, overload_threshold=6)
    summary = kaokore.download(tmp_path / "data", metadata_dir=synth.meta_dir, quiet=True, policy=policy)
    assert summary.exit_status == EXIT_INCOMPLETE
    assert summary.downloaded == 40 and summary.failed == 20
    assert summary.hosts_unreachable == [host_key(srv.base_urls[0])]
    asked = sum(srv.requests(url) for url in overloaded)
    # Without the host-level rule: 20 images x 6 attempts = 120 requests.
    assert asked <= policy.overload_threshold + 4
    assert all("host overloaded" in f.error for f in summary.failures)


def test_a_body_trickling_in_is_cut_off_at_four_timeouts(srv):
    """Each byte arrives within --timeout, so no read times out; the whole-body deadline must.

    The whole body would take 100 x 0.1 s = 10 s: that SlowResponse is raised at all shows it was
    cut off first (a body that arrives complete is returned, however late)."""
    from kaokore.session import HttpOptions, SlowResponse, get_body, make_session

    url = srv.url(0, "book/page.tif")
    srv.inject(url, Fault.TRICKLE)  # a byte every 0.1 s
    options = HttpOptions(timeout=0.3)
    with make_session(options, per_host=1) as session, pytest.raises(SlowResponse, match="after 1.2s"):
        get_body(session, url, options)


def test_a_stalled_page_on_a_live_host_does_not_take_the_host_down(tmp_path):
    """Faces of one scroll page come in a row; a page that renders too slowly stalls all of them.
    The host answered before, so 8 stalled images in a row are a slow page, not a dead host."""
    from iiif_server import FakeIIIF

    with FakeIIIF(hosts=3, stall_seconds=3) as srv:
        synth = make_synthetic(srv, tmp_path, n=90, blank=(), unlabeled=())
        host0 = [i for i in sorted(synth.urls) if i % 3 == 0]
        stalled = host0[10:19]  # 9 in a row, after the host has answered
        for i in stalled:
            srv.inject(synth.urls[i], Fault.STALL, times=1)
        summary = kaokore.download(tmp_path / "data", metadata_dir=synth.meta_dir, timeout=0.5, threads=3,
                                   per_host=1, policy=FAST, quiet=True)
        assert summary.hosts_unreachable == []
        assert summary.exit_status == EXIT_OK and summary.downloaded == 90
