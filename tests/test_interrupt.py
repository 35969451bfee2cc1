"""A real `kaokore` process stopped in the middle: Ctrl-C, SIGTERM, SIGKILL inside a write, a reader
of stdout that went away. Then what is on disk, what the server saw, and the run that resumes.

The kills land inside a write on purpose, not at a random moment: tests/child_hooks.py, imported by
the child, cuts the chosen write halfway and SIGKILLs the process there.
"""
from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from helpers import image_files, jpeg_info, make_synthetic, manifest, run_cli
from iiif_server import FakeIIIF

import kaokore
from kaokore.errors import EXIT_INTERRUPTED, EXIT_OK

N = 60
TESTS = Path(__file__).resolve().parent
TMP_SUFFIX = ".kaokore-tmp"  # docs: what a killed run may leave, and the next one sweeps
IMAGE_TEMPORARY = re.compile(r"\.(\d{8})\.jpg\.[0-9a-f]+" + re.escape(TMP_SUFFIX))

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the child hooks read /proc/self/fd")


@pytest.fixture
def slow_srv():
    # Half a second per image, two at a time per host: requests are in flight when a signal lands.
    with FakeIIIF(hosts=3, server_time=0.5) as server:
        yield server


# `python -m kaokore` with tests/child_hooks.py loaded first, and Ctrl-C made to raise KeyboardInterrupt:
# a test run in the background of a non-interactive shell hands its children SIGINT ignored.
AS_MAIN = ("import child_hooks, runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
           "runpy.run_module('kaokore', run_name='__main__')")


def child(*argv: str, stdout=subprocess.PIPE, **hooks: str) -> subprocess.Popen:
    env = {**os.environ, **hooks}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(TESTS), os.environ.get("PYTHONPATH")) if p)
    return subprocess.Popen([sys.executable, "-c", AS_MAIN, *argv], stdout=stdout, stderr=subprocess.PIPE,
                            text=True, env=env)


def download_args(synth, root: Path) -> list[str]:
    return ["download", "--dir", str(root), "--metadata-dir", str(synth.meta_dir), "--quiet",
            "--threads", "6", "--per-host", "2", "--timeout", "10"]


def wait_for(condition, proc: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + 60
    while not condition():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"never {what}"
        time.sleep(0.01)


def assert_every_image_is_whole(srv, root: Path, synth) -> dict[str, Path]:
    """Every file under a final image name decodes and holds exactly the server's bytes."""
    files = image_files(root)
    for name, path in files.items():
        assert jpeg_info(path) == ("JPEG", (256, 256), "RGB"), name
        assert path.read_bytes() == srv.expected_bytes(synth.urls[int(name[:8])]), name
    return files


def missing_paths(synth, files) -> list[str]:
    return sorted(urlsplit(url).path for i, url in synth.urls.items() if f"{i:08d}.jpg" not in files)


def rerun_completes_fetching_only_the_rest(srv, synth, root: Path, files, capsys) -> None:
    srv.server_time = 0.0  # the slow server was for the signal; the rest may come fast
    srv.reset_stats()
    code, _, err = run_cli(capsys, "download", "--dir", str(root), "--metadata-dir", str(synth.meta_dir), "--quiet")
    assert code == EXIT_OK, err
    assert sorted(path for _, path in srv.request_log) == missing_paths(synth, files)
    assert len(assert_every_image_is_whole(srv, root, synth)) == len(synth.urls)
    assert list(root.rglob(f"*{TMP_SUFFIX}")) == []  # swept
    assert kaokore.verify(root).ok


# --------------------------------------------------------------------------
# SIGKILL inside a write
# --------------------------------------------------------------------------


def test_a_kill_inside_an_image_write_leaves_no_partial_file_and_the_rerun_sweeps_the_temporary(
        srv, tmp_path, capsys):
    synth = make_synthetic(srv, tmp_path, n=40, blank=(), unlabeled=())
    root = tmp_path / "data"
    # The 5th image write gets half its bytes to the disk, then the process dies.
    proc = child(*download_args(synth, root), KAOKORE_TEST_KILL_IN_WRITE=r"^\.?\d{8}\.jpg(\.|$) 5")
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL

    files = assert_every_image_is_whole(srv, root, synth)  # nothing partial under a final name
    # Not "at least 4": the four writes before the cut one may still wait for their rename in other
    # workers when it dies (seen on a loaded machine). That the kill fell inside a write is shown below.
    assert len(files) < len(synth.urls)
    temporaries = {}
    for path in root.rglob(f"*{TMP_SUFFIX}"):
        if (match := IMAGE_TEMPORARY.fullmatch(path.name)):
            temporaries[path] = srv.expected_bytes(synth.urls[int(match[1])])
    # The write that was cut is still there, under its temporary name: half the server's bytes.
    assert any(path.read_bytes() == data[: len(data) // 2] for path, data in temporaries.items()), temporaries
    assert all(data.startswith(path.read_bytes()) for path, data in temporaries.items())

    rerun_completes_fetching_only_the_rest(srv, synth, root, files, capsys)


def test_a_kill_inside_the_manifest_write_leaves_the_old_manifest_and_loses_nothing(srv, tmp_path, capsys):
    synth = make_synthetic(srv, tmp_path, n=24, blank=(), unlabeled=())
    root = tmp_path / "data"
    code, _, err = run_cli(capsys, *download_args(synth, root), "--limit", "10")
    assert code == EXIT_OK, err
    old = (root / "manifest.csv").read_bytes()

    proc = child(*download_args(synth, root), KAOKORE_TEST_KILL_IN_WRITE=r"^\.?manifest\.csv(\.|$) 1")
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL

    assert (root / "manifest.csv").read_bytes() == old  # the old one, whole: never half of the new one
    (cut,) = root.glob(f".manifest.csv.*{TMP_SUFFIX}")
    assert cut.read_bytes().startswith(b"image,path,url,sha256,") and cut.read_bytes() != old
    files = assert_every_image_is_whole(srv, root, synth)
    assert len(files) == len(synth.urls)  # every image had landed before the manifest was written
    # The journal kept every row of the killed run: the rerun fetches nothing.
    rerun_completes_fetching_only_the_rest(srv, synth, root, files, capsys)
    assert set(manifest(root)) == set(files)


# --------------------------------------------------------------------------
# Ctrl-C and SIGTERM
# --------------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_signal_stops_new_requests_saves_state_exits_130_and_a_rerun_resumes(slow_srv, tmp_path, capsys, sig):
    synth = make_synthetic(slow_srv, tmp_path, n=N, blank=(), unlabeled=())
    root = tmp_path / "data"
    proc = child(*download_args(synth, root))
    try:
        wait_for(lambda: slow_srv.requests() >= 12, proc, "got going")
        sent = time.monotonic()
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()

    assert proc.returncode == EXIT_INTERRUPTED, err
    assert "Traceback" not in err
    assert [line for line in err.splitlines() if line.startswith("kaokore 1.0: interrupted: ")] != [], err
    # No new requests: each of the 6 workers may have been handed one more image in the instant
    # between the signal and the stop (every answer takes 0.5 s, so never two). Without the stop,
    # the 2 s the run gives images in flight to land would bring about 24.
    started_after = [t for t in slow_srv.request_times if t > sent]
    assert len(started_after) <= 6, len(started_after)

    files = assert_every_image_is_whole(slow_srv, root, synth)
    assert 0 < len(files) < N  # stopped in the middle, not at the end
    rows = manifest(root)
    assert set(rows) == set(files)  # state saved: a row for every image that landed, and only those
    for name, row in rows.items():  # each row describes its file byte for byte
        assert hashlib.sha256(files[name].read_bytes()).hexdigest() == row["sha256"]

    rerun_completes_fetching_only_the_rest(slow_srv, synth, root, files, capsys)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_verify_interrupted_exits_130_with_one_line(srv, synth, tmp_path, capsys, sig):
    root = tmp_path / "data"
    assert kaokore.download(root, metadata_dir=synth.meta_dir, quiet=True).exit_status == EXIT_OK
    marker, release = tmp_path / "verifying", tmp_path / "release"
    # verify is held as it opens its first image, so the signal lands while it checks images.
    proc = child("verify", "--dir", str(root),
                 KAOKORE_TEST_HOLD_OPEN=rf"^\d{{8}}\.jpg$ {marker} {release}")
    try:
        wait_for(marker.exists, proc, "started checking images")
        proc.send_signal(sig)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            release.touch()  # a verify checking images in threads holds that one until released
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == EXIT_INTERRUPTED, (out, err)
    assert err == "kaokore: interrupted\n"


# --------------------------------------------------------------------------
# A reader of stdout that left early
# --------------------------------------------------------------------------


@pytest.mark.parametrize("command", [["versions"], ["info"], ["info", "--json"], ["verify"], ["verify", "--json"],
                                     ["download", "--json"]], ids=" ".join)
def test_a_reader_that_left_early_gives_141_and_no_traceback(srv, synth, tmp_path, command):
    """`kaokore ... | head -c1`, made certain: the pipe's reading end is closed before the command writes."""
    root = tmp_path / "data"
    assert kaokore.download(root, metadata_dir=synth.meta_dir, quiet=True).exit_status == EXIT_OK
    args = [*command] if command == ["versions"] else [*command, "--dir", str(root)]
    if command[0] == "download":
        args += ["--metadata-dir", str(synth.meta_dir), "--quiet"]
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = child(*args, stdout=write_end)
    finally:
        os.close(write_end)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 141, err
    assert "Traceback" not in err and "Exception ignored" not in err, err
