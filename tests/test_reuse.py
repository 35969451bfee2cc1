"""--reuse: a complete tree of one version gives another version the images of the same IIIF
requests, and one run never asks a server twice for one request.

Real loopback servers (FakeIIIF) that answer https and http on one port, so that a URL and its
twin over the other scheme reach the same host and count as one URL. Version A is downloaded
complete; version B shares some requests with it in each of the ways the real versions do
(the same URL, http for https, ``256,`` for ``256,256`` on a square region) and some it must
not take (a non-square region, ``!200,200``, a region the page cuts, an explicit ``256,256``
source for a ``256,`` request). Every assertion is about what a user sees: requests the
server got, bytes and inodes on disk, manifest.csv, the exit status, the tree's verdict."""
from __future__ import annotations

import csv
import errno
import hashlib
import json
import os
import shlex
import ssl
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers import manifest, run_cli
from iiif_server import FakeIIIF, Fault
from synthetic import default_label, metadata_files, write_files

import kaokore
from kaokore.errors import EXIT_INCOMPLETE, EXIT_OK, EXIT_USAGE
from kaokore.offline.info import dataset_info
from kaokore.offline.overlap import Overlap, overlaps
from kaokore.pipeline.records import RetryPolicy
from kaokore.pipeline.reuse import proven
from kaokore.storage.records import ManifestRow

trustme = pytest.importorskip("trustme")

QUICK = RetryPolicy(backoff_factor=0.01, host_pause_max=0.1)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    return context, str(folder / "ca.pem")


@pytest.fixture
def both(pki):
    """Two hosts, each answering https and http on its one port."""
    with FakeIIIF(hosts=2, ssl_context=pki[0], plain_too=True) as server:
        yield server


def http(url: str) -> str:
    return url.replace("https://", "http://", 1)


@dataclass
class Versions:
    a: list[str]  # version A's urls.txt lines
    b: list[str]
    meta_a: Path
    meta_b: Path
    ca: str


def write_version(folder: Path, lines: list[str]) -> Path:
    write_files(folder, metadata_files(lines, {i: default_label(i) for i in range(len(lines))}))
    return folder


# B's images, by what they share with A: (A's URL, B's URL) built from one face each.
SHARED = ("same URL", "http for https", "256, for 256,256")
NOT_SHARED = ("non-square region", "!200,200", "a region the page cuts", "256,256 source for 256,",
              "a face A lacks")


def make_versions(srv: FakeIIIF, tmp_path: Path, ca: str) -> Versions:
    def face(host: int, n: int, region: str = "100,100,300,300", size: str = "256,256") -> str:
        return http(srv.url(host, f"scroll{n}/page.tif", region=region, size=size))

    pairs = [
        (face(0, 0), face(0, 0)),
        (face(1, 1), face(1, 1).replace("http://", "https://", 1)),
        (face(0, 2, size="256,"), face(0, 2, size="256,256")),
        # A region of 400x300 rendered at "256," is 256x192, at "256,256" stretched: other pixels.
        (face(1, 3, region="100,100,400,300", size="256,"), face(1, 3, region="100,100,400,300")),
        (face(0, 4), face(0, 4, size="!200,200")),
        # The fake's pages are 2000 wide: this square region is cut to 100x300, which "256," renders
        # 256x768 and "256,256" stretches to 256x256. The keys are equal, the pixels are not.
        (face(1, 5, region="1900,100,300,300", size="256,"), face(1, 5, region="1900,100,300,300")),
        # "256,256" is rendered 256x256 whatever region the server cut: it proves nothing for "256,".
        (face(0, 6), face(0, 6, size="256,")),
        (face(1, 7), face(1, 8)),
    ]
    a, b = [p[0] for p in pairs], [p[1] for p in pairs]
    return Versions(a, b, write_version(tmp_path / "meta-a", a), write_version(tmp_path / "meta-b", b), ca)


@pytest.fixture
def versions(both, pki, tmp_path) -> Versions:
    return make_versions(both, tmp_path, pki[1])


@pytest.fixture
def tree_a(both, versions, tmp_path) -> Path:
    root = tmp_path / "A"
    summary = kaokore.download(root, metadata_dir=versions.meta_a, verify=versions.ca, quiet=True, policy=QUICK)
    assert summary.exit_status == EXIT_OK and summary.downloaded == len(versions.a)
    both.reset_stats()
    return root


def snapshot(root: Path) -> dict[str, tuple]:
    """Every entry under `root` (links not followed): its kind, bytes or target, and mtime."""
    out = {".": ("dir", None, root.stat().st_mtime_ns)}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            st = path.lstat()
            if path.is_symlink():
                content = ("link", os.readlink(path))
            elif path.is_dir():
                content = ("dir", None)
            else:
                content = ("file", path.read_bytes())
            out[str(path.relative_to(root))] = (*content, st.st_mtime_ns)
    return out


def name(i: int) -> str:
    return f"{i:08d}.jpg"


def in_tree(root: Path, i: int) -> Path:
    return root / default_label(i)[0] / name(i)


def download_b(versions: Versions, root: Path, *extra: str) -> list[str]:
    return ["download", "--dir", str(root), "--metadata-dir", str(versions.meta_b), "--ca-bundle", versions.ca,
            "--quiet", *extra]


# --------------------------------------------------------------------------
# --reuse of a complete tree
# --------------------------------------------------------------------------


def test_reuse_fetches_exactly_what_the_other_tree_lacks_and_leaves_it_untouched(both, versions, tree_a, tmp_path,
                                                                              capsys):
    before = snapshot(tree_a)
    root = tmp_path / "B"

    code, out, err = run_cli(capsys, *download_b(versions, root, "--reuse", str(tree_a), "--json"))

    assert code == EXIT_OK, err
    doc = json.loads(out)
    assert (doc["reused"], doc["downloaded"], doc["already_present"]) == (3, 5, 0)
    assert "5 new, 3 reused" in err
    # One request for each image B does not share, none for the others (a URL's http and https count as one).
    assert both.requests() == 5
    for i, url in enumerate(versions.b):
        assert both.requests(url) == (0 if i < 3 else 1), (i, url)
    rows = manifest(root)
    for i in range(3):
        mine, theirs = in_tree(root, i), in_tree(tree_a, i)
        assert mine.read_bytes() == theirs.read_bytes()
        assert os.stat(mine).st_ino == os.stat(theirs).st_ino  # a hard link: both on one filesystem
        assert rows[name(i)]["origin"] == "reused" and rows[name(i)]["source"] == str(theirs.absolute())
        assert rows[name(i)]["url"] == versions.b[i]
        assert (rows[name(i)]["source_width"], rows[name(i)]["source_height"]) == ("256", "256")
    for i in range(3, 8):
        assert in_tree(root, i).read_bytes() != b"" and rows[name(i)]["origin"] == "fetched"
        assert rows[name(i)]["source"] == ""
    assert snapshot(tree_a) == before  # A is only read: every byte, every name and every mtime as it was
    code, _, err = run_cli(capsys, "verify", "--dir", str(root))
    assert code == EXIT_OK, err

    # A rerun finds everything in place and asks for nothing.
    both.reset_stats()
    code, out, _ = run_cli(capsys, *download_b(versions, root, "--reuse", str(tree_a), "--json"))
    assert code == EXIT_OK and json.loads(out)["already_present"] == 8 and both.requests() == 0


def test_a_file_in_the_other_tree_that_does_not_match_its_row_is_fetched(both, versions, tree_a, tmp_path):
    damaged = in_tree(tree_a, 0)
    good = damaged.read_bytes()
    damaged.write_bytes(good[:-100] + bytes(100))  # the same size, other bytes
    root = tmp_path / "B"

    summary = kaokore.download(root, metadata_dir=versions.meta_b, verify=versions.ca, quiet=True,
                               reuse=[tree_a], policy=QUICK)

    assert summary.exit_status == EXIT_OK and summary.reused == 2 and summary.downloaded == 6
    assert both.requests(versions.b[0]) == 1
    assert in_tree(root, 0).read_bytes() == good  # the server's bytes, not the damaged ones
    assert os.stat(in_tree(root, 0)).st_ino != os.stat(damaged).st_ino
    assert manifest(root)[name(0)]["origin"] == "fetched"
    assert kaokore.verify(root).ok


@pytest.mark.parametrize("where", ["file", "folder"])
def test_a_link_in_the_other_tree_leading_outside_it_is_not_followed(both, versions, tree_a, tmp_path, where):
    """The right bytes, under the right name and row, but reached through a link out of A: never taken."""
    outside = tmp_path / "outside"
    if where == "file":
        outside.mkdir()
        target = in_tree(tree_a, 0)
        (outside / name(0)).write_bytes(target.read_bytes())
        target.unlink()
        target.symlink_to(outside / name(0))
        lured = [0]
    else:  # A's whole train/ folder is a link to a copy of it elsewhere
        train = tree_a / "train"
        train.rename(outside)
        train.symlink_to(outside, target_is_directory=True)
        lured = [i for i in range(8) if default_label(i)[0] == "train"]
    root = tmp_path / "B"

    summary = kaokore.download(root, metadata_dir=versions.meta_b, verify=versions.ca, quiet=True,
                               reuse=[tree_a], policy=QUICK)

    assert summary.exit_status == EXIT_OK
    outside_inodes = {p.stat().st_ino for p in outside.iterdir()}
    for i in lured:
        assert both.requests(versions.b[i]) == 1, i
        assert os.stat(in_tree(root, i)).st_ino not in outside_inodes
        assert manifest(root)[name(i)]["origin"] == "fetched"
    assert summary.reused == 3 - len([i for i in lured if i < 3])
    assert kaokore.verify(root).ok


def test_bytes_the_other_tree_holds_for_two_requests_are_not_spread(both, versions, tree_a, tmp_path):
    """A tree from an older tool kept a server's placeholder for two faces: neither is reused."""
    placeholder = both.placeholder_bytes
    rows = manifest(tree_a)
    for i in (0, 7):
        in_tree(tree_a, i).write_bytes(placeholder)
        rows[name(i)].update(sha256=hashlib.sha256(placeholder).hexdigest(), bytes=str(len(placeholder)))
    with open(tree_a / "manifest.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(next(iter(rows.values()))), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows.values())
    root = tmp_path / "B"

    summary = kaokore.download(root, metadata_dir=versions.meta_b, verify=versions.ca, quiet=True,
                               reuse=[tree_a], policy=QUICK)

    assert summary.exit_status == EXIT_OK and summary.reused == 2
    assert both.requests(versions.b[0]) == 1
    assert in_tree(root, 0).read_bytes() == both.expected_bytes(versions.b[0]) != placeholder
    assert kaokore.verify(root).ok


def test_a_reused_file_a_fetched_image_shares_its_bytes_with_is_taken_back(both, versions, tree_a, tmp_path):
    """A holds a placeholder once (nothing in A betrays it); B fetches it again for another face.
    The same rule as for fetched images: both go, neither is kept."""
    placeholder = both.placeholder_bytes
    rows = manifest(tree_a)
    in_tree(tree_a, 0).write_bytes(placeholder)
    rows[name(0)].update(sha256=hashlib.sha256(placeholder).hexdigest(), bytes=str(len(placeholder)))
    with open(tree_a / "manifest.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[name(0)]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows.values())
    both.inject(versions.b[7], Fault.PLACEHOLDER)
    root = tmp_path / "B"

    summary = kaokore.download(root, metadata_dir=versions.meta_b, verify=versions.ca, quiet=True,
                               reuse=[tree_a], policy=QUICK)

    assert summary.exit_status == EXIT_INCOMPLETE
    assert summary.placeholders == 2 and summary.reused == 2 and summary.failed == 2
    assert not in_tree(root, 0).exists() and not in_tree(root, 7).exists()
    assert in_tree(tree_a, 0).read_bytes() == placeholder  # taken out of B only
    assert name(0) not in manifest(root)


def test_files_are_copied_when_no_hard_link_can_be_made(both, versions, tree_a, tmp_path, monkeypatch):
    """Another filesystem (EXDEV): each file is copied whole, A still untouched."""
    def no_links(*args, **kwargs):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", no_links)
    before = snapshot(tree_a)
    root = tmp_path / "B"

    summary = kaokore.download(root, metadata_dir=versions.meta_b, verify=versions.ca, quiet=True,
                               reuse=[tree_a], policy=QUICK)

    assert summary.exit_status == EXIT_OK and summary.reused == 3 and both.requests() == 5
    for i in range(3):
        assert in_tree(root, i).read_bytes() == in_tree(tree_a, i).read_bytes()
        assert os.stat(in_tree(root, i)).st_ino != os.stat(in_tree(tree_a, i)).st_ino
    assert not list(root.rglob("*.kaokore-tmp"))
    assert snapshot(tree_a) == before
    assert kaokore.verify(root).ok


def test_verify_holds_a_reused_file_to_its_row_and_info_and_the_card_count_it(both, versions, tree_a, tmp_path,
                                                                              capsys):
    root = tmp_path / "B"
    kaokore.download(root, metadata_dir=versions.meta_b, verify=versions.ca, quiet=True, reuse=[tree_a],
                     policy=QUICK)
    assert dataset_info(root).manifest.reused == 3
    card = (root / "README.md").read_text(encoding="utf-8")
    assert "3 images were reused rather than fetched" in card
    assert "5 were fetched from the IIIF servers, 3 reused and 0 adopted" in card

    # Replaced (never written in place: the file is A's too), with other bytes.
    damaged = in_tree(root, 2)
    (root / "other.tmp").write_bytes(damaged.read_bytes()[:-100] + bytes(100))
    os.replace(root / "other.tmp", damaged)
    code, out, _ = run_cli(capsys, "verify", "--dir", str(root))
    assert code == EXIT_INCOMPLETE
    assert f"{name(2)}: checksum:" in out


# --------------------------------------------------------------------------
# The same request twice in one run
# --------------------------------------------------------------------------


def test_one_request_under_two_image_numbers_is_fetched_once(both, versions, tmp_path, capsys):
    """1.2 lists three faces twice, once over http and once over https: each is asked for once."""
    face = versions.b[0]
    lines = [face, versions.b[5], face.replace("http://", "https://", 1), face, versions.b[7]]
    meta = write_version(tmp_path / "meta-twins", lines)
    root = tmp_path / "data"

    code, out, err = run_cli(capsys, "download", "--dir", str(root), "--metadata-dir", str(meta), "--ca-bundle",
                             versions.ca, "--quiet", "--json")

    assert code == EXIT_OK, err
    assert both.requests(face) == 1 and both.requests() == 3
    doc = json.loads(out)
    assert (doc["downloaded"], doc["reused"]) == (3, 2)
    rows = manifest(root)
    for twin in (2, 3):
        assert in_tree(root, twin).read_bytes() == in_tree(root, 0).read_bytes() == both.expected_bytes(face)
        assert os.stat(in_tree(root, twin)).st_ino == os.stat(in_tree(root, 0)).st_ino
        assert (rows[name(twin)]["origin"], rows[name(twin)]["source"]) == ("reused", name(0))
        assert rows[name(twin)]["url"] == lines[twin]
    assert kaokore.verify(root).ok


def test_a_twin_whose_request_failed_fails_with_it_and_costs_its_host_nothing(both, versions, tmp_path):
    """The breaker gives a host up after 2 distinct images fail in a row here: were the two twins
    of a refused face counted as images of their own, the host's good images would never be asked."""
    face = versions.b[1].replace("https://", "http://", 1)  # host 1
    good = [http(both.url(1, f"good{i}/page.tif")) for i in range(3)]
    lines = [face, face.replace("http://", "https://", 1), face, *good]
    meta = write_version(tmp_path / "meta-twins", lines)
    both.inject(face, Fault.S404)
    root = tmp_path / "data"

    summary = kaokore.download(root, metadata_dir=meta, verify=versions.ca, quiet=True, per_host=1,
                               policy=RetryPolicy(breaker_threshold=2, backoff_factor=0.01, host_pause_max=0.1))

    assert both.requests(face) == 1 and both.requests() == 4
    assert summary.downloaded == 3 and summary.hosts_unreachable == []
    failures = {f.image: f for f in summary.failures}
    assert sorted(failures) == [name(0), name(1), name(2)]
    for twin in (1, 2):
        assert failures[name(twin)].attempts == 0
        assert "HTTP 404" in failures[name(twin)].error and name(0) in failures[name(twin)].error


# --------------------------------------------------------------------------
# What --reuse refuses, before anything is written
# --------------------------------------------------------------------------


@pytest.mark.parametrize("kind, message", [
    ("missing", "does not exist"),
    ("file", "is not a directory"),
    ("itself", "is --dir itself"),
    ("empty", "is not a KaoKore tree"),
    ("upstream", "complete it first with `kaokore download --dir "),
    ("nothing yet", "holds no image kaokore has recorded; complete it first with `kaokore download --dir "),
])
def test_a_reuse_dir_that_cannot_serve_is_refused_in_one_line(versions, tmp_path, capsys, kind, message):
    root = tmp_path / "B"
    other = tmp_path / "other dir"
    if kind == "file":
        other.write_bytes(b"x")
    elif kind == "itself":
        other = root
        root.mkdir()
    elif kind == "empty":
        other.mkdir()
    elif kind == "upstream":  # upstream's download.py: images_256/ and the metadata, no manifest
        write_files(other, metadata_files(versions.a, {i: default_label(i) for i in range(8)}))
        (other / "urls.txt").unlink()
        (other / "images_256").mkdir()
        (other / "images_256" / name(0)).write_bytes(b"\xff\xd8")
    elif kind == "nothing yet":  # kaokore's metadata and state, no image yet
        kaokore.download(other, metadata_dir=versions.meta_a, limit=0, quiet=True)

    code, out, err = run_cli(capsys, *download_b(versions, root, "--reuse", str(other)))

    assert code == EXIT_USAGE
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("kaokore: error: --reuse ") and message in lines[0], err
    if kind in ("upstream", "nothing yet"):
        assert lines[0].endswith(f"`kaokore download --dir {shlex.quote(str(other))}`")
    assert not root.exists() or kind == "itself" and not any(root.iterdir())


def test_a_refusal_of_another_version_suggests_the_download_that_reuses_it(both, versions, tree_a, tmp_path,
                                                                           capsys):
    """DIR holds 1.0 and 1.3 is asked for: exit 2, DIR untouched, and the suggested command works."""
    data = tmp_path / "my data"
    tree_a.rename(data)
    before = snapshot(data)

    code, _, err = run_cli(capsys, *download_b(versions, data, "--dataset_version", "1.3"))

    assert code == EXIT_USAGE and snapshot(data) == before
    suggested = f"`kaokore download --dir {shlex.quote(str(tmp_path / 'my data-1.3'))} --dataset_version 1.3 " \
                f"--reuse {shlex.quote(str(data))}`"
    assert len(err.splitlines()) == 1 and suggested in err, err
    argv = shlex.split(suggested.strip("`"))[1:]
    code, out, err = run_cli(capsys, *argv, "--metadata-dir", str(versions.meta_b), "--ca-bundle", versions.ca,
                             "--quiet", "--json")
    assert code == EXIT_OK, err
    assert json.loads(out)["reused"] == 3 and both.requests() == 5


# --------------------------------------------------------------------------
# The rule, and the overlap table
# --------------------------------------------------------------------------


def row_for(url: str, width: int | None, height: int | None) -> ManifestRow:
    return ManifestRow("00000001.jpg", "train/00000001.jpg", url, "0" * 64, 1, width, height, "RGB", False, "split")


@pytest.mark.parametrize("wanted, source, size, ok", [
    ("https://h/i/1,2,30,30/256,256/0/default.jpg", "http://h/i/1,2,30,30/256,256/0/default.jpg", (99, 99), True),
    ("https://h/i/1,2,30,30/256,256/0/default.jpg", "http://H:443/i/01,2,30,30/256,256/0/default.jpg", None, True),
    ("https://h/i/1,2,30,30/256,256/0/default.jpg", "http://h/i/1,2,30,30/256,/0/default.jpg", (256, 256), True),
    ("https://h/i/1,2,30,30/256,256/0/default.jpg", "http://h/i/1,2,30,30/!256,256/0/default.jpg", (256, 256), True),
    ("https://h/i/1,2,30,30/256,256/0/default.jpg", "http://h/i/1,2,30,30/256,/0/default.jpg", (256, 230), False),
    ("https://h/i/1,2,30,30/256,256/0/default.jpg", "http://h/i/1,2,30,30/256,/0/default.jpg", None, False),
    ("https://h/i/1,2,30,30/256,/0/default.jpg", "http://h/i/1,2,30,30/256,256/0/default.jpg", (256, 256), False),
    ("https://h/i/1,2,30,30/,256/0/default.jpg", "http://h/i/1,2,30,30/256,/0/default.jpg", (256, 256), True),
])
def test_a_source_is_taken_only_where_its_row_proves_the_rendering(wanted, source, size, ok):
    width, height = size or (None, None)
    assert proven(wanted, row_for(source, width, height)) is ok


def test_the_overlap_table_counts_requests_not_urls():
    def urls(*lines: str) -> bytes:
        return "".join(f"{line}\n" for line in lines).encode()

    face = "http://h/i/{}/0,0,30,30/{}/0/default.jpg"
    old = urls(face.format("a", "256,"), face.format("b", "256,"), "", face.format("c", "256,"))
    new = urls(face.format("a", "256,256"), face.format("b", "256,256").replace("http:", "https:"),
               face.format("b", "256,256"), face.format("c", "!200,200"), face.format("d", "256,256"))
    assert overlaps({"1.0": old, "1.3": new}) == [Overlap("1.0", "1.3", shared=2, fetches=4, with_reuse=2)]


def test_versions_overlap_offline_fails_in_one_line(capsys):
    import socket

    with socket.socket() as s:  # a port nothing listens on: "offline"
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, out, err = run_cli(capsys, "versions", "--overlap", "--metadata-url", f"http://127.0.0.1:{port}",
                             "--timeout", "2")
    assert code == EXIT_USAGE and out == ""
    assert len(err.splitlines()) == 1 and "--upstream-dir" in err and "Traceback" not in err


# --------------------------------------------------------------------------
# safefs.link_file: the one operation that reaches into another tree
# --------------------------------------------------------------------------


def test_link_file_never_follows_a_link_out_of_the_other_tree_nor_one_in_dir(tmp_path):
    from kaokore.storage.safewrite import link_file

    other, root, outside = tmp_path / "other", tmp_path / "dir", tmp_path / "outside"
    for folder in (other / "train", root / "train", outside):
        folder.mkdir(parents=True)
    (outside / "secret.jpg").write_bytes(b"outside")
    (other / "train" / "a.jpg").symlink_to(outside / "secret.jpg")
    (other / "train" / "b.jpg").write_bytes(b"inside")
    seen = []

    with pytest.raises(OSError) as raised:
        link_file(other, "train/a.jpg", root, "train/x.jpg", lambda data: seen.append(data) or True)
    assert raised.value.errno == errno.ELOOP and seen == []  # the outside file was never read
    assert os.listdir(root / "train") == [] and (outside / "secret.jpg").stat().st_nlink == 1

    # A link at the destination leading outside DIR is replaced, never written through.
    (root / "train" / "y.jpg").symlink_to(outside / "secret.jpg")
    assert link_file(other, "train/b.jpg", root, "train/y.jpg", lambda data: data == b"inside")
    assert not (root / "train" / "y.jpg").is_symlink() and (outside / "secret.jpg").read_bytes() == b"outside"
    assert os.stat(root / "train" / "y.jpg").st_ino == os.stat(other / "train" / "b.jpg").st_ino

    # Bytes the check refuses leave nothing behind, not even a temporary.
    assert not link_file(other, "train/b.jpg", root, "train/z.jpg", lambda data: False)
    assert sorted(os.listdir(root / "train")) == ["y.jpg"]


def test_versions_overlap_holds_a_local_clone_to_the_pins(tmp_path, capsys):
    clone = tmp_path / "kaokore-clone"
    (clone / "dataset").mkdir(parents=True)
    (clone / "dataset" / "urls.txt").write_bytes(b"http://h/i/0,0,30,30/256,/0/default.jpg\n")
    code, out, err = run_cli(capsys, "versions", "--overlap", "--upstream-dir", str(clone))
    assert code == EXIT_USAGE and out == ""
    assert len(err.splitlines()) == 1 and "dataset/urls.txt" in err and "SHA-256" in err, err
    code, _, err = run_cli(capsys, "versions", "--upstream-dir", str(clone))
    assert code == EXIT_USAGE and "--overlap" in err
