"""A disk that fills up, goes over quota or turns read-only in the middle of a run.

ENOSPC comes from a real filesystem: a small tmpfs the test mounts (root only; CI runs as root, and
KAOKORE_TESTS_REQUIRE_ALL turns the skip elsewhere into a failure). EDQUOT and EROFS come from a
budget at the lowest layer Python gives kaokore to write through, the file objects it opens: once
spent, every write under DIR fails, the manifest's and failures.csv's included, so only the room
the run set aside for them lets them be written.
"""
from __future__ import annotations

import builtins
import csv
import errno
import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from helpers import image_files, jpeg_info, make_synthetic, run_cli

from kaokore.errors import EXIT_OK, EXIT_USAGE

TMP_SUFFIX = ".kaokore-tmp"
# A long identifier makes each manifest row ~1.4 kB: the manifest of what landed is then far bigger
# than the room a failed image write leaves behind, so it is written only if room was set aside.
LONG_ID = "book{host}/" + "x" * 1200 + "/page{page}.tif"


def mount_tmpfs(where: Path, size: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (CI runs as root)")
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(where)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs; `grow(size)` makes room later, as a user freeing space would."""
    where = tmp_path / "disk"
    mount_tmpfs(where, "1m")

    def grow(size: str) -> None:
        subprocess.run(["mount", "-o", f"remount,size={size}", str(where)], check=True)

    try:
        yield where, grow
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def long_url_synthetic(srv, tmp_path, n: int):
    synth = make_synthetic(srv, tmp_path, n=n, blank=(), unlabeled=())
    synth.urls = {i: srv.url(i % 3, LONG_ID.format(host=i % 3, page=i // 5), region=f"{10 * i},{20 + i},300,300")
                  for i in range(n)}
    synth.rewrite("urls.txt", "".join(f"{synth.urls[i]}\n" for i in range(n)).encode())
    return synth


def download(capsys, root: Path, synth, *extra: str):
    return run_cli(capsys, "download", "--dir", str(root), "--metadata-dir", str(synth.meta_dir), "--quiet", *extra)


def rows_of(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def assert_stopped_by_the_disk(srv, synth, root: Path, code: int, out: str, err: str, reason: str) -> dict:
    """One line naming the path, the summary still printed, --json with the error, nothing partial."""
    assert code == EXIT_USAGE and "Traceback" not in err
    lines = err.strip().splitlines()
    assert lines[-1].startswith(f"kaokore: error: cannot write '{root}") and lines[-1].endswith(reason), lines
    assert lines[-2].startswith("kaokore 1.0: INCOMPLETE: ") and "not attempted" in lines[-2]
    doc = json.loads(out)
    assert doc["exit_status"] == EXIT_USAGE and doc["error"].endswith(reason) and doc["complete"] is False
    files = image_files(root)
    for name, path in files.items():  # whatever is under a final name is whole
        assert jpeg_info(path) == ("JPEG", (256, 256), "RGB") and path.read_bytes() == srv.expected_bytes(
            synth.urls[int(name[:8])])
    assert 0 < doc["downloaded"] == len(files) < len(synth.urls)
    return doc


def assert_the_record_was_saved(root: Path, doc: dict, reason: str) -> None:
    files = image_files(root)
    manifest = {r["image"]: r for r in rows_of(root / "manifest.csv")}
    assert set(manifest) == set(files)  # everything that landed, and only that
    failures = {r["image"]: r["error"] for r in rows_of(root / "failures.csv")}
    assert failures and all(error.endswith(reason) for error in failures.values()), failures  # those that met it
    assert len(failures) == doc["failed"] and not set(failures) & set(files)
    assert list(root.rglob(f"*{TMP_SUFFIX}")) == []  # the room set aside was given back, no temporary left


def assert_a_rerun_fetches_only_the_rest(srv, synth, root: Path, capsys) -> None:
    missing = sorted(urlsplit(u).path for i, u in synth.urls.items() if synth.name(i) not in image_files(root))
    srv.reset_stats()
    code, _, err = download(capsys, root, synth)
    assert code == EXIT_OK, err
    assert sorted(path for _, path in srv.request_log) == missing
    assert len(image_files(root)) == len(synth.urls) and not (root / "failures.csv").exists()


def test_a_real_full_disk_stops_the_run_and_the_set_aside_room_saves_the_record(srv, tmp_path, capsys, small_disk):
    disk, grow = small_disk
    synth = long_url_synthetic(srv, tmp_path, n=150)
    root = disk / "data"

    code, out, err = download(capsys, root, synth, "--json")

    reason = "No space left on device"
    doc = assert_stopped_by_the_disk(srv, synth, root, code, out, err, reason)
    assert_the_record_was_saved(root, doc, reason)
    grow("8m")  # the user frees some space, and runs the same command
    assert_a_rerun_fetches_only_the_rest(srv, synth, root, capsys)


def test_a_complete_tree_reruns_on_a_full_disk_and_exits_0(srv, synth, tmp_path, capsys, small_disk):
    disk, _ = small_disk
    root = disk / "data"
    assert download(capsys, root, synth)[0] == EXIT_OK
    fd = os.open(disk / "ballast", os.O_WRONLY | os.O_CREAT)
    try:  # fill the disk to the last byte
        while True:
            os.write(fd, b"\xff" * 4096)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)
    assert os.statvfs(disk).f_bavail == 0
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    srv.reset_stats()
    code, _, err = download(capsys, root, synth)
    assert code == EXIT_OK, err
    assert srv.request_log == []
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before  # it had nothing to write


# --------------------------------------------------------------------------
# Over quota, read-only: a budget at the lowest write layer
# --------------------------------------------------------------------------


class Budget:
    """Every write to a file under `root` fails with `number` once `limit` bytes are used under it
    (files as they are now: a file deleted gives its room back), or once `after` images landed."""

    def __init__(self, root: Path, number: int, limit: int | None = None, after: int | None = None):
        self.root, self.number, self.limit, self.after = os.path.realpath(root), number, limit, after

    def used(self) -> int:
        total = 0
        for dirpath, _, names in os.walk(self.root):
            for name in names:
                try:  # other threads create and remove temporaries meanwhile
                    total += os.lstat(os.path.join(dirpath, name)).st_size
                except FileNotFoundError:
                    pass
        return total

    def spent(self, adding: int) -> bool:
        if self.after is not None:
            return len(image_files(Path(self.root))) >= self.after
        return self.used() + adding > self.limit

    def open(self, real_open):
        budget = self

        class Metered:
            def __init__(self, file):
                self._file = file

            def write(self, data):
                if budget.spent(len(data)):
                    raise OSError(budget.number, os.strerror(budget.number))
                return self._file.write(data)

            def __enter__(self):
                self._file.__enter__()
                return self

            def __exit__(self, *exc):
                return self._file.__exit__(*exc)

            def __getattr__(self, attr):
                return getattr(self._file, attr)

        def metered_open(file, mode="r", *args, **kwargs):
            opened = real_open(file, mode, *args, **kwargs)
            path = os.readlink(f"/proc/self/fd/{file}") if isinstance(file, int) else os.path.realpath(file)
            if any(m in mode for m in "wax+") and path.startswith(budget.root + os.sep):
                return Metered(opened)
            return opened

        return metered_open


@pytest.fixture
def budget(monkeypatch):
    if not sys.platform.startswith("linux"):
        pytest.skip("the budget reads file names from /proc/self/fd")

    def install(root: Path, number: int, **kw) -> Budget:
        b = Budget(root, number, **kw)
        monkeypatch.setattr(builtins, "open", b.open(builtins.open))
        return b

    return install


def test_over_quota_stops_the_run_and_the_set_aside_room_saves_the_record(srv, tmp_path, capsys, budget, monkeypatch):
    synth = long_url_synthetic(srv, tmp_path, n=150)
    root = tmp_path / "data"
    budget(root, errno.EDQUOT, limit=1024 * 1024)

    code, out, err = download(capsys, root, synth, "--json")

    reason = os.strerror(errno.EDQUOT)
    doc = assert_stopped_by_the_disk(srv, synth, root, code, out, err, reason)
    assert_the_record_was_saved(root, doc, reason)
    monkeypatch.undo()
    assert_a_rerun_fetches_only_the_rest(srv, synth, root, capsys)


def test_a_disk_turning_read_only_stops_the_run_and_a_rerun_fetches_only_the_rest(srv, tmp_path, capsys, budget,
                                                                                 monkeypatch):
    """Nothing can be written once the disk is read-only, the record neither: the images that landed
    are whole, and the rerun finds them on disk (the journal, or adoption) instead of fetching them."""
    synth = make_synthetic(srv, tmp_path, n=60, blank=(), unlabeled=())
    root = tmp_path / "data"
    budget(root, errno.EROFS, after=10)

    code, out, err = download(capsys, root, synth, "--json")

    assert_stopped_by_the_disk(srv, synth, root, code, out, err, os.strerror(errno.EROFS))
    monkeypatch.undo()
    assert_a_rerun_fetches_only_the_rest(srv, synth, root, capsys)


def test_a_disk_without_room_for_the_record_stops_the_run_as_its_first_requests_go_out(srv, tmp_path, capsys,
                                                                                      budget):
    """The room for the manifest is set aside while the first requests go out, and before any image
    is written: a disk that cannot give it stops the run at once, naming the room, with no image
    written and at most the images the workers had already asked for failed with it."""
    synth = make_synthetic(srv, tmp_path, n=60, blank=(), unlabeled=())
    root = tmp_path / "data"
    metadata = sum(p.stat().st_size for p in synth.meta_dir.iterdir())
    budget(root, errno.EDQUOT, limit=metadata + 16 * 1024)  # DIR's copies of the metadata fit, ~100 KB more do not

    code, out, err = download(capsys, root, synth, "--json", "--threads", "2")

    assert code == EXIT_USAGE and "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"kaokore: error: cannot write to '{root}'") and "KiB free for its manifest" in last, err
    assert json.loads(out)["complete"] is False
    assert len(srv.request_log) <= 2  # only what the 2 workers had asked for already
    assert image_files(root) == {}
    failed = rows_of(root / "failures.csv") if (root / "failures.csv").exists() else []
    assert len(failed) <= 2 and all("KiB free for its manifest" in row["error"] for row in failed), failed
    assert list(root.rglob(f"*{TMP_SUFFIX}")) == []
