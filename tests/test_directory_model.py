"""One model of the dataset directory: any tree is recognised, versions are never mixed.

The trees here are made the way upstream's download.py makes them (images_256/ with
the server's bytes, grayscale bodies re-encoded as RGB, four metadata copies and no
urls.txt, no kaokore.json), for two synthetic versions whose image N differ. A
registry of those two versions stands in for the pinned one.
"""
from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import MappingProxyType

import pytest
from PIL import Image

from helpers import jpeg_info, manifest, pinned_version, run_cli
from iiif_server import Fault
from synthetic import default_label, metadata_files, write_files

import kaokore
from kaokore.dataset.versions import Version
from kaokore.errors import UsageError
from kaokore.storage.directory import inspect
from kaokore.storage.resolve import resolve

REPO = Path(__file__).resolve().parent.parent
UPSTREAM_COPIES = ("labels.csv", "labels.metadata.en.txt", "labels.metadata.ja.txt", "original_tags.txt")
N = 16
KEIO_200 = (2, 9)  # served at 200x200, as 2,233 Keio images of 1.3 are
GRAY = (4,)  # served grayscale: upstream re-encodes those as RGB


class TwoVersions:
    """Synthetic 1.0 and 1.3: the same numbering, different faces (regions) behind each number."""

    def __init__(self, srv, tmp_path: Path):
        self.srv = srv
        self.files: dict[str, dict[str, bytes]] = {}
        self.urls: dict[str, dict[int, str]] = {}
        self.registry: dict[str, Version] = {}
        for name, folder, shift in (("1.0", "dataset", 0), ("1.3", "dataset_v1.3", 7)):
            urls = {}
            for i in range(N):
                size = "200,200" if name == "1.3" and i in KEIO_200 else "256,256"
                urls[i] = srv.url(i % 3, f"book{i % 3}/page{i // 4}.tif",
                                  region=f"{10 * i + shift},{30 + i},300,300", size=size)
            # 3 is unlabeled in 1.0 and 13 in 1.3: the versions' labels.csv differ, as the real ones do
            unlabeled = 3 if name == "1.0" else 13
            labels = {i: default_label(i) for i in range(N) if i != unlabeled}
            files = metadata_files([urls[i] for i in range(N)], labels)
            for fname, data in files.items():
                srv.set_file(f"/meta/{folder}/{fname}", data)
            write_files(tmp_path / "meta" / folder, files)
            self.files[name] = files
            self.urls[name] = urls
            self.registry[name] = pinned_version(name, folder, len(urls), files)
        assert self.files["1.0"]["urls.txt"] != self.files["1.3"]["urls.txt"]

    def upstream_tree(self, root: Path, version: str, present, *, labels: bool = True) -> Path:
        """What upstream's download.py leaves: images_256/ and (after a finished run) four metadata copies."""
        images = root / "images_256"
        images.mkdir(parents=True)
        for i in present:
            url = self.urls[version][i]
            if i in GRAY:
                gray = self.srv.expected_bytes(url, Fault.GRAY)
                out = io.BytesIO()
                Image.open(io.BytesIO(gray)).convert("RGB").save(out, format="JPEG")  # as upstream does
                (images / f"{i:08d}.jpg").write_bytes(out.getvalue())
            else:
                (images / f"{i:08d}.jpg").write_bytes(self.srv.expected_bytes(url))
        if labels:
            for name in UPSTREAM_COPIES:
                (root / name).write_bytes(self.files[version][name])
        self.srv.reset_stats()
        return root


@pytest.fixture
def two(srv, tmp_path, monkeypatch):
    versions = TwoVersions(srv, tmp_path)
    registry = MappingProxyType(dict(versions.registry))
    for module in ("kaokore.dataset.versions", "kaokore.cli"):
        monkeypatch.setattr(f"{module}.VERSIONS", registry)
    monkeypatch.setenv("KAOKORE_METADATA_URL", srv.base_urls[0] + "/meta")
    return versions


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ---- upstream trees are completed in place ---------------------------------------------------------

def test_a_bare_download_completes_an_upstream_tree_in_its_own_version_and_layout(two, srv, tmp_path, capsys):
    present = [0, 1, 2, 4, 6, 8, 9, 12]
    root = two.upstream_tree(tmp_path / "up", "1.3", present)
    before = snapshot(root)

    code, _, err = run_cli(capsys, "download", "--dir", str(root), "--quiet")

    assert code == 0, err
    assert json.loads((root / "kaokore.json").read_text())["dataset_version"] == "1.3"
    assert json.loads((root / "kaokore.json").read_text())["layout"] == "flat"
    assert not any((root / d).exists() for d in ("train", "dev", "test", "unlabeled"))
    for name in UPSTREAM_COPIES:  # 1.3's labels stay 1.3's
        assert (root / name).read_bytes() == two.files["1.3"][name]
    assert (root / "urls.txt").read_bytes() == two.files["1.3"]["urls.txt"]
    rows = manifest(root)
    for i in range(N):
        url = two.urls["1.3"][i]
        path = root / "images_256" / f"{i:08d}.jpg"
        assert jpeg_info(path) == ("JPEG", (256, 256), "RGB")
        row = rows[f"{i:08d}.jpg"]
        assert row["url"] == url
        # upstream's images are never fetched again; only the missing ones are, from 1.3's URLs
        assert srv.requests(url) == (0 if i in present else 1), i
        assert row["origin"] == ("adopted" if i in present else "fetched")
        if row["converted"] == "false":  # claimed as the server's bytes: they must be
            assert path.read_bytes() == srv.expected_bytes(url), i
    for i in present:
        if i not in KEIO_200 and i not in GRAY:
            assert (root / "images_256" / f"{i:08d}.jpg").read_bytes() == before[f"images_256/{i:08d}.jpg"]
    for i in KEIO_200 + GRAY:  # normalized from the file on disk, recorded as converted
        row = rows[f"{i:08d}.jpg"]
        assert row["converted"] == "true" and row["origin"] == "adopted"
    assert rows[f"{KEIO_200[0]:08d}.jpg"]["source_width"] == "200"
    assert rows[f"{GRAY[0]:08d}.jpg"]["source_mode"] == "L"
    assert "8 adopted from disk" in err

    # and every reader sees the same tree
    report = kaokore.verify(root)
    assert report.ok and report.layout == "flat" and report.dataset_version == "1.3", report.text()
    from kaokore.offline.info import dataset_info
    info = dataset_info(root)
    assert info.layout == "flat" and info.present == N and info.dataset_version == "1.3"
    again = kaokore.download(root, quiet=True)
    assert again.already_present == N and again.downloaded == 0
    assert sum(srv.requests(two.urls["1.3"][i]) for i in range(N)) == N - len(present)


def test_download_py_completes_an_upstream_tree_the_same_way(two, srv, tmp_path):
    root = two.upstream_tree(tmp_path / "up", "1.3", [0, 1, 2])
    # download.py runs in a subprocess, without the fixture's registry: give it the synthetic one
    # through a small wrapper that patches the registry as the fixture does.
    script = tmp_path / "run.py"
    registry = {n: dict(v.sha256) for n, v in two.registry.items()}
    folders = {n: v.folder for n, v in two.registry.items()}
    script.write_text(
        "import runpy, sys, types\n"
        "from kaokore import cli\n"
        "from kaokore.dataset import versions\n"
        f"reg = types.MappingProxyType({{n: versions.Version(n, f, {N}, types.MappingProxyType(d)) "
        f"for (n, d), f in zip({registry!r}.items(), {list(folders.values())!r})}})\n"
        "versions.VERSIONS = cli.VERSIONS = reg\n"
        f"sys.argv = ['download.py', '--dir', {str(root)!r}, '--quiet']\n"
        f"runpy.run_path({str(REPO / 'download.py')!r}, run_name='__main__')\n")
    env = {**__import__("os").environ, "KAOKORE_METADATA_URL": srv.base_urls[0] + "/meta",
           "NO_PROXY": "127.0.0.1"}
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads((root / "kaokore.json").read_text())["dataset_version"] == "1.3"
    assert sorted(p.name for p in (root / "images_256").glob("*.jpg")) == [f"{i:08d}.jpg" for i in range(N)]
    for i in (0, 1):
        assert srv.requests(two.urls["1.3"][i]) == 0


# ---- refusals: exit 2, one line, the tree untouched --------------------------------------------------

def test_an_explicit_version_contradicting_an_upstream_tree_is_refused_untouched(two, srv, tmp_path, capsys):
    root = two.upstream_tree(tmp_path / "up", "1.3", [0, 1, 2, 4])
    before = snapshot(root)
    code, out, err = run_cli(capsys, "download", "--dir", str(root), "--dataset_version", "1.0")
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "1.3" in err and "1.0" in err, err
    assert snapshot(root) == before and srv.requests() == 0


def test_a_kaokore_tree_refuses_another_version_untouched(two, srv, tmp_path, capsys):
    root = tmp_path / "data"
    kaokore.download(root, dataset_version="1.0", quiet=True)
    capsys.readouterr()
    before = snapshot(root)
    srv.reset_stats()
    code, _, err = run_cli(capsys, "download", "--dir", str(root), "--dataset_version", "1.3", "--layout", "flat")
    assert code == 2 and "1.0" in err and "1.3" in err and len(err.strip().splitlines()) == 1
    assert snapshot(root) == before and srv.requests() == 0


def test_images_of_a_version_nobody_can_tell_are_refused_until_the_version_is_named(two, srv, tmp_path, capsys):
    # An interrupted upstream run: images, but the metadata copies come only at its end.
    root = two.upstream_tree(tmp_path / "up", "1.3", [0, 1, 4], labels=False)
    before = snapshot(root)
    code, _, err = run_cli(capsys, "download", "--dir", str(root))
    assert code == 2 and "--dataset_version" in err and len(err.strip().splitlines()) == 1
    assert snapshot(root) == before and srv.requests() == 0

    code, _, err = run_cli(capsys, "download", "--dir", str(root), "--dataset_version", "1.3", "--quiet")
    assert code == 0, err
    assert srv.requests(two.urls["1.3"][0]) == 0 and srv.requests(two.urls["1.3"][1]) == 0
    assert manifest(root)["00000000.jpg"]["origin"] == "adopted"


def test_unpinned_metadata_dir_on_a_tree_of_images_needs_the_version(two, srv, tmp_path, capsys):
    root = two.upstream_tree(tmp_path / "up", "1.3", [0, 1], labels=False)
    custom = tmp_path / "custom"
    files = dict(two.files["1.3"])
    files["urls.txt"] += two.urls["1.3"][0].encode() + b"\n"  # the user's own list: matches no pin
    write_files(custom, files)
    before = snapshot(root)
    code, _, err = run_cli(capsys, "download", "--dir", str(root), "--metadata-dir", str(custom))
    assert code == 2 and "--dataset_version" in err
    assert snapshot(root) == before


def test_metadata_dir_of_another_version_is_refused_on_a_pinned_tree(two, srv, tmp_path, capsys):
    # DIR holds 1.3's images and no manifest; the user brings 1.0's metadata with an edited tags file.
    root = tmp_path / "data"
    kaokore.download(root, dataset_version="1.3", layout="flat", quiet=True)
    (root / "manifest.csv").unlink()
    custom = tmp_path / "custom10"
    files = dict(two.files["1.0"])
    files["original_tags.txt"] += b"\n"
    write_files(custom, files)
    code, _, err = run_cli(capsys, "download", "--dir", str(root), "--metadata-dir", str(custom), "--quiet")
    assert code == 2 and "1.3" in err  # a pinned 1.3 tree is not 1.0, whatever the files say


# ---- the model itself, without a server ---------------------------------------------------------

def test_inspect_tells_the_version_from_each_kind_of_evidence(two, tmp_path):
    up = two.upstream_tree(tmp_path / "up", "1.3", [0])
    d = inspect(up)
    assert d.version.name == "1.3" and "labels.csv" in d.evidence and d.layout == "flat" and d.holds_images

    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "urls.txt").write_bytes(two.files["1.0"]["urls.txt"])
    (mixed / "labels.csv").write_bytes(two.files["1.3"]["labels.csv"])
    d = inspect(mixed)
    assert d.version is None and "different versions" in d.evidence

    liar = tmp_path / "liar"
    liar.mkdir()
    (liar / "urls.txt").write_bytes(two.files["1.0"]["urls.txt"])
    (liar / "kaokore.json").write_text(json.dumps({"dataset_version": "1.3", "layout": "split"}))
    assert inspect(liar).version is None

    empty = inspect(tmp_path / "nothing")
    assert empty.version is None and not empty.holds_images and empty.layout == "split"
    assert resolve(empty, None, None).version.name == "1.0"
    with pytest.raises(UsageError, match="1.3"):
        resolve(inspect(up), "1.0", None)
    assert resolve(inspect(up), None, None).layout == "flat"
    assert resolve(inspect(up), None, "status").layout == "status"


@pytest.mark.parametrize("layout", ["split", "gender", "status", "flat"])
def test_every_reader_sees_the_layout_the_download_keeps(two, srv, tmp_path, layout):
    root = tmp_path / "data"
    kaokore.download(root, dataset_version="1.0", layout=layout, quiet=True)
    (root / "kaokore.json").unlink()  # only the manifest and the folders are left to tell
    d = inspect(root)
    assert d.layout == layout and d.version.name == "1.0"
    from kaokore.offline.index import read_index
    from kaokore.offline.info import dataset_info
    assert dataset_info(root).layout == layout
    assert kaokore.verify(root).layout == layout
    index = read_index(root, "train", "gender")
    folder = {"flat": "images_256", "split": "train"}.get(layout, "train/")
    assert index.samples and all(f"/{folder}" in p for p, _ in index.samples)
    srv.reset_stats()
    again = kaokore.download(root, quiet=True)
    assert again.layout == layout and again.downloaded == 0 and srv.requests() == 0


def test_ctrl_c_while_adopting_keeps_the_record_of_what_was_re_encoded(two, srv, tmp_path, monkeypatch):
    import kaokore.pipeline.plan as plan

    root = two.upstream_tree(tmp_path / "up", "1.3", range(N))
    real = plan._adopt

    def adopt(root_, item, rel, layout):
        if item.index == KEIO_200[1]:
            raise KeyboardInterrupt  # Ctrl-C arrives while the upstream tree is being read
        return real(root_, item, rel, layout)

    monkeypatch.setattr(plan, "_adopt", adopt)
    with pytest.raises(kaokore.Interrupted) as stopped:
        kaokore.download(root, quiet=True)
    assert stopped.value.summary.interrupted
    monkeypatch.setattr(plan, "_adopt", real)
    assert kaokore.download(root, quiet=True).exit_status == 0
    row = manifest(root)[f"{KEIO_200[0]:08d}.jpg"]  # re-encoded in place before the interrupt
    assert (row["converted"], row["source_width"], row["origin"]) == ("true", "200", "adopted")


def test_files_numbered_by_the_users_own_urls_are_not_adopted_as_the_pinned_versions(two, srv, tmp_path):
    # Made from --metadata-dir with 1.0's pinned labels but the user's own urls.txt; manifest lost.
    root = tmp_path / "data"
    custom = tmp_path / "own"
    files = dict(two.files["1.0"])
    files["urls.txt"] = two.files["1.3"]["urls.txt"]  # other faces behind the same numbers
    write_files(custom, files)
    kaokore.download(root, metadata_dir=custom, quiet=True)
    (root / "manifest.csv").unlink()
    srv.reset_stats()
    summary = kaokore.download(root, dataset_version="1.0", quiet=True)  # now the pinned 1.0
    assert summary.adopted == 0 and summary.downloaded == len(two.urls["1.0"])
    for url in two.urls["1.0"].values():
        assert srv.requests(url) == 1


def test_a_tree_from_before_the_digests_were_recorded_is_still_recognised(two, srv, tmp_path):
    root = tmp_path / "data"
    custom = tmp_path / "own"
    files = dict(two.files["1.0"])
    files["urls.txt"] += b"\n"  # the user's own urls.txt: matches no pin
    write_files(custom, files)
    kaokore.download(root, metadata_dir=custom, quiet=True)
    state = json.loads((root / "kaokore.json").read_text())
    del state["metadata_sha256"]  # as the previous kaokore wrote it
    (root / "kaokore.json").write_text(json.dumps(state))
    assert inspect(root).version.name == "1.0"
    assert kaokore.download(root, metadata_dir=custom, quiet=True).exit_status == 0


def test_info_says_unknown_when_the_files_contradict_kaokore_json(two, srv, tmp_path):
    from kaokore.offline.info import dataset_info

    root = tmp_path / "data"
    kaokore.download(root, dataset_version="1.0", quiet=True)
    state = json.loads((root / "kaokore.json").read_text())
    (root / "kaokore.json").write_text(json.dumps({**state, "dataset_version": "1.3"}))
    info = dataset_info(root)
    assert (info.dataset_version, info.metadata) == ("unknown", "unknown")


def test_verify_reports_a_second_copy_in_another_layouts_folder(two, srv, tmp_path):
    root = tmp_path / "data"
    kaokore.download(root, dataset_version="1.0", quiet=True)
    shutil.copytree(root / "train", root / "images_256")  # upstream's script run into the same DIR
    report = kaokore.verify(root)
    assert [(p.where, p.kind) for p in report.problems] == [("images_256", "stray")]


def test_a_bare_rerun_of_a_tree_made_from_metadata_dir_keeps_its_own_metadata_and_images(srv, synth, tmp_path):
    """A tree downloaded from the user's own files (--metadata-dir) is completed from DIR's copies of
    them, as the run that made it read them: the pinned files of its version number other images, and
    fetching them would take every image for damaged and delete it."""
    root = tmp_path / "data"
    assert kaokore.download(root, metadata_dir=synth.meta_dir, quiet=True).exit_status == 0
    before = snapshot(root)
    srv.reset_stats()

    # A mirror on loopback, in case the rerun looked for the pinned files: it serves the custom ones,
    # which their pins refuse.
    summary = kaokore.download(root, metadata_url=srv.base_urls[0] + "/meta", quiet=True)

    assert summary.exit_status == 0 and summary.damaged == 0
    assert summary.already_present == len(synth.urls) and summary.downloaded == 0
    assert srv.requests() == 0  # no metadata, no image
    assert {name: data for name, data in snapshot(root).items() if name.endswith(".jpg")} == {
        name: data for name, data in before.items() if name.endswith(".jpg")}
    assert (root / "urls.txt").read_bytes() == synth.files["urls.txt"]
    assert kaokore.verify(root).ok
