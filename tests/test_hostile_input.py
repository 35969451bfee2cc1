"""Hostile or broken metadata, directories and server answers.

Bad input is exit 2 with one line naming the file and line, before any image
request and with nothing written outside DIR; a hostile answer to one image
request is a failure of that image only.
"""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest

from helpers import image_files, make_synthetic, run_cli
from iiif_server import Fault

import kaokore
from kaokore.dataset import versions
from kaokore.errors import EXIT_INCOMPLETE, EXIT_USAGE


def snapshot(top: Path, skip: Path) -> dict[str, tuple[int, int]]:
    """Every file under `top` but outside `skip`, with size and mtime."""
    found = {}
    for dirpath, _, filenames in os.walk(top):
        for name in filenames:
            path = Path(dirpath, name)
            if skip in path.parents:
                continue
            st = path.stat()
            found[str(path)] = (st.st_size, st.st_mtime_ns)
    return found


def replace_line(data: bytes, number: int, text: str | bytes) -> bytes:
    lines = data.split(b"\n")
    lines[number - 1] = text if isinstance(text, bytes) else text.encode()
    return b"\n".join(lines)


def labels_line(synth, index: int) -> int:
    """The 1-based line of labels.csv that holds image `index`."""
    for number, line in enumerate(synth.files["labels.csv"].decode().split("\n"), start=1):
        if line.startswith(f"{index:08d}.jpg,"):
            return number
    raise AssertionError(index)


# (file, what to do to it, line expected in the message, words expected in the message)
# Each is given the synthetic dataset and returns the new bytes of the file.
CASES = {
    "image name climbing out of DIR": (
        "labels.csv", lambda s: replace_line(s.files["labels.csv"], 3, "../../x.jpg,0,0,train"), 3,
        "not of the form NNNNNNNN.jpg"),
    "absolute image name": (
        "labels.csv", lambda s: replace_line(s.files["labels.csv"], 4, "/tmp/kaokore-x.jpg,0,0,train"), 4,
        "not of the form NNNNNNNN.jpg"),
    "file:// URL": (
        "urls.txt", lambda s: replace_line(s.files["urls.txt"], 3, "file:///etc/passwd"), 3, "not an http(s) URL"),
    "ftp:// URL": (
        "urls.txt", lambda s: replace_line(s.files["urls.txt"], 2, "ftp://127.0.0.1/x.jpg"), 2, "not an http(s) URL"),
    "URL without a host": (
        "urls.txt", lambda s: replace_line(s.files["urls.txt"], 5, "http:///iiif/x/full/256,256/0/default.jpg"), 5,
        "no host"),
    "Unicode line separator inside a URL": (
        "urls.txt", lambda s: replace_line(s.files["urls.txt"], 7, s.urls[6].replace("/iiif/", "/iiif/\u2028")), 7,
        "control characters"),
    "missing column": (
        "labels.csv", lambda s: s.files["labels.csv"].replace(b"image,gender,status,set", b"image,gender,set", 1), 1,
        "missing column(s): status"),
    "label outside the declared classes": (
        "labels.csv", lambda s: replace_line(s.files["labels.csv"], 2, "00000000.jpg,2,0,train"), 2,
        "outside 0..1"),
    "label that is a digit to str.isdigit() but not to int()": (
        "labels.csv", lambda s: replace_line(s.files["labels.csv"], 2, "00000000.jpg,0,\u00b2,train"), 2,
        "outside 0..3"),
    "duplicate row": (
        "labels.csv", lambda s: s.files["labels.csv"] + b"00000001.jpg,1,1,dev\n", None, "duplicate row"),
    "class name that is a path": (
        "labels.metadata.en.txt",
        lambda s: s.files["labels.metadata.en.txt"].replace(b"\t1\twarrior", b"\t1\t../../warrior"), 10,
        "not usable as a folder name"),
    "not UTF-8": (
        "urls.txt", lambda s: replace_line(s.files["urls.txt"], 4, b"http://127.0.0.1/caf\xe9.jpg"), 4,
        "not valid UTF-8"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_hostile_metadata_is_exit_2_naming_file_and_line_and_nothing_is_fetched_or_written(
        srv, synth, tmp_path, capsys, case):
    filename, mutate, line, words = CASES[case]
    synth.rewrite(filename, mutate(synth))
    if line is None:  # the duplicate is appended: its line is the last one
        line = len(synth.files[filename].decode().rstrip("\n").split("\n"))
    root = tmp_path / "data"
    before = snapshot(tmp_path, root)

    code, out, err = run_cli(capsys, "download", "--dir", str(root), "--metadata-dir", str(synth.meta_dir), "--quiet")

    assert code == EXIT_USAGE
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"kaokore: error: {filename}:{line}: ") and words in err, err
    assert srv.request_log == []
    assert snapshot(tmp_path, root) == before
    assert image_files(root) == {}


def test_only_newlines_end_a_url_line_so_no_image_takes_another_ones_url(srv, synth, tmp_path):
    # str.splitlines() also ends a line at U+2028 or U+0085: one of those after a URL would add a
    # line, and every later image would be saved under the name (and label) of the one before it.
    lines = synth.files["urls.txt"].decode().split("\n")
    lines[6] += "\u2028"
    lines[9] += "\x85"
    synth.rewrite("urls.txt", "\r\n".join(lines).encode())  # and Windows line endings

    summary = kaokore.download(tmp_path / "data", metadata_dir=synth.meta_dir, quiet=True)

    assert summary.exit_status == 0 and summary.downloaded == len(synth.urls)
    files = image_files(tmp_path / "data")
    for index, url in synth.urls.items():
        assert files[f"{index:08d}.jpg"].read_bytes() == srv.expected_bytes(url), index


def test_a_missing_metadata_file_is_exit_2_naming_it(srv, synth, tmp_path, capsys):
    (synth.meta_dir / "labels.csv").unlink()
    code, _, err = run_cli(capsys, "download", "--dir", str(tmp_path / "data"), "--metadata-dir",
                           str(synth.meta_dir), "--quiet")
    assert code == EXIT_USAGE
    assert err.count("\n") == 1 and "Traceback" not in err
    assert str(synth.meta_dir / "labels.csv") in err and "missing metadata file" in err
    assert srv.request_log == []


def test_remote_metadata_not_matching_its_pin_is_exit_2_and_nothing_is_fetched(srv, synth, tmp_path, capsys,
                                                                              monkeypatch):
    # Pin "1.0" to the synthetic files, then let the mirror serve a labels.csv with one label changed.
    monkeypatch.setattr(versions, "VERSIONS", {**versions.VERSIONS, "1.0": synth.version()})
    tampered = synth.files["labels.csv"].replace(b",0,0,train", b",1,0,train", 1)
    assert tampered != synth.files["labels.csv"]
    srv.set_file("/meta/dataset/labels.csv", tampered)
    root = tmp_path / "data"
    before = snapshot(tmp_path, root)

    code, _, err = run_cli(capsys, "download", "--dir", str(root), "--metadata-url", srv.base_urls[0] + "/meta",
                           "--quiet")

    assert code == EXIT_USAGE
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "labels.csv" in err and "SHA-256 mismatch" in err
    assert all(path.startswith("/meta/") for _, path in srv.request_log)  # no image was requested
    # Not even the files that did match; only the run lock, which stays in DIR for good.
    assert [p.name for p in root.iterdir() if p.name != ".kaokore.lock"] == []
    assert snapshot(tmp_path, root) == before

    srv.set_file("/meta/dataset/labels.csv", synth.files["labels.csv"])  # the control: the pinned bytes work
    code, _, err = run_cli(capsys, "download", "--dir", str(root), "--metadata-url", srv.base_urls[0] + "/meta",
                           "--quiet")
    assert code == 0, err


@pytest.mark.parametrize("where", ["under a regular file", "a regular file"])
def test_a_dir_that_cannot_be_created_is_exit_2_before_any_request(srv, synth, tmp_path, capsys, where):
    blocker = tmp_path / "blocker"
    blocker.write_bytes(b"not a directory")
    target = blocker / "data" if where == "under a regular file" else blocker
    code, _, err = run_cli(capsys, "download", "--dir", str(target), "--metadata-dir", str(synth.meta_dir), "--quiet")
    assert code == EXIT_USAGE
    assert err.count("\n") == 1 and "Traceback" not in err
    assert str(target) in err
    assert blocker.read_bytes() == b"not a directory"
    assert srv.request_log == []


EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 256 256\n%%EndComments\n0 0 moveto 256 256 lineto stroke\n%%EOF\n"


def test_hostile_answers_fail_only_their_own_image(srv, tmp_path, monkeypatch):
    """Oversized bodies, decompression bombs, redirects out of http(s) or in circles, PostScript."""
    import PIL.EpsImagePlugin

    ghostscript_calls = []
    monkeypatch.setattr(PIL.EpsImagePlugin, "Ghostscript", lambda *a, **k: ghostscript_calls.append(a))
    synth = make_synthetic(srv, tmp_path, n=15, blank=(), unlabeled=())
    hostile = {0: Fault.HUGE_BODY, 1: Fault.BOMB, 2: Fault.REDIRECT_FILE, 3: Fault.REDIRECT_LOOP}
    for i, fault in hostile.items():
        srv.inject(synth.urls[i], fault)  # every time: none of these may be retried into success
    eps_path = "/iiif/eps/page.tif/0,0,300,300/256,256/0/default.jpg"
    srv.set_file(eps_path, EPS)
    urls = dict(synth.urls)
    urls[4] = srv.base_urls[1] + eps_path
    synth.rewrite("urls.txt", ("\n".join(urls[i] for i in range(15)) + "\n").encode())
    root = tmp_path / "data"
    before = snapshot(tmp_path, root)

    summary = kaokore.download(root, metadata_dir=synth.meta_dir, quiet=True,
                               policy=kaokore.RetryPolicy(backoff_factor=0.01))

    assert summary.exit_status == EXIT_INCOMPLETE
    errors = {r["image"]: r["error"] for r in csv.DictReader(open(root / "failures.csv", newline=""))}
    assert sorted(errors) == [f"{i:08d}.jpg" for i in range(5)]
    assert errors["00000000.jpg"].startswith("response of 26214400 bytes exceeds the 20971520-byte cap")
    assert errors["00000001.jpg"].startswith("image too large")
    assert errors["00000002.jpg"].startswith("bad redirect") and "file:///etc/passwd" in errors["00000002.jpg"]
    assert errors["00000003.jpg"].startswith("bad redirect")
    assert errors["00000004.jpg"].startswith("body is not an image")
    # Refused on the first answer (the loop too: its 302 leads back to the URL just asked), except
    # the PostScript (a 200 that is not an image, retried like any bad body, in two rounds
    # since its host delivers other images).
    assert [srv.requests(urls[i]) for i in range(4)] == [1, 1, 1, 1]
    assert srv.requests(eps_path) == 2 * 6  # 6 tries at a body that is not an image, in each of two rounds
    assert ghostscript_calls == []
    assert sorted(image_files(root)) == [f"{i:08d}.jpg" for i in range(5, 15)]
    for i in range(5, 15):
        assert image_files(root)[f"{i:08d}.jpg"].read_bytes() == srv.expected_bytes(urls[i])
    assert snapshot(tmp_path, root) == before
    assert list(root.rglob("*.kaokore-tmp")) == []


def test_an_image_folder_that_is_a_file_is_a_directory_error(srv, synth, tmp_path, capsys):
    root = tmp_path / "data"
    root.mkdir()
    (root / "train").write_text("I am a file where a folder should be")
    code, _, err = run_cli(capsys, "download", "--dir", str(root), "--metadata-dir", str(synth.meta_dir), "--quiet")
    assert code == EXIT_USAGE and "train" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert srv.request_log == []


@pytest.mark.parametrize("timeout", ["inf", "nan", "0", "-1", "1e9"])
def test_a_timeout_that_would_hang_or_fail_everything_is_refused(synth, tmp_path, capsys, timeout):
    code, _, err = run_cli(capsys, "download", "--dir", str(tmp_path / "d"), "--metadata-dir", str(synth.meta_dir),
                           "--timeout", timeout)
    assert code == EXIT_USAGE and "--timeout" in err and len(err.strip().splitlines()) == 1


def test_a_full_disk_stops_the_run_with_one_line_instead_of_failing_every_image(srv, tmp_path, capsys, monkeypatch):
    import errno

    synth = make_synthetic(srv, tmp_path, n=200, blank=(), unlabeled=())
    written = []

    def disk_fills_up(root, rel, data, durable=False):
        if rel.endswith(".jpg"):
            if len(written) >= 5:
                raise OSError(errno.ENOSPC, "No space left on device")
            written.append(rel)
        real_write_file(root, rel, data, durable)

    import kaokore.storage.store

    real_write_file = kaokore.storage.store.write_file
    monkeypatch.setattr(kaokore.storage.store, "write_file", disk_fills_up)
    code, out, err = run_cli(capsys, "download", "--dir", str(tmp_path / "d"), "--metadata-dir",
                             str(synth.meta_dir), "--quiet", "--json")
    assert code == EXIT_USAGE
    assert "No space left on device" in err and "Traceback" not in err
    assert json.loads(out)["exit_status"] == EXIT_USAGE
    assert len(srv.request_log) < 100  # stopped, not every image fetched and thrown away
    # What did land is in the manifest, so a rerun after freeing space skips it.
    rows = list(csv.DictReader(open(tmp_path / "d" / "manifest.csv")))
    assert len(rows) == 5


def test_a_dir_that_is_a_file_says_so(synth, tmp_path, capsys):
    target = tmp_path / "passwd"
    target.write_text("root:x:0:0")
    code, _, err = run_cli(capsys, "download", "--dir", str(target), "--metadata-dir", str(synth.meta_dir))
    assert code == EXIT_USAGE and "it is a file" in err
    assert target.read_text() == "root:x:0:0"


def test_metadata_dir_of_another_version_is_refused(srv, synth, tmp_path, capsys, monkeypatch):
    # Pretend the synthetic files are 1.0's pinned ones; asking for 1.3 with them is a mix-up.
    monkeypatch.setattr(versions, "VERSIONS", {**versions.VERSIONS, "1.0": synth.version()})
    code, _, err = run_cli(capsys, "download", "--dir", str(tmp_path / "d"), "--metadata-dir", str(synth.meta_dir),
                           "--dataset_version", "1.3")
    assert code == EXIT_USAGE and "pass --dataset_version 1.0" in err
    assert srv.request_log == []
