"""A host that answers wrongly, not only one that fails: one placeholder picture for every face,
refusals (403, 404, 410), a redirect loop, oversize bodies, a gzip bomb. Each costs a bounded
number of requests, every image of that host is named in failures.csv with the reason, the
other hosts deliver everything, and no placeholder stays in DIR. Loopback hosts only."""
from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest

from helpers import failure_errors, image_files, make_synthetic, manifest, one_bad_page, run_cli
from iiif_server import FakeIIIF, Fault

import kaokore
from kaokore.errors import EXIT_INCOMPLETE, EXIT_OK
from kaokore.pipeline.records import RetryPolicy
from kaokore.pipeline.session import host_key
from kaokore.storage.manifest import Journal, write_manifest
from kaokore.storage.records import ManifestRow

N = 180  # 60 images per host; make_synthetic's regions stay on their page below 200
FAILING = 0
QUICK = RetryPolicy(backoff_factor=0.01, host_pause_max=0.1)
# None of these answers is asked again: each image costs one request (the redirect loop too: its
# 302 leads back to the URL just asked). A host is given up after the run of 8 distinct images
# that gives up a host that never delivered. A refusal costs the server nothing, so a refusing
# host keeps its 4 slots, and 3 other requests can be in flight when the 8th answer lands; any
# other wrong answer halves the host's slots, which are down to one before the 8th.
AT_MOST = 8 + 3
STRAINED = 8


def image_requests(srv: FakeIIIF, host: int) -> int:
    return sum(1 for h, path in srv.request_log if h == host and path.startswith("/iiif/"))


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def assert_the_others_delivered_everything(srv, synth, root: Path, failing: int) -> None:
    files = image_files(root)
    for i, url in synth.urls.items():
        if i % 3 != failing:
            assert files[synth.name(i)].read_bytes() == srv.expected_bytes(url)


FORBIDDEN = ("HTTP 403 (forbidden: usually a proxy or firewall in between, or a server blocking this User-Agent "
             "or address)")
RUN = "on 8 images in a row, none delivered in between"


# Each: the fault, the most requests it may cost, what the images it answered say, and why the
# rest of the host's images failed.
@pytest.mark.parametrize("fault, at_most, answer, verdict", [
    (Fault.PLACEHOLDER, STRAINED, "different faces: a placeholder for a missing image?",
     f"host failing: a placeholder (one image sent for different faces) {RUN}"),
    (Fault.S403, AT_MOST, FORBIDDEN, f"host refusing: {FORBIDDEN} {RUN}"),
    (Fault.S404, AT_MOST, "HTTP 404", f"host refusing: HTTP 404 {RUN}"),
    (Fault.S410, AT_MOST, "HTTP 410", f"host refusing: HTTP 410 {RUN}"),
    (Fault.S400, AT_MOST, "HTTP 400", f"host refusing: HTTP 400 {RUN}"),
    (Fault.REDIRECT_LOOP, STRAINED, "bad redirect: redirect loop: redirected back to http://127.0.0.1:",
     f"host failing: bad redirect {RUN} (e.g. bad redirect: redirect loop: redirected back to http://127.0.0.1:"),
    (Fault.HUGE_BODY, STRAINED, "response of 26214400 bytes exceeds the 20971520-byte cap",
     f"host failing: response of 26214400 bytes exceeds the 20971520-byte cap {RUN}"),
    (Fault.HUGE_BODY_NO_LENGTH, STRAINED, "response exceeds the 20971520-byte cap",
     f"host failing: response exceeds the 20971520-byte cap {RUN}"),
    (Fault.GZIP_BOMB, STRAINED, "response exceeds the 20971520-byte cap once decoded (Content-Encoding: gzip)",
     f"host failing: response exceeds the 20971520-byte cap once decoded (Content-Encoding: gzip) {RUN}"),
    (Fault.BAD_GZIP, STRAINED, "body does not decompress: Content-Encoding gzip: Error -3 while decompressing data",
     "host failing: body does not decompress: Content-Encoding gzip: Error -3 while decompressing data"),
], ids=["placeholder", "403", "404", "410", "400", "redirect-loop", "oversize", "oversize-no-length", "gzip-bomb",
        "bad-gzip"])
def test_a_host_answering_every_image_wrongly_costs_a_bounded_number_of_requests(srv, tmp_path, fault, at_most,
                                                                                  answer, verdict):
    synth = make_synthetic(srv, tmp_path, n=N, blank=(), unlabeled=())
    srv.fail_host(FAILING, fault)
    root, err = tmp_path / "data", io.StringIO()

    summary = kaokore.download(root, metadata_dir=synth.meta_dir, policy=QUICK, stream=err)

    # Without the breaker counting these: 60 requests (one per image), 360 for the loop.
    asked = image_requests(srv, FAILING)
    assert asked <= at_most
    assert summary.exit_status == EXIT_INCOMPLETE
    assert summary.hosts_unreachable == [host_key(srv.base_urls[FAILING])]
    failed = failure_errors(root)
    assert sorted(failed) == sorted(synth.name(i) for i in synth.urls if i % 3 == FAILING)
    # The images it answered say what came back; the others (and the one that tipped the verdict)
    # why the host was given up.
    answered = [error for error in failed.values() if not error.startswith(verdict)]
    assert all(answer in error for error in answered), set(answered)
    assert len(failed) - len(answered) >= N // 3 - asked + 1
    assert_the_others_delivered_everything(srv, synth, root, FAILING)
    notes = [line for line in err.getvalue().splitlines() if host_key(srv.base_urls[FAILING]) + ": host" in line]
    assert len(notes) == 1 and verdict in notes[0]  # given up once, said once


def test_a_host_sending_one_placeholder_for_every_face_leaves_no_trace_of_it(srv, tmp_path):
    synth = make_synthetic(srv, tmp_path, n=N, blank=(), unlabeled=())
    srv.fail_host(FAILING, Fault.PLACEHOLDER)
    placeholder = sha(srv.placeholder_bytes)
    root, err = tmp_path / "data", io.StringIO()

    summary = kaokore.download(root, metadata_dir=synth.meta_dir, policy=QUICK, stream=err)

    assert image_requests(srv, FAILING) <= STRAINED
    # Nothing with those bytes anywhere under DIR, nor in the manifest.
    assert [p for p in root.rglob("*") if p.is_file() and sha(p.read_bytes()) == placeholder] == []
    assert not any(r["sha256"] == placeholder for r in manifest(root).values())
    assert sorted(manifest(root)) == sorted(synth.name(i) for i in synth.urls if i % 3 != FAILING)
    # The images that were answered with it say so; the others, that their host was given up for it.
    failed = failure_errors(root)
    host = host_key(srv.base_urls[FAILING])
    answered = {image: error for image, error in failed.items() if error.startswith(host)}
    assert len(answered) >= 2 and summary.placeholders == image_requests(srv, FAILING)  # every answer was one
    assert all(error.endswith("different faces: a placeholder for a missing image?") for error in answered.values())
    assert {error for image, error in failed.items() if image not in answered} == {
        "host failing: a placeholder (one image sent for different faces) on 8 images in a row, none delivered "
        "in between"}
    assert f"{len(failed)} failed ({summary.placeholders} placeholders)" in summary.line()
    # What a download leaves, verify agrees with: only the failing host's images are missing.
    report = kaokore.verify(root)
    assert {p.kind for p in report.problems} == {"missing"} and report.intact == 2 * N // 3


def test_a_placeholder_stored_first_is_taken_back_out(srv, tmp_path):
    """The first placeholder alone looks like a face and is stored; the second one gives it away,
    and it leaves DIR (file and row) with the reason, and the summary counts it failed, not new."""
    synth = make_synthetic(srv, tmp_path, n=30, blank=(), unlabeled=())
    first, second = 3, 12  # two images of host 0, far apart in the queue
    srv.inject(synth.urls[first], Fault.PLACEHOLDER)
    srv.inject(synth.urls[second], Fault.PLACEHOLDER)
    root, err = tmp_path / "data", io.StringIO()

    summary = kaokore.download(root, metadata_dir=synth.meta_dir, policy=QUICK, stream=err, per_host=1, threads=1)

    host = host_key(srv.base_urls[0])
    reason = f"{host} sent the same image for 2 different faces: a placeholder for a missing image?"
    assert failure_errors(root) == {synth.name(first): reason, synth.name(second): reason}
    # It had landed: the user is told it was taken out.
    assert any(synth.name(first) in line and line.endswith(f"back out of DIR: {reason}")
               for line in err.getvalue().splitlines())
    assert synth.name(first) not in image_files(root) and synth.name(first) not in manifest(root)
    assert (summary.downloaded, summary.failed, summary.placeholders, summary.hosts_unreachable) == (28, 2, 2, [])
    assert summary.exit_status == EXIT_INCOMPLETE
    for i, url in synth.urls.items():
        if i not in (first, second):
            assert image_files(root)[synth.name(i)].read_bytes() == srv.expected_bytes(url)


def test_a_row_taken_back_does_not_come_back_from_the_journal_of_a_killed_run(srv, tmp_path):
    """A run killed after the stored placeholder's row reached its journal, and after the file was
    taken back: the rerun does not count the image present on the journal's word, it fetches it."""
    synth = make_synthetic(srv, tmp_path, n=30, blank=(), unlabeled=())
    first, second = 3, 12
    srv.inject(synth.urls[first], Fault.PLACEHOLDER, times=1)
    srv.inject(synth.urls[second], Fault.PLACEHOLDER, times=1)
    root, err = tmp_path / "data", io.StringIO()
    kaokore.download(root, metadata_dir=synth.meta_dir, policy=QUICK, stream=err, per_host=1, threads=1)
    path = next(line.split("took ", 1)[1].split(" back out", 1)[0] for line in err.getvalue().splitlines()
                if "back out of DIR" in line)
    journal = Journal(root)
    journal.append(ManifestRow(synth.name(first), path, synth.urls[first], sha(srv.placeholder_bytes),
                               len(srv.placeholder_bytes), 256, 256, "RGB", False, "split"))
    journal.close()

    summary = kaokore.download(root, metadata_dir=synth.meta_dir, policy=QUICK, quiet=True)

    assert summary.exit_status == EXIT_OK and summary.downloaded == 2  # the server now sends both faces
    assert (root / path).read_bytes() == srv.expected_bytes(synth.urls[first])
    assert manifest(root)[synth.name(first)]["sha256"] == sha(srv.expected_bytes(synth.urls[first]))
    assert kaokore.verify(root).ok


def test_a_placeholder_kept_by_an_earlier_run_is_taken_back_when_a_second_one_comes(srv, tmp_path):
    """A smoke run stores one placeholder (alone, nothing tells it from a face); the full run meets
    a second one: both go, the earlier one with its file and row, and the earlier run's count."""
    synth = make_synthetic(srv, tmp_path, n=30, blank=(), unlabeled=())
    srv.fail_host(FAILING, Fault.PLACEHOLDER)
    root = tmp_path / "data"
    smoke = kaokore.download(root, metadata_dir=synth.meta_dir, policy=QUICK, quiet=True, limit=3)
    assert smoke.exit_status == EXIT_OK and synth.name(0) in manifest(root)  # undetectable alone

    summary = kaokore.download(root, metadata_dir=synth.meta_dir, policy=QUICK, quiet=True)

    assert synth.name(0) not in manifest(root) and synth.name(0) not in image_files(root)
    assert failure_errors(root)[synth.name(0)].endswith("different faces: a placeholder for a missing image?")
    assert summary.already_present == 2 and summary.downloaded == 18  # images 1 and 2; hosts 1 and 2's others
    assert summary.failed == 10 and summary.not_attempted == 0


def test_the_same_request_under_two_image_numbers_keeps_both(srv, tmp_path):
    """One face listed twice, in two spellings of one IIIF request ('256,' and '256,256' on a square
    region): the same bytes, rightly. Both are kept, and verify agrees."""
    synth = make_synthetic(srv, tmp_path, n=12, blank=(), unlabeled=())
    urls = dict(synth.urls)
    urls[9] = urls[0].replace("/256,256/", "/256,/")  # both on host 0
    synth.rewrite("urls.txt", "".join(f"{urls[i]}\n" for i in range(12)).encode())
    root = tmp_path / "data"

    summary = kaokore.download(root, metadata_dir=synth.meta_dir, policy=QUICK, quiet=True)

    assert summary.exit_status == EXIT_OK and summary.placeholders == 0
    files = image_files(root)
    assert files[synth.name(9)].read_bytes() == files[synth.name(0)].read_bytes() == srv.expected_bytes(urls[0])
    assert kaokore.verify(root).ok


def test_a_single_404_among_good_images_fails_that_image_alone(srv, tmp_path):
    synth = make_synthetic(srv, tmp_path, n=N, blank=(), unlabeled=())
    # 20 of the host's 60: more than the 16 that give up a host that delivers, but never 8 in a row.
    gone = [i for i in synth.urls if i % 3 == FAILING][::3]
    for i in gone:
        srv.inject(synth.urls[i], Fault.S404)
    root = tmp_path / "data"

    summary = kaokore.download(root, metadata_dir=synth.meta_dir, policy=QUICK, quiet=True)

    assert summary.exit_status == EXIT_INCOMPLETE and summary.hosts_unreachable == []
    assert failure_errors(root) == {synth.name(i): "HTTP 404" for i in gone}
    assert [srv.requests(synth.urls[i]) for i in gone] == [1] * len(gone)  # final at once, not retried
    assert len(image_files(root)) == N - len(gone)


def test_a_moved_page_of_404s_on_a_live_host_fails_its_faces_not_the_host(srv, tmp_path):
    """30 faces in a row cut from one page whose URL moved: they fail, the host's other pages arrive."""
    moved = range(40, 70)
    synth = one_bad_page(srv, tmp_path, "book0/moved.tif", Fault.S404, moved)
    urls = synth.urls
    root = tmp_path / "data"
    summary = kaokore.download(root, metadata_dir=synth.meta_dir, policy=QUICK, quiet=True)
    assert summary.hosts_unreachable == []
    assert failure_errors(root) == {synth.name(i): "HTTP 404" for i in moved}
    files = image_files(root)
    assert all(files[synth.name(i)].read_bytes() == srv.expected_bytes(urls[i]) for i in range(120) if i not in moved)


def test_a_refusing_host_through_the_command_line(srv, tmp_path, capsys):
    """What a user behind a firewall sees: exit 1, one line saying the host refused and why, and
    no request for every image."""
    synth = make_synthetic(srv, tmp_path, n=N, blank=(), unlabeled=())
    srv.fail_host(FAILING, Fault.S403)
    root = tmp_path / "data"

    code, out, err = run_cli(capsys, "download", "--dir", str(root), "--metadata-dir", str(synth.meta_dir),
                             "--timeout", "5")

    assert code == EXIT_INCOMPLETE
    assert image_requests(srv, FAILING) <= AT_MOST
    host = host_key(srv.base_urls[FAILING])
    given_up = [line for line in err.splitlines() if line.startswith(f"kaokore: {host}: host refusing: HTTP 403")]
    assert len(given_up) == 1 and "a proxy or firewall" in given_up[0] and "User-Agent" in given_up[0]
    assert len(failure_errors(root)) == N // 3
    assert_the_others_delivered_everything(srv, synth, root, FAILING)


# --------------------------------------------------------------------------
# Redirects: loops stop at once, moves are followed
# --------------------------------------------------------------------------


def test_a_redirect_loop_stops_as_soon_as_it_comes_back(srv, tmp_path):
    synth = make_synthetic(srv, tmp_path, n=12, blank=(), unlabeled=())
    a, b = synth.urls[0], synth.urls[3]
    loop = srv.url(0, "book0/elsewhere.tif")
    srv.redirect(a, loop, status=302)
    srv.redirect(loop, a, status=302)  # a -> elsewhere -> a
    srv.inject(b, Fault.REDIRECT_LOOP)  # b -> b
    root = tmp_path / "data"

    summary = kaokore.download(root, metadata_dir=synth.meta_dir, policy=QUICK, quiet=True)

    assert (srv.requests(a), srv.requests(loop), srv.requests(b)) == (1, 1, 1)  # not 6 each: the session's limit
    failed = failure_errors(root)
    assert failed[synth.name(0)] == f"bad redirect: redirect loop: redirected back to {a}"
    assert failed[synth.name(3)] == f"bad redirect: redirect loop: redirected back to {b}"
    assert summary.downloaded == 10


def test_an_image_that_moved_is_followed_to_its_new_place(srv, tmp_path):
    synth = make_synthetic(srv, tmp_path, n=12, blank=(), unlabeled=())
    moved_to = srv.url(1, "book9/new-place.tif", region="5,5,300,300")  # another server, another identifier
    srv.redirect(synth.urls[0], moved_to)
    srv.redirect(moved_to, moved_to.replace("new-place", "final-place"), status=302)  # and once more
    root = tmp_path / "data"

    summary = kaokore.download(root, metadata_dir=synth.meta_dir, policy=QUICK, quiet=True)

    assert summary.exit_status == EXIT_OK
    final = moved_to.replace("new-place", "final-place")
    assert image_files(root)[synth.name(0)].read_bytes() == srv.expected_bytes(final)
    assert manifest(root)[synth.name(0)]["url"] == synth.urls[0]  # recorded under the URL the metadata gives
    assert srv.requests(synth.urls[0]) == srv.requests(final) == 1


def test_a_cookie_check_that_sends_the_client_back_to_the_same_url_is_passed(srv, tmp_path):
    """A 302 to the URL just asked is a loop, unless it set a cookie: then it is a check, passed once."""
    synth = make_synthetic(srv, tmp_path, n=12, blank=(), unlabeled=())
    srv.fail_host(FAILING, Fault.COOKIE_CHECK)
    root = tmp_path / "data"

    summary = kaokore.download(root, metadata_dir=synth.meta_dir, policy=QUICK, quiet=True)

    assert summary.exit_status == EXIT_OK
    files = image_files(root)
    assert all(files[synth.name(i)].read_bytes() == srv.expected_bytes(url) for i, url in synth.urls.items())
    # Each of the host's 4 images asked at most twice: the session keeps the cookie once it has it.
    assert 4 < image_requests(srv, FAILING) <= 2 * 4


# --------------------------------------------------------------------------
# Trees made before: verify names the duplicates, download fetches them again
# --------------------------------------------------------------------------


def placeholder_tree(srv, tmp_path, copies: tuple[int, ...] = (0, 3, 6)):
    """A complete tree, then what an older kaokore left where host 0 answered placeholders: the
    same bytes stored, with matching manifest rows, for images of different requests."""
    synth = make_synthetic(srv, tmp_path, n=12, blank=(), unlabeled=())
    root = tmp_path / "data"
    assert kaokore.download(root, metadata_dir=synth.meta_dir, policy=QUICK, quiet=True).exit_status == EXIT_OK
    rows = {}
    for image, r in manifest(root).items():
        rows[image] = ManifestRow(image, r["path"], r["url"], r["sha256"], int(r["bytes"]), 256, 256, "RGB",
                                  r["converted"] == "true", r["layout"])
    for i in copies:
        row = rows[synth.name(i)]
        (root / row.path).write_bytes(srv.placeholder_bytes)
        rows[row.image] = ManifestRow(row.image, row.path, row.url, sha(srv.placeholder_bytes),
                                      len(srv.placeholder_bytes), 256, 256, "RGB", False, row.layout)
    write_manifest(root, rows.values())
    return synth, root


def test_verify_names_every_image_of_a_placeholder_and_exits_1(srv, tmp_path, capsys):
    synth, root = placeholder_tree(srv, tmp_path)
    code, out, _ = run_cli(capsys, "verify", "--dir", str(root))
    assert code == EXIT_INCOMPLETE
    lines = [line for line in out.splitlines() if ": duplicate: " in line]
    assert [line.split(":")[0] for line in lines] == [synth.name(i) for i in (0, 3, 6)]
    assert lines[0].startswith(f"{synth.name(0)}: duplicate: the same bytes as {synth.name(3)}, {synth.name(6)} ")
    assert "placeholder" in lines[0]
    report = kaokore.verify(root)
    assert report.intact == 12 - 3 and {p.kind for p in report.problems} == {"duplicate"}


def test_rows_of_one_request_under_two_numbers_are_no_duplicates():
    """1.2's three pairs: one face over http and over https. Other regions with those bytes are."""
    from kaokore.pipeline.placeholders import duplicates

    url = "http://iiif.lib.keio.ac.jp/iipsrv/NRE/110X-445-3-2/tif/2_004.tif/1770,958,188,188/256,256/0/default.jpg"

    def row(i: int, u: str) -> ManifestRow:
        return ManifestRow(f"{i:08d}.jpg", f"train/{i:08d}.jpg", u, "d" * 64, 100, 256, 256, "RGB", False, "split")

    pair = [row(47, url), row(8799, "https" + url[4:])]
    assert duplicates(pair) == []
    other = row(48, url.replace("1770,958", "2238,935"))
    assert duplicates([*pair, other]) == [[pair[0], other, pair[1]]]


def test_a_rerun_fetches_again_the_placeholders_an_older_run_kept(srv, tmp_path):
    synth, root = placeholder_tree(srv, tmp_path)
    srv.reset_stats()

    summary = kaokore.download(root, metadata_dir=synth.meta_dir, policy=QUICK, quiet=True)

    assert summary.exit_status == EXIT_OK and summary.damaged == 3 and summary.downloaded == 3
    assert sorted(path for _, path in srv.request_log if path.startswith("/iiif/")) == sorted(
        synth.urls[i].split(srv.base_urls[0])[1] for i in (0, 3, 6))
    files = image_files(root)
    assert all(files[synth.name(i)].read_bytes() == srv.expected_bytes(url) for i, url in synth.urls.items())
    assert kaokore.verify(root).ok
