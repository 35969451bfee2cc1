"""Ctrl-C and SIGKILL in the middle of a real `python -m kaokore download`, then the run that resumes."""
from __future__ import annotations

import csv
import hashlib
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from helpers import image_files, jpeg_info, make_synthetic, run_cli
from iiif_server import FakeIIIF

import kaokore
from kaokore.errors import EXIT_INTERRUPTED, EXIT_OK
from kaokore.store import TMP_SUFFIX

N = 120


@pytest.fixture
def slow_srv():
    # 120 images at 50 ms each, two at a time per host: about a second of work, so a signal lands mid-run.
    with FakeIIIF(hosts=3, server_time=0.05) as server:
        yield server


# `python -m kaokore`, except that Ctrl-C is made to raise KeyboardInterrupt: a test run in the
# background of a non-interactive shell hands its children SIGINT ignored, and Python keeps it so.
AS_MAIN = ("import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
           "runpy.run_module('kaokore', run_name='__main__')")


def start(synth, root: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", AS_MAIN, "download", "--dir", str(root), "--metadata-dir", str(synth.meta_dir),
         "--quiet", "--threads", "6", "--per-host", "2", "--timeout", "10"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_requests(srv, proc: subprocess.Popen, count: int) -> None:
    """Until the run is under way; the server's counter is the only signal a --quiet child gives."""
    deadline = time.monotonic() + 30
    while srv.requests() < count:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the download never got going"
        time.sleep(0.01)


def assert_every_image_is_whole(srv, root: Path, synth) -> dict[str, Path]:
    files = image_files(root)
    for name, path in files.items():
        assert jpeg_info(path) == ("JPEG", (256, 256), "RGB"), name
        assert path.read_bytes() == srv.expected_bytes(synth.urls[int(name[:8])]), name
    return files


def missing_paths(synth, files) -> list[str]:
    return sorted(urlsplit(url).path for i, url in synth.urls.items() if f"{i:08d}.jpg" not in files)


def test_ctrl_c_exits_130_within_5_s_with_the_manifest_saved_and_a_rerun_resumes(slow_srv, tmp_path, capsys):
    synth = make_synthetic(slow_srv, tmp_path, n=N, blank=(), unlabeled=())
    root = tmp_path / "data"
    proc = start(synth, root)
    try:
        wait_for_requests(slow_srv, proc, 12)
        proc.send_signal(signal.SIGINT)
        sent = time.monotonic()
        _, err = proc.communicate(timeout=30)
        took = time.monotonic() - sent
    finally:
        proc.kill()
    assert proc.returncode == EXIT_INTERRUPTED, err
    assert took < 5.0
    assert "Traceback" not in err
    assert [line for line in err.splitlines() if line.startswith("kaokore 1.0: interrupted: ")] != [], err

    files = assert_every_image_is_whole(slow_srv, root, synth)
    assert 0 < len(files) < N  # stopped in the middle, not at the end
    manifest = {r["image"]: r for r in csv.DictReader(open(root / "manifest.csv", newline=""))}
    assert manifest, "the manifest was not saved"
    for name, row in manifest.items():  # every row describes a file that is there, byte for byte
        assert hashlib.sha256(files[name].read_bytes()).hexdigest() == row["sha256"]

    slow_srv.reset_stats()
    code, _, err = run_cli(capsys, "download", "--dir", str(root), "--metadata-dir", str(synth.meta_dir), "--quiet")
    assert code == EXIT_OK, err
    assert sorted(path for _, path in slow_srv.request_log) == missing_paths(synth, files)
    assert len(assert_every_image_is_whole(slow_srv, root, synth)) == N


def test_sigkill_leaves_no_partial_image_and_the_resumed_run_completes_and_sweeps_temporaries(
        slow_srv, tmp_path, capsys):
    synth = make_synthetic(slow_srv, tmp_path, n=N, blank=(), unlabeled=())
    root = tmp_path / "data"
    moment = random.uniform(0.0, 0.5)
    proc = start(synth, root)
    try:
        wait_for_requests(slow_srv, proc, 6)
        time.sleep(moment)  # a random point of the run, not an event: that is the point
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == -signal.SIGKILL, f"finished before the kill at +{moment:.2f}s"

    files = assert_every_image_is_whole(slow_srv, root, synth)
    assert len(files) < N
    # What a kill during a write leaves: temporaries next to images and bookkeeping.
    leftovers = [root / "train" / f".00000000.jpg.0badc0de{TMP_SUFFIX}", root / f".manifest.csv.0badc0de{TMP_SUFFIX}"]
    for path in leftovers:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"\xff\xd8\xff half an image")

    slow_srv.reset_stats()
    code, _, err = run_cli(capsys, "download", "--dir", str(root), "--metadata-dir", str(synth.meta_dir), "--quiet")
    assert code == EXIT_OK, err
    assert sorted(path for _, path in slow_srv.request_log) == missing_paths(synth, files)
    assert len(assert_every_image_is_whole(slow_srv, root, synth)) == N
    assert list(root.rglob(f"*{TMP_SUFFIX}")) == []
    assert kaokore.verify(root).ok
