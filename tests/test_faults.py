"""Retries, faults and dead hosts against loopback IIIF hosts: what arrives, what is requested, what is reported."""
from __future__ import annotations

import io
import socket
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from helpers import failures, image_files, make_synthetic, run_cli
from iiif_server import Fault

import kaokore
from kaokore.dataset.metadata import Item
from kaokore.errors import EXIT_INCOMPLETE, EXIT_OK
from kaokore.pipeline.attempt import _transient
from kaokore.pipeline.fetch import make_task, make_tasks
from kaokore.pipeline.records import RetryPolicy
from kaokore.pipeline.session import host_key

FAST = RetryPolicy(backoff_factor=0.01)


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


def test_a_runs_tasks_have_the_hosts_of_their_own_urls():
    """make_tasks parses each server's URL once: every task's politeness key is still its own URL's."""
    urls = ["http://a.example/x", "https://A.example/y", "http://a.example:80/z", "http://a.example:8080/z",
            "http://a.example:8080?q=/w", "http://user@b.example#f/x", "http://b.example", "https://b.example:443/",
            "http://a.example:8080/q", "http://[::1]:9/x", "http://a.example/x?y=http://c.example/"]
    tasks = make_tasks([(Item(i, url), f"{i:08d}.jpg") for i, url in enumerate(urls)], Path("/n"), FAST)
    assert [task.host for task in tasks] == [host_key(url) for url in urls]
    assert [task.host for task in tasks][:4] == ["a.example", "a.example", "a.example", "a.example:8080"]
    assert [task.rel_path for task in tasks] == [f"{i:08d}.jpg" for i in range(len(urls))]


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


def test_retry_after_is_a_floor_and_capped_at_60_s():
    policy = RetryPolicy()  # the defaults: a first backoff of 0.5 s, plus up to half again of jitter

    def delay(retry_after):
        task = make_task(Item(0, "http://h/x"), Path("/n"), "x", policy)
        return _transient(task, policy, "HTTP 429", None, status=429, retry_after=retry_after)

    assert delay(3600).retry_in == 60.0 and delay(3600).host_pause == 60.0  # an hour is not waited for
    assert delay(61).retry_in == 60.0 and delay(59).retry_in == 59.0
    assert delay(2).retry_in == 2.0 and delay(2).host_pause == 2.0
    assert 0.5 <= delay(0).retry_in <= 0.75  # "Retry-After: 0" still backs off


def test_a_503_asking_for_an_hour_is_waited_60_s_by_the_image_and_its_host(tmp_path):
    """The real header, parsed from a real answer, with the default policy; the scheduler's clock
    is a stand-in, so nobody waits the minute."""
    from iiif_server import FakeIIIF

    from kaokore.pipeline.attempt import attempt
    from kaokore.pipeline.scheduler import HostScheduler
    from kaokore.pipeline.session import HttpOptions, make_session

    policy, options = RetryPolicy(), HttpOptions(timeout=10)
    with FakeIIIF(hosts=1, retry_after=3600) as srv, make_session(options, per_host=1) as session:
        urls = [srv.url(0, f"book/page{i}.tif") for i in range(2)]
        srv.inject(urls[0], Fault.S503_RETRY_AFTER, times=1)
        tasks = [make_task(Item(i, url), tmp_path, f"{i:08d}.jpg", policy) for i, url in enumerate(urls)]
        now = [1000.0]
        scheduler = HostScheduler(tasks, 4, policy, Sink(), clock=lambda: now[0])
        first = scheduler.next_turn().task
        answer = attempt(session, first, options, policy, "split")
        assert (answer.error, answer.retry_in, answer.host_pause) == ("HTTP 503", 60.0, 60.0)
        scheduler.finish(first, answer)
        turn = scheduler.next_turn()
        # Not even the other image goes to the host before the minute is up.
        assert turn.task is None and turn.wake_at == 1060.0
        now[0] = 1060.0
        assert scheduler.next_turn().task is not None


class Sink:
    def stored(self, row) -> None:
        pass

    def failed(self, failure) -> None:
        raise AssertionError(failure)

    def given_up(self, host, reason, not_attempted) -> None:
        raise AssertionError(reason)


def test_a_503_with_retry_after_is_waited_by_its_host(tmp_path):
    """A server in maintenance says how long: neither the image nor any other of its host is asked
    again before then, while the other hosts go on. Ordered by when the server saw each request."""
    from iiif_server import FakeIIIF

    with FakeIIIF(hosts=3, retry_after=1) as srv:
        synth = make_synthetic(srv, tmp_path, n=24, blank=(), unlabeled=())
        url = synth.urls[0]  # host 0
        srv.inject(url, Fault.S503_RETRY_AFTER, times=1)
        summary = kaokore.download(tmp_path / "data", metadata_dir=synth.meta_dir, quiet=True, policy=FAST,
                                   per_host=1)
        assert summary.exit_status == EXIT_OK and srv.requests(url) == 2
        log, times = srv.request_log, srv.request_times
        refused = next(k for k, (host, path) in enumerate(log) if url.endswith(path))
        later_on_host0 = [times[k] for k, (host, path) in enumerate(log) if host == 0 and k > refused]
        # One request at a time to the host: everything after the 503 was asked once its answer was in.
        assert later_on_host0 and min(later_on_host0) - times[refused] >= 1.0  # our own backoff: ~10 ms
        assert any(host != 0 and times[refused] < t < min(later_on_host0)
                   for (host, _), t in zip(log, times))  # the other hosts did not wait
    assert_server_bytes(srv, tmp_path / "data", synth.urls, synth.urls)


def test_429_waits_for_retry_after_and_holds_back_only_its_own_host(srv, synth, tmp_path):
    url = synth.urls[0]  # host 0
    srv.inject(url, Fault.S429, times=1)  # Retry-After: 1
    summary = kaokore.download(tmp_path / "data", metadata_dir=synth.meta_dir, quiet=True, policy=FAST)
    assert summary.exit_status == EXIT_OK
    assert srv.requests(url) == 2
    log, times = srv.request_log, srv.request_times
    asked = [t for (_, path), t in zip(log, times) if url.endswith(path)]
    assert asked[1] - asked[0] >= 1.0  # our own backoff alone would be ~10 ms
    # The other hosts were served while host 0 waited.
    assert any(host != 0 and asked[0] < t < asked[1] for (host, _), t in zip(log, times))


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


def test_400_403_404_and_410_are_final_one_request_each(srv, tmp_path):
    """An answer that will not change by asking again: one request, and failures.csv says which answer.
    One refused image among good ones on each host, so no host looks failing."""
    synth = make_synthetic(srv, tmp_path, n=24, blank=(), unlabeled=())
    refused = {4: Fault.S400, 8: Fault.S403, 12: Fault.S404, 16: Fault.S410}  # hosts 1, 2, 0, 1
    for i, fault in refused.items():
        srv.inject(synth.urls[i], fault)  # every time it is asked
    root = tmp_path / "data"

    summary = kaokore.download(root, metadata_dir=synth.meta_dir, quiet=True, policy=FAST)

    assert summary.exit_status == EXIT_INCOMPLETE and summary.hosts_unreachable == []
    assert [srv.requests(synth.urls[i]) for i in refused] == [1, 1, 1, 1]
    # The status, and for a 403 what usually causes it (the number alone leaves a user guessing).
    forbidden = ("HTTP 403 (forbidden: usually a proxy or firewall in between, "
                 "or a server blocking this User-Agent or address)")
    assert {name: (r["error"], r["attempts"]) for name, r in failures(root).items()} == {
        "00000004.jpg": ("HTTP 400", "1"), "00000008.jpg": (forbidden, "1"),
        "00000012.jpg": ("HTTP 404", "1"), "00000016.jpg": ("HTTP 410", "1")}
    assert_server_bytes(srv, root, synth.urls, [i for i in synth.urls if i not in refused])


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

    # 2 s: far beyond a loopback answer even on a loaded machine, so only the stalls time out
    # (a normal answer timing out would change the counts below).
    summary = kaokore.download(tmp_path / "data", metadata_dir=synth.meta_dir, timeout=2.0, per_host=4,
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
    # 8 images refused (a refusal costs the server nothing: the host keeps its 4 slots), plus at most
    # the 3 asked next to the 8th (docs/reliability.md).
    assert sum(int(r["attempts"]) for r in failed.values()) <= 11
    unreachable = [r for r in failed.values() if r["error"].startswith("host unreachable")]
    if retries == "5":
        assert len(unreachable) == len(dead)
    else:  # each failure is final, yet the breaker still spares the rest of the host
        assert len(unreachable) >= len(dead) - 8
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
    # 8 images in a row, plus at most the 3 asked next to the 8th. A normal answer from the other
    # hosts timing out on a loaded machine would only be retried: the 1 s timeout decides nothing here.
    assert 8 <= srv.connections_opened[2] <= 11 < len(behind)

    srv.heal_host(2)  # the host is back
    srv.reset_stats()
    summary = kaokore.download(root, metadata_dir=synth.meta_dir, timeout=timeout, policy=FAST, quiet=True)
    assert summary.exit_status == EXIT_OK
    assert len(srv.request_log) == len(behind)
    assert_server_bytes(srv, root, urls, urls)
    assert not (root / "failures.csv").exists()


def test_an_overloaded_host_is_slowed_as_a_whole_then_given_up_after_32_answers(srv, tmp_path):
    """503s without Retry-After on every image of one host: the host is paused as a whole
    (not just each image) and given up after 32 answers (docs/reliability.md), not after
    every image has used up its own retries. Only the pauses are shortened here."""
    synth = make_synthetic(srv, tmp_path, n=60, blank=(), unlabeled=())
    overloaded = [url for i, url in synth.urls.items() if i % 3 == 0]
    for url in overloaded:
        srv.inject(url, Fault.S503)  # forever
    policy = RetryPolicy(backoff_factor=0.01, host_pause_max=0.05)
    summary = kaokore.download(tmp_path / "data", metadata_dir=synth.meta_dir, quiet=True, policy=policy)
    assert summary.exit_status == EXIT_INCOMPLETE
    assert summary.downloaded == 40 and summary.failed == 20
    assert summary.hosts_unreachable == [host_key(srv.base_urls[0])]
    asked = sum(srv.requests(url) for url in overloaded)
    # Without the host-level rule: 20 images x 6 attempts = 120 requests. Each answer halves the
    # host's 4 slots, so the 32nd comes with nothing else in flight.
    assert asked == 32
    verdict = "host overloaded (32 answers 429/503 in a row; last: HTTP 503)"
    errors = Counter(f.error for f in summary.failures)
    # Retries come first on a host that is only busy: a few images ran out of their 6 tries before the verdict.
    assert set(errors) <= {verdict, "HTTP 503"} and errors[verdict] >= 20 - 32 // 6


def test_a_body_trickling_in_is_cut_off_at_four_timeouts(srv):
    """Each byte arrives within --timeout, so no read times out; the whole-body deadline must.

    The whole body takes at least 100 x 0.04 s = 4 s: that SlowResponse is raised at all shows it was
    cut off first, at 4 x 0.75 s (a body that arrives complete is returned, however late). A byte
    would have to come 19 times later than sent for a read to time out instead."""
    from iiif_server import FakeIIIF

    from kaokore.pipeline.session import HttpOptions, SlowResponse, get_body, make_session

    with FakeIIIF(hosts=1, trickle_interval=0.04) as server:
        url = server.url(0, "book/page.tif")
        server.inject(url, Fault.TRICKLE)
        options = HttpOptions(timeout=0.75)
        with make_session(options, per_host=1) as session, pytest.raises(SlowResponse, match="after 3s"):
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
        # A normal answer that took longer than 0.5 s on a loaded machine would be one timeout more
        # in the run, which the 16 images it takes to give up a live host absorb: the clock decides nothing.
        summary = kaokore.download(tmp_path / "data", metadata_dir=synth.meta_dir, timeout=0.5, threads=3,
                                   per_host=1, policy=FAST, quiet=True)
        assert summary.hosts_unreachable == []
        assert summary.exit_status == EXIT_OK and summary.downloaded == 90
