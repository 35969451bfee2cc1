"""DIR is kaokore's alone: symbolic links, the run lock, full disks and squatted paths.

Nothing outside DIR is ever created, truncated, moved or deleted, whatever links
someone planted in it; one run at a time holds DIR, with no window; a full disk
stops the run with one line and the record of what landed; a path that cannot be
written fails that image alone.
"""
from __future__ import annotations

import csv
import errno
import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

from helpers import image_files, make_synthetic, run_cli

from kaokore.errors import EXIT_INCOMPLETE, EXIT_OK, EXIT_USAGE
from kaokore.storage import manifest, records, safefs, safewrite, store, walk
from kaokore.storage.lock import LOCK, Busy, exclusive, is_held
from kaokore.storage.manifest import Journal
from kaokore.storage.records import ManifestRow
from kaokore.storage.safewrite import TMP_SUFFIX
from kaokore.storage.store import PathError, StoreError, write_image


def snapshot(top: Path) -> dict[str, bytes | str]:
    """Every entry under `top` (links not followed): file bytes, link targets, folders."""
    found: dict[str, bytes | str] = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            rel = str(path.relative_to(top))
            if path.is_symlink():
                found[rel] = "-> " + os.readlink(path)
            elif path.is_dir():
                found[rel] = "dir"
            else:
                found[rel] = path.read_bytes()
    return found


@pytest.fixture
def outside(tmp_path) -> Path:
    """Another user's folder next to DIR, with a file of their own."""
    folder = tmp_path / "someone-else"
    folder.mkdir()
    (folder / "thesis.txt").write_bytes(b"five years of work\n")
    (folder / "00000000.jpg").write_bytes(b"not kaokore's\n")
    return folder


def download(capsys, root: Path, synth, *extra: str) -> tuple[int, str, str]:
    return run_cli(capsys, "download", "--dir", str(root), "--metadata-dir", str(synth.meta_dir), "--quiet", *extra)


def image_requests(srv) -> list[str]:
    return [path for _, path in srv.request_log if "/iiif/" in path]


# --- symbolic links ----------------------------------------------------------------------------

@pytest.mark.parametrize("limit", [None, "0"])
@pytest.mark.parametrize("planted", ["train", "images_256", "labels.csv", "manifest.csv", "manifest.journal.csv",
                                     "kaokore.json", LOCK])
def test_a_folder_or_root_file_linked_outside_is_refused_before_anything_is_written(
        srv, synth, tmp_path, capsys, outside, planted, limit):
    root = tmp_path / "data"
    root.mkdir()
    target = outside if planted in ("train", "images_256") else outside / "thesis.txt"
    (root / planted).symlink_to(target)
    before, dir_before = snapshot(outside), snapshot(root)

    code, out, err = download(capsys, root, synth, *(["--limit", limit] if limit else []))

    assert code == EXIT_USAGE, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert f"{root / planted}" in err and "symbolic link leading outside" in err
    assert snapshot(outside) == before
    assert snapshot(root) == dir_before  # refused before anything was written, even the lock
    assert image_requests(srv) == []


def test_a_class_folder_linked_outside_is_refused(srv, synth, tmp_path, capsys, outside):
    root = tmp_path / "data"
    (root / "train").mkdir(parents=True)
    (root / "train" / "male").symlink_to(outside)
    before, dir_before = snapshot(outside), snapshot(root)
    code, _, err = download(capsys, root, synth, "--layout", "gender")
    assert code == EXIT_USAGE and f"{root / 'train' / 'male'}" in err and len(err.strip().splitlines()) == 1
    assert snapshot(outside) == before
    assert snapshot(root) == dir_before  # refused before the lock file or a metadata copy was written
    assert image_requests(srv) == []


@pytest.mark.parametrize("limit", [None, "0"])
def test_planted_probe_temporary_and_image_links_never_reach_outside(srv, synth, tmp_path, capsys, outside, limit):
    """Links where kaokore creates, replaces or sweeps files: each entry is acted on itself."""
    root = tmp_path / "data"
    (root / "train").mkdir(parents=True)
    victim = outside / "thesis.txt"
    planted = [
        root / f".write-probe{TMP_SUFFIX}",  # the probe's name before it became random
        root / f".manifest.csv.0badc0de{TMP_SUFFIX}",  # a temporary the sweep removes
        root / "train" / f".00000000.jpg.0badc0de{TMP_SUFFIX}",
        root / "train" / "00000000.jpg",  # an image's own name: replaced by the image, not written through
    ]
    for link in planted:
        link.symlink_to(victim)
    before = snapshot(outside)

    code, _, err = download(capsys, root, synth, *(["--limit", limit] if limit else []))

    assert code == EXIT_OK, err
    assert snapshot(outside) == before
    assert not any(p.is_symlink() for p in root.rglob(f"*{TMP_SUFFIX}"))  # swept: the links, not their target
    if limit == "0":
        return
    assert not (root / "train" / "00000000.jpg").is_symlink()  # replaced by the image, never written through
    assert (root / "train" / "00000000.jpg").read_bytes() == srv.expected_bytes(synth.urls[0])


def test_a_folder_linked_inside_dir_is_followed(srv, synth, tmp_path, capsys):
    """A link that leads back into DIR reaches nothing that is not DIR's own: the user's arrangement stands."""
    root = tmp_path / "data"
    (root / "store").mkdir(parents=True)
    (root / "images_256").symlink_to("store")
    code, _, err = download(capsys, root, synth, "--layout", "flat")
    assert code == EXIT_OK, err
    assert sorted(p.name for p in (root / "store").glob("*.jpg")) == sorted(synth.name(i) for i in synth.urls)
    assert (root / "images_256").is_symlink()


def test_a_hard_linked_journal_is_never_appended_to(tmp_path, outside):
    root = tmp_path / "data"
    root.mkdir()
    os.link(outside / "thesis.txt", root / records.JOURNAL)
    before = snapshot(outside)
    journal = Journal(root)
    journal.append(ManifestRow("00000001.jpg", "train/00000001.jpg", "http://x/1", "0" * 64, 1, 1, 1, "RGB", False,
                               "split"))
    journal.close()
    assert journal.error is None
    assert snapshot(outside) == before
    assert "00000001.jpg" in (root / records.JOURNAL).read_text()


def test_safefs_never_follows_a_link_swapped_in_after_the_check(tmp_path, outside):
    """The race: a folder checked as real, then replaced by a link before the write. The walk
    from DIR opens each folder without following links, so the write fails instead of leaving."""
    root = tmp_path / "data"
    root.mkdir()
    (root / "train").symlink_to(outside)
    real_root = os.path.realpath(root)
    with pytest.raises(OSError):
        with walk.real_folder(real_root, ["train"]):  # what _resolve would hand over had it looked earlier
            pass
    for op in (lambda: safewrite.write_file(root, "train/x.jpg", b"x"),
               lambda: safewrite.remove_file(root, "train/thesis.txt"),
               lambda: safewrite.move_file(root, "train/thesis.txt", "dev/thesis.txt"),
               lambda: safefs.read_file(root, "train/thesis.txt")):
        with pytest.raises(OSError) as info:
            op()
        assert info.value.errno == errno.ELOOP
    assert snapshot(outside) == {"thesis.txt": b"five years of work\n", "00000000.jpg": b"not kaokore's\n"}
    assert safefs.inside(root, "train") is False and safefs.inside(root, "dev/x") is True


SECRET_COLOUR = (255, 0, 255)  # no synthetic face is a flat magenta


def someone_elses_image() -> bytes:
    from PIL import Image

    from helpers import encode

    return encode(Image.new("RGB", (256, 256), SECRET_COLOUR))


def is_secret(pixels) -> bool:
    """Whether a decoded image (H x W x 3, any array) is the flat magenta planted outside DIR."""
    import numpy as np

    pixels = np.asarray(pixels, dtype=np.int16)
    return bool(np.abs(pixels - np.array(SECRET_COLOUR)).max() <= 8)


def plant(root: Path, outside: Path, what: str) -> list[str]:
    """A link leading outside DIR in place of a metadata file, an image or a class folder; the
    labelled train images it hides (gender layout: image 0 is a male train image)."""
    if what in ("labels.csv", "manifest.csv"):
        real = (root / what).read_text()
        # Another user's file: flipped labels, or a manifest vouching for their image.
        forged = real.replace(",0,", ",1,") if what == "labels.csv" else real.replace("http://", "http://SECRET.")
        (outside / what).write_text(forged)
        (root / what).unlink()
        (root / what).symlink_to(outside / what)
        return []
    male = root / "train" / "male"
    hidden = sorted(p.name for p in male.glob("*.jpg")) if what == "class folder" else ["00000000.jpg"]
    for name in hidden:
        (outside / name).write_bytes(someone_elses_image())
        (male / name).unlink()
    if what == "class folder":
        male.rmdir()
        male.symlink_to(outside)
    else:
        (male / "00000000.jpg").symlink_to(outside / "00000000.jpg")
    return hidden


@pytest.mark.parametrize("what", ["labels.csv", "manifest.csv", "image", "class folder"])
def test_verify_info_and_the_loaders_never_read_through_a_link_leading_outside(
        srv, synth, tmp_path, capsys, outside, what):
    """What the commands print and the loaders return comes from DIR alone: a link leading outside
    is reported (a metadata file: exit 2; an image or a class folder: the images are missing)."""
    root = tmp_path / "data"
    assert download(capsys, root, synth, "--layout", "gender")[0] == EXIT_OK
    train = sorted(synth.name(i) for i, (split, _, _) in synth.labels.items() if split == "train" and i in synth.urls)
    hidden = plant(root, outside, what)
    before = snapshot(outside)

    code, out, err = run_cli(capsys, "verify", "--dir", str(root), "--json")
    assert "SECRET" not in out + err
    if what == "labels.csv":
        assert code == EXIT_USAGE and len(err.strip().splitlines()) == 1 and "labels.csv" in err
    else:
        report = json.loads(out)
        assert code == EXIT_INCOMPLETE
        kinds = {(p["where"], p["kind"]) for p in report["problems"]}
        if what == "manifest.csv":  # not read: no image has a row
            assert kinds == {(synth.name(i), "unlisted") for i in synth.urls}
        else:
            assert kinds == {(name, "missing") for name in hidden}
            assert all("symbolic link leading outside" in p["detail"] for p in report["problems"])

    code, out, err = run_cli(capsys, "info", "--dir", str(root), "--json")
    assert "SECRET" not in out + err
    if what == "labels.csv":
        assert code == EXIT_USAGE and len(err.strip().splitlines()) == 1 and "labels.csv" in err
    else:
        info = json.loads(out)
        assert code == EXIT_OK and info["present"] == len(synth.urls) - len(hidden)
        assert info["split_present"]["train"] == len(train) - len(hidden)
        assert info["manifest"] is None if what == "manifest.csv" else info["manifest"] is not None

    from kaokore.errors import MetadataError
    from kaokore.offline.index import MissingImagesWarning

    pytest.importorskip("torch")
    pytest.importorskip("tensorflow")
    import kaokore.tensorflow as tf_loader
    import kaokore.torch as torch_loader
    if what == "labels.csv":
        for load in (torch_loader.KaoKore, tf_loader.load):
            with pytest.raises(MetadataError, match="symbolic link leading outside"):
                load(root, split="train", category="gender")
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MissingImagesWarning)  # the hidden images are left out, and said so
            dataset = torch_loader.KaoKore(root, split="train", category="gender")
            tf_dataset = tf_loader.load(root, split="train", category="gender")
        names = [Path(path).name for path, _ in dataset.samples]
        assert names == [name for name in train if name not in hidden]
        assert all(os.path.realpath(path).startswith(os.path.realpath(root) + os.sep) for path, _ in dataset.samples)
        assert not any(is_secret(dataset[i][0]) for i in range(len(dataset)))
        tf_images = [image.numpy() for image, _ in tf_dataset]
        assert len(tf_images) == len(names) and not any(is_secret(image) for image in tf_images)
    assert snapshot(outside) == before


# --- the run lock ------------------------------------------------------------------------------

LOCK_WORKER = r"""
import json, os, sys, time
from kaokore.storage.lock import Busy, exclusive, is_held
root, role, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
go, stop, marker = (os.path.join(root, n) for n in ("go", "stop", "held-by-one"))
while not os.path.exists(go):
    time.sleep(0.001)
counts = {"holds": 0, "busy": 0, "overlaps": 0, "seen_held": 0, "rounds": 0}
# A watcher is a looker that looks until told to stop, which is after every holder finished: it
# overlaps the holders wholly, however the processes were scheduled.
for counts["rounds"] in range(1, rounds + 1 if role != "watcher" else 10**9):
    if role == "holder":
        try:
            with exclusive(root):
                counts["holds"] += 1
                try:
                    os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
                except FileExistsError:
                    counts["overlaps"] += 1  # another holder is inside too: it removes the marker
                    continue
                os.unlink(marker)
        except Busy:
            counts["busy"] += 1
        if counts["busy"] >= 100 and counts["holds"] >= 100:
            break
    else:  # looker, watcher
        counts["seen_held"] += is_held(root)
        if os.path.exists(stop):
            break
print(json.dumps(counts))
"""


def run_lock_workers(root: Path, roles: list[str], rounds: int) -> list[dict]:
    root.mkdir(exist_ok=True)
    procs = [subprocess.Popen([sys.executable, "-c", LOCK_WORKER, str(root), role, str(rounds)],
                              stdout=subprocess.PIPE, text=True) for role in roles]
    (root / "go").touch()
    results = [None] * len(procs)
    # Holders finish on their own (bounded rounds); then lookers are told to stop.
    for i, (role, proc) in enumerate(zip(roles, procs)):
        if role == "holder":
            results[i] = json.loads(proc.communicate(timeout=600)[0])
    (root / "stop").touch()
    for i, proc in enumerate(procs):
        if results[i] is None:
            results[i] = json.loads(proc.communicate(timeout=600)[0])
        assert proc.returncode == 0
    return results


def test_lock_stress_no_two_processes_ever_hold_dir_at_once(tmp_path):
    roles = ["holder"] * 4 + ["looker"]
    results = run_lock_workers(tmp_path / "d", roles, rounds=20000)
    holders = [r for role, r in zip(roles, results) if role == "holder"]
    assert sum(r["overlaps"] for r in holders) == 0, holders
    # The test proves something only if the holders really competed.
    assert sum(r["holds"] for r in holders) >= 100 and sum(r["busy"] for r in holders) >= 100, holders
    assert (tmp_path / "d" / "held-by-one").exists() is False


def test_lookers_never_make_a_lone_download_refuse(tmp_path):
    """verify/info look with a shared lock for an instant; a download meeting only them waits, never refuses."""
    roles = ["holder", "watcher", "watcher"]
    results = run_lock_workers(tmp_path / "d", roles, rounds=3000)
    holder, lookers = results[0], results[1:]
    assert holder["busy"] == 0 and holder["overlaps"] == 0 and holder["holds"] == holder["rounds"] == 3000
    # The lookers did see the download hold DIR (3000 times it did), so the holder met them and waited.
    assert all(r["seen_held"] > 0 for r in lookers), lookers


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the child hooks read /proc/self/fd")
def test_two_real_downloads_in_one_dir_the_second_exits_2_at_once_and_asks_nothing(srv, synth, tmp_path, capsys):
    """Two `kaokore download` processes, the first held in the middle of its run (tests/child_hooks.py
    stops it as it writes its first image): the second exits 2 with one line and sends no request
    (its requests would go through the proxy, which saw none); the first then completes."""
    root, held, release = tmp_path / "data", tmp_path / "held", tmp_path / "release"
    tests = str(Path(__file__).resolve().parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (tests, os.environ.get("PYTHONPATH")) if p)}
    argv = [sys.executable, "-c", "import child_hooks, runpy; runpy.run_module('kaokore', run_name='__main__')",
            "download", "--dir", str(root), "--metadata-dir", str(synth.meta_dir), "--quiet"]
    first = subprocess.Popen(argv, env={**env, "KAOKORE_TEST_HOLD_OPEN": rf"\.jpg\..*{TMP_SUFFIX}$ {held} {release}"},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not held.exists():
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()
            time.sleep(0.01)
        proxied = {k: v for k, v in env.items() if k.lower() != "no_proxy"}
        second = subprocess.run(argv, env={**proxied, "HTTP_PROXY": srv.proxy_url, "http_proxy": srv.proxy_url},
                                capture_output=True, text=True, timeout=60)
        assert first.poll() is None  # the first still ran, holding DIR
    finally:
        release.touch()
        out, err = first.communicate(timeout=60)
    assert second.returncode == EXIT_USAGE and second.stdout == ""
    assert second.stderr == (f"kaokore: error: another kaokore download is using {str(root)!r}; "
                             "wait for it to finish or pass another --dir\n")
    assert srv.proxy_log == []  # not a metadata file, not an image
    assert first.returncode == EXIT_OK, err
    assert run_cli(capsys, "verify", "--dir", str(root))[0] == EXIT_OK


def test_the_lock_file_stays_and_is_not_a_stray(srv, synth, tmp_path, capsys):
    root = tmp_path / "data"
    assert download(capsys, root, synth)[0] == EXIT_OK
    assert (root / LOCK).is_file() and not is_held(root)
    code, out, err = run_cli(capsys, "verify", "--dir", str(root))
    assert code == EXIT_OK, out + err
    assert LOCK not in out


def test_verify_and_info_refuse_a_dir_a_download_holds(srv, synth, tmp_path, capsys):
    root = tmp_path / "data"
    assert download(capsys, root, synth)[0] == EXIT_OK
    with exclusive(root):
        assert is_held(root)
        for command in (["verify"], ["verify", "--json"], ["info"]):
            code, out, err = run_cli(capsys, *command, "--dir", str(root))
            assert code == EXIT_USAGE, (command, out, err)
            assert len(err.strip().splitlines()) == 1 and "download is running" in err
        code, _, err = download(capsys, root, synth)
        assert code == EXIT_USAGE and "another kaokore download" in err
        with pytest.raises(Busy):
            with exclusive(root):
                pass
    assert not is_held(root)
    assert run_cli(capsys, "verify", "--dir", str(root))[0] == EXIT_OK


def test_a_lock_file_that_is_a_link_inside_dir_is_refused_not_followed(srv, synth, tmp_path, capsys):
    root = tmp_path / "data"
    root.mkdir()
    (root / "mine.txt").write_bytes(b"keep")
    (root / LOCK).symlink_to("mine.txt")
    code, _, err = download(capsys, root, synth)
    assert code == EXIT_USAGE and LOCK in err and "symbolic link" in err and len(err.strip().splitlines()) == 1
    assert (root / "mine.txt").read_bytes() == b"keep" and (root / LOCK).is_symlink()


# --- full disks and squatted paths (a real full disk, quota, read-only: test_full_disk.py) -------------

@pytest.mark.parametrize("code", ["ENOSPC", "EDQUOT", "EROFS"])
def test_errors_of_the_disk_stop_the_run_errors_of_one_path_fail_that_image(tmp_path, monkeypatch, code):
    def refuse(number):
        def write_file(root, rel, data, durable=False):
            raise OSError(number, os.strerror(number), rel)
        return write_file

    monkeypatch.setattr(store, "write_file", refuse(getattr(errno, code)))
    with pytest.raises(StoreError) as info:
        write_image(tmp_path / "train" / "00000001.jpg", "train/00000001.jpg", b"x")
    assert str(tmp_path / "train" / "00000001.jpg") in str(info.value)
    for number in (errno.EISDIR, errno.ENOTDIR, errno.ENAMETOOLONG, errno.EACCES, errno.ELOOP, errno.EINVAL):
        monkeypatch.setattr(store, "write_file", refuse(number))
        with pytest.raises(PathError, match="train/00000001.jpg"):
            write_image(tmp_path / "train" / "00000001.jpg", "train/00000001.jpg", b"x")


def disk_fills_after(monkeypatch, images: int, also: tuple[str, ...] = ()):
    """From the (images+1)-th image on, and for the root files in `also`, writes fail as on a full disk."""
    landed = []
    real = store.write_file

    def write_file(root, rel, data, durable=False):
        if rel in also or (rel.endswith(".jpg") and len(landed) >= images):
            raise OSError(errno.ENOSPC, "No space left on device", rel)
        if rel.endswith(".jpg"):
            landed.append(rel)
        real(root, rel, data, durable)

    monkeypatch.setattr(store, "write_file", write_file)
    return landed


def test_when_the_manifest_cannot_be_written_either_the_first_error_is_the_one_reported(
        srv, tmp_path, capsys, monkeypatch):
    synth = make_synthetic(srv, tmp_path, n=40, blank=(), unlabeled=())
    root = tmp_path / "data"
    disk_fills_after(monkeypatch, 3, also=("manifest.csv",))
    code, out, err = download(capsys, root, synth, "--json", "--threads", "1")
    assert code == EXIT_USAGE
    assert ".jpg" in err.strip().splitlines()[-1] and "manifest.csv" not in err.strip().splitlines()[-1]
    assert json.loads(out)["downloaded"] == 3
    # The journal the run kept holds what landed, so a rerun still skips it.
    assert len(manifest.read_manifest(root)) == 3


def test_a_folder_squatting_one_image_fails_that_image_alone(srv, synth, tmp_path, capsys):
    root = tmp_path / "data"
    squatter = root / "train" / synth.name(0)
    squatter.mkdir(parents=True)
    (squatter / "notes.txt").write_bytes(b"mine")

    code, out, err = download(capsys, root, synth)

    assert code == EXIT_INCOMPLETE, err
    failures = list(csv.DictReader(open(root / "failures.csv")))
    assert [(f["image"], "Is a directory" in f["error"]) for f in failures] == [(synth.name(0), True)]
    landed = [p for p in image_files(root).values() if p.is_file()]
    assert len(landed) == len(synth.urls) - 1  # every other image landed
    assert (squatter / "notes.txt").read_bytes() == b"mine"

    (squatter / "notes.txt").unlink()
    squatter.rmdir()
    code, _, err = download(capsys, root, synth)
    assert code == EXIT_OK, err
    assert not (root / "failures.csv").exists()


def test_verify_lists_no_file_of_a_folder_linked_outside(srv, synth, tmp_path, capsys, outside):
    root = tmp_path / "data"
    assert download(capsys, root, synth, "--layout", "gender")[0] == EXIT_OK
    for image in (root / "train" / "male").iterdir():
        image.rename(outside / image.name)
    (root / "train" / "male").rmdir()
    (root / "train" / "male").symlink_to(outside)
    code, out, _ = run_cli(capsys, "verify", "--dir", str(root))
    assert code == EXIT_INCOMPLETE
    assert "thesis.txt" not in out and "stray" not in out  # nothing of the outside folder is listed
    assert "missing" in out  # the images behind the link are not counted as DIR's


@pytest.mark.parametrize("planted", ["kaokore.json", "manifest.csv", "labels.csv"])
def test_a_fifo_planted_in_dir_hangs_nothing(srv, synth, tmp_path, capsys, planted):
    root = tmp_path / "data"
    assert download(capsys, root, synth)[0] == EXIT_OK
    (root / planted).unlink()
    os.mkfifo(root / planted)
    for argv in (["verify", "--dir", str(root)], ["info", "--dir", str(root)]):
        # A subprocess, so that a hang is a timeout here rather than a stuck test run.
        done = subprocess.run([sys.executable, "-m", "kaokore", *argv], capture_output=True, text=True, timeout=60)
        assert "Traceback" not in done.stderr, done.stderr


def test_a_folder_squatting_one_image_during_a_layout_switch_fails_that_image_alone(srv, synth, tmp_path, capsys):
    root = tmp_path / "data"
    assert download(capsys, root, synth)[0] == EXIT_OK
    moving = next(i for i, (split, gender, _) in synth.labels.items() if i in synth.urls and gender == 1)
    split = synth.labels[moving][0]
    squatter = root / split / "female" / synth.name(moving)
    squatter.mkdir(parents=True)

    code, _, err = download(capsys, root, synth, "--layout", "gender")

    assert code == EXIT_INCOMPLETE, err
    failures = list(csv.DictReader(open(root / "failures.csv")))
    assert [f["image"] for f in failures] == [synth.name(moving)]
    assert json.loads((root / "kaokore.json").read_text())["layout"] == "gender"
    assert "moved to the gender layout" in err.strip().splitlines()[-1]


def _disk_full(monkeypatch) -> None:
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(safewrite, "_write_file", full)


def test_a_disk_full_before_any_image_still_gives_a_summary_and_json(srv, synth, tmp_path, capsys, monkeypatch):
    root = tmp_path / "data"
    _disk_full(monkeypatch)
    code, out, err = download(capsys, root, synth, "--json")
    lines = err.strip().splitlines()
    assert code == EXIT_USAGE
    assert lines[-1].startswith("kaokore: error: cannot write") and "No space left" in lines[-1]
    assert lines[-2].startswith("kaokore 1.0: INCOMPLETE") and "not attempted" in lines[-2]
    doc = json.loads(out)
    assert doc["exit_status"] == EXIT_USAGE and "No space left" in doc["error"]
    assert doc["not_attempted"] == len(synth.urls) and doc["downloaded"] == 0
    assert image_requests(srv) == []
