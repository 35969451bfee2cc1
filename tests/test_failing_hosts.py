"""A host that fails every request, whatever the way it fails, costs a bounded number of requests;
a flaky host that works most of the time loses nothing. Loopback hosts only."""
from __future__ import annotations

import io
import re
import ssl
from pathlib import Path

import pytest

from helpers import failure_errors, image_files, make_synthetic, one_bad_page
from iiif_server import FakeIIIF, Fault

import kaokore
from kaokore.errors import EXIT_INCOMPLETE, EXIT_OK
from kaokore.pipeline.records import RetryPolicy
from kaokore.pipeline.session import host_key

N = 180  # 60 images per host; make_synthetic's regions stay on their page below 200
FAILING, FLAKY = 0, 1
# Short pauses keep the suite quick; the counts below come from the breaker, not from the clock.
QUICK = RetryPolicy(backoff_factor=0.01, host_pause_max=0.1)
# docs/reliability.md: a host that fails every request gets 8 requests (11 CONNECTs through a proxy),
# and a host that delivered images this run gets 16 failures in a row. Written out, not read from
# RetryPolicy: changing one means changing the docs and these together.
NEVER_DELIVERED = 8
THROUGH_A_PROXY = 11
DELIVERED = 16


def image_requests(srv: FakeIIIF, host: int) -> int:
    return sum(1 for h, path in srv.request_log if h == host and path.startswith("/iiif/"))


def assert_only_the_failing_host_lost(srv, synth, root: Path, summary, failing: int, reason: str) -> None:
    assert summary.exit_status == EXIT_INCOMPLETE
    lost = sorted(synth.name(i) for i in synth.urls if i % 3 == failing)
    failed = failure_errors(root)
    assert sorted(failed) == lost  # every image of that host is named, and nothing else
    assert all(reason in error for error in failed.values()), set(failed.values())
    files = image_files(root)
    for i, url in synth.urls.items():
        if i % 3 != failing:
            assert files[synth.name(i)].read_bytes() == srv.expected_bytes(url)
    assert summary.hosts_unreachable == [host_key(srv.base_urls[failing])]


@pytest.mark.parametrize("fault, delay, reason", [
    (Fault.CUT, 0.0, "host failing: connection error: "),
    (Fault.RESET, 0.0, "host failing: connection error: "),
    (Fault.S500, 0.0, "host failing: HTTP 500 on 8 images in a row"),
    (Fault.S500, 0.1, "host failing: HTTP 500 on 8 images in a row"),
    (Fault.S502, 0.0, "host failing: HTTP 502 on 8 images in a row"),
    (Fault.S504, 0.0, "host failing: HTTP 504 on 8 images in a row"),
    (Fault.HTML200, 0.0, "host failing: body is not an image (HTML"),
    (Fault.EMPTY200, 0.0, "host failing: body is not an image"),
    (Fault.TRUNCATED, 0.0, "host failing: incomplete response"),
], ids=["cut", "reset", "500", "500-after-100ms", "502", "504", "html-200", "empty-200", "truncated"])
def test_a_host_failing_every_request_gets_8_requests(srv, tmp_path, fault, delay, reason):
    synth = make_synthetic(srv, tmp_path, n=N, blank=(), unlabeled=())
    srv.fail_host(FAILING, fault, delay=delay)
    root, err = tmp_path / "data", io.StringIO()

    summary = kaokore.download(root, metadata_dir=synth.meta_dir, policy=QUICK, stream=err)

    # 4 at once (--per-host), each failure halving the host's slots, then one at a time up to the 8th
    # image: never one more. Without the breaker: 60 images x 6 attempts.
    assert image_requests(srv, FAILING) == NEVER_DELIVERED
    assert_only_the_failing_host_lost(srv, synth, root, summary, FAILING, reason)
    notes = [line for line in err.getvalue().splitlines() if "host failing" in line]
    assert len(notes) == 1 and host_key(srv.base_urls[FAILING]) in notes[0]  # said once, as it happens


def test_with_no_retries_a_failing_host_still_costs_one_run_not_one_request_per_image(srv, tmp_path):
    synth = make_synthetic(srv, tmp_path, n=N, blank=(), unlabeled=())
    srv.fail_host(FAILING, Fault.S500)
    root = tmp_path / "data"
    summary = kaokore.download(root, metadata_dir=synth.meta_dir, policy=QUICK, retries=0, quiet=True)
    assert image_requests(srv, FAILING) == NEVER_DELIVERED
    assert summary.exit_status == EXIT_INCOMPLETE and len(failure_errors(root)) == N // 3


def test_a_flaky_host_loses_nothing_next_to_a_failing_one_with_default_options(srv, tmp_path):
    """What a user gets by default: the failing host is given up, the flaky one (one in five
    first requests fails, in every way a request can) is slowed a little and completes."""
    synth = make_synthetic(srv, tmp_path, n=N, blank=(), unlabeled=())
    srv.fail_host(FAILING, Fault.S500)
    srv.flaky_host(FLAKY, Fault.RESET, every=5)
    root = tmp_path / "data"

    summary = kaokore.download(root, metadata_dir=synth.meta_dir, quiet=True)

    assert image_requests(srv, FAILING) == NEVER_DELIVERED
    assert N // 3 < image_requests(srv, FLAKY) <= N // 3 * 5 // 4  # each failed first request retried once
    assert_only_the_failing_host_lost(srv, synth, root, summary, FAILING, "host failing: HTTP 500")


@pytest.mark.parametrize("fault", [Fault.S500, Fault.CUT, Fault.HTML200, Fault.S503, Fault.TRUNCATED])
def test_a_20_percent_flaky_host_completes(srv, tmp_path, fault):
    synth = make_synthetic(srv, tmp_path, n=N, blank=(), unlabeled=())
    srv.flaky_host(FLAKY, fault, every=5)
    root = tmp_path / "data"
    summary = kaokore.download(root, metadata_dir=synth.meta_dir, policy=QUICK, quiet=True)
    assert summary.exit_status == EXIT_OK and summary.hosts_unreachable == []
    # The failures happened (every fifth request, if its URL's first) and were retried, once each.
    assert N // 3 < image_requests(srv, FLAKY) <= N // 3 * 5 // 4
    files = image_files(root)
    assert all(files[synth.name(i)].read_bytes() == srv.expected_bytes(url) for i, url in synth.urls.items())


@pytest.mark.parametrize("per_host", [1, 4])
def test_a_host_that_delivered_this_run_then_fails_gets_16_failures_in_a_row(srv, tmp_path, per_host):
    """The host answers its first 10 image requests, then fails every one, in the same run:
    given up after 16 images in a row (not 8), and the 10 images it gave are kept."""
    synth = make_synthetic(srv, tmp_path, n=N, blank=(), unlabeled=())
    srv.fail_host(FAILING, Fault.S502, after=10)
    root = tmp_path / "data"

    summary = kaokore.download(root, metadata_dir=synth.meta_dir, policy=QUICK, quiet=True, per_host=per_host)

    failed_requests = image_requests(srv, FAILING) - 10
    if per_host == 1:
        assert failed_requests == DELIVERED  # one request at a time: exactly the run
    else:
        # The run counts from the last image delivered: up to 1 + 2 + 3 = 6 requests, in flight next to
        # the host's last good answers (4 slots, halved by each failure), may fail before that one lands.
        assert DELIVERED <= failed_requests <= DELIVERED + 6
    assert summary.exit_status == EXIT_INCOMPLETE and summary.downloaded == N - N // 3 + 10
    assert summary.hosts_unreachable == [host_key(srv.base_urls[FAILING])]
    failed = failure_errors(root)
    assert len(failed) == N // 3 - 10 and all("HTTP 502 on 16 images in a row" in e for e in failed.values())
    kept = [i for i in synth.urls if i % 3 == FAILING and synth.name(i) not in failed]
    files = image_files(root)
    assert len(kept) == 10 and all(files[synth.name(i)].read_bytes() == srv.expected_bytes(synth.urls[i])
                                   for i in kept)


# --------------------------------------------------------------------------
# Behind a proxy
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    path = tmp_path_factory.mktemp("pki") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    return context, str(path)


def test_a_host_the_proxy_cannot_reach_is_named_as_such_and_given_up(pki, tmp_path, monkeypatch):
    context, ca = pki
    with FakeIIIF(hosts=3, ssl_context=context) as srv:
        synth = make_synthetic(srv, tmp_path, n=N, blank=(), unlabeled=())
        srv.refuse_tunnels(FAILING)  # 502 Bad Gateway to CONNECT: the proxy works, the host does not
        monkeypatch.setenv("HTTPS_PROXY", srv.proxy_url)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        root = tmp_path / "data"

        summary = kaokore.download(root, metadata_dir=synth.meta_dir, policy=QUICK, quiet=True, verify=ca)

        failing = host_key(srv.base_urls[FAILING])
        tunnels = [target for method, target in srv.proxy_log if method == "CONNECT" and target == failing]
        # A refusal costs the server nothing, so the host keeps its 4 slots: the 8th image refused,
        # plus the 3 tunnels asked for next to it.
        assert NEVER_DELIVERED <= len(tunnels) <= THROUGH_A_PROXY
        assert_only_the_failing_host_lost(srv, synth, root, summary, FAILING,
                                          f"proxy could not reach {failing}: 502 Bad Gateway")
        assert not any("Unable to connect to proxy" in f.error for f in summary.failures)


def test_one_broken_page_on_a_live_host_fails_its_faces_not_the_host(srv, tmp_path):
    """30 faces in a row cut from one page whose source is broken (500 for every crop): those
    faces fail, the host is not given up, and every other image of the host arrives."""
    broken = range(40, 70)
    synth = one_bad_page(srv, tmp_path, "book0/broken.tif", Fault.S500, broken)
    urls = synth.urls
    root = tmp_path / "data"
    summary = kaokore.download(root, metadata_dir=synth.meta_dir, policy=QUICK, quiet=True)
    assert summary.exit_status == EXIT_INCOMPLETE
    # Once only the broken page's retries are left the host may be given up: they are all that fails.
    assert sorted(failure_errors(root)) == [synth.name(i) for i in broken]
    files = image_files(root)
    assert all(files[synth.name(i)].read_bytes() == srv.expected_bytes(urls[i]) for i in range(120) if i not in broken)


def test_a_host_failing_in_two_ways_is_given_up_naming_both_with_their_counts(srv, tmp_path):
    # The failure kinds come from the one transport classifier, not from the tests' own Attempts:
    # 500 and 502 by turns, from a real server, are counted apart and both named.
    synth = make_synthetic(srv, tmp_path, n=N, blank=(), unlabeled=())
    mine = sorted(i for i in synth.urls if i % 3 == FAILING)
    for turn, i in enumerate(mine):
        srv.inject(synth.urls[i], Fault.S500 if turn % 2 == 0 else Fault.S502)
    root = tmp_path / "data"

    summary = kaokore.download(root, metadata_dir=synth.meta_dir, policy=QUICK, per_host=1, quiet=True)

    assert image_requests(srv, FAILING) == 8  # one slot: 8 images, each failing once, final or not
    assert_only_the_failing_host_lost(srv, synth, root, summary, FAILING, "host failing: 8 images in a row failed")
    both = re.compile(r"\((HTTP 50[02] [0-9]x, HTTP 50[02] [0-9]x)\)")
    counts = {both.search(error).group(1) for error in failure_errors(root).values()}
    assert len(counts) == 1
    named = [part.rsplit(" ", 1) for part in counts.pop().split(", ")]
    assert {kind for kind, _ in named} == {"HTTP 500", "HTTP 502"} and sum(int(n[:-1]) for _, n in named) == 8
