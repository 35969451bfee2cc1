"""The manifest, `kaokore verify`, repair of damaged trees, and layout switching without the network."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from helpers import image_files, jpeg_info, manifest, run_cli

import kaokore
from kaokore.errors import EXIT_INCOMPLETE, EXIT_OK, EXIT_USAGE


@pytest.fixture
def tree(srv, synth, tmp_path):
    kaokore.download(tmp_path / "data", metadata_dir=synth.meta_dir, quiet=True)
    return tmp_path / "data"


def test_manifest_has_a_row_per_image_with_its_checksum(synth, tree):
    rows = manifest(tree)
    assert set(rows) == {synth.name(i) for i in synth.urls}
    for name, row in rows.items():
        path = tree / row["path"]
        assert path.is_file() and not Path(row["path"]).is_absolute()
        assert row["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert int(row["bytes"]) == path.stat().st_size
        assert row["url"] == synth.urls[int(name[:8])]
        assert row["converted"] in ("true", "false") and row["layout"] == "split"
        assert (row["source_width"], row["source_height"], row["source_mode"]) == ("256", "256", "RGB")


def test_verify_passes_after_a_download(tree, capsys):
    code, out, _ = run_cli(capsys, "verify", "--dir", str(tree))
    assert code == EXIT_OK
    assert "intact" in out and "NOT" not in out


def test_damage_is_named_by_verify_and_repaired_by_exactly_two_requests(srv, synth, tree, capsys):
    rows = manifest(tree)
    truncated, deleted = sorted(rows)[1], sorted(rows)[4]
    path = tree / rows[truncated]["path"]
    path.write_bytes(path.read_bytes()[:100])
    (tree / rows[deleted]["path"]).unlink()

    code, out, _ = run_cli(capsys, "verify", "--dir", str(tree))
    assert code == EXIT_INCOMPLETE
    problem_lines = [line for line in out.splitlines() if not line.startswith("kaokore verify")]
    assert len(problem_lines) == 2
    assert any(line.startswith(truncated) and "checksum" in line for line in problem_lines)
    assert any(line.startswith(deleted) and "missing" in line for line in problem_lines)

    srv.reset_stats()
    code, _, _ = run_cli(capsys, "download", "--dir", str(tree), "--metadata-dir", str(synth.meta_dir), "--quiet")
    assert code == EXIT_OK
    assert sorted(path for _, path in srv.request_log) == sorted(
        "/" + synth.urls[int(n[:8])].split("/", 3)[3] for n in (truncated, deleted))
    assert run_cli(capsys, "verify", "--dir", str(tree))[0] == EXIT_OK


def test_verify_json_and_other_problems(synth, tree, capsys):
    rows = manifest(tree)
    first = sorted(rows)[0]
    (tree / "train" / "stray.txt").write_text("not an image")
    # A correct-looking file whose manifest row was lost is reported too.
    lines = (tree / "manifest.csv").read_text().splitlines()
    (tree / "manifest.csv").write_text("\n".join(line for line in lines if not line.startswith(first)) + "\n")
    (tree / "labels.metadata.ja.txt").write_bytes(b"tampered")

    code, out, _ = run_cli(capsys, "verify", "--dir", str(tree), "--json", "--dataset_version", "1.0")
    doc = json.loads(out)
    assert code == EXIT_INCOMPLETE and doc["ok"] is False
    kinds = {(p["where"], p["kind"]) for p in doc["problems"]}
    assert ("train/stray.txt", "stray") in kinds
    assert (first, "unlisted") in kinds
    # 1.0's pins are the real upstream ones; these synthetic files match none of them.
    assert ("labels.metadata.ja.txt", "metadata") in kinds and ("urls.txt", "metadata") in kinds


def test_verify_on_a_missing_dir_is_a_one_line_usage_error(tmp_path, capsys):
    code, _, err = run_cli(capsys, "verify", "--dir", str(tmp_path / "nope"))
    assert code == EXIT_USAGE and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_a_run_killed_before_its_manifest_rebuilds_it_from_disk(srv, synth, tree, capsys):
    before = manifest(tree)
    (tree / "manifest.csv").unlink()
    srv.reset_stats()
    summary = kaokore.download(tree, metadata_dir=synth.meta_dir, quiet=True)
    assert srv.request_log == [] and summary.already_present == len(before)
    after = manifest(tree)
    assert {k: v["sha256"] for k, v in after.items()} == {k: v["sha256"] for k, v in before.items()}
    assert run_cli(capsys, "verify", "--dir", str(tree))[0] == EXIT_OK


def test_the_journal_keeps_source_details_across_a_crash(srv, synth, tree):
    """Rows appended during a run survive a kill; the next run folds them into the manifest."""
    before = manifest(tree)
    journal = tree / "manifest.journal.csv"
    journal.write_text((tree / "manifest.csv").read_text())
    (tree / "manifest.csv").unlink()
    kaokore.download(tree, metadata_dir=synth.meta_dir, quiet=True)
    assert manifest(tree) == before
    assert not journal.exists()


@pytest.mark.parametrize("sequence", [("split", "status", "flat"), ("flat", "gender", "split")])
def test_switching_layout_moves_files_without_any_request(srv, synth, tmp_path, capsys, sequence):
    root = tmp_path / "data"
    first, *rest = sequence
    kaokore.download(root, metadata_dir=synth.meta_dir, layout=first, quiet=True)
    inodes = {name: p.stat().st_ino for name, p in image_files(root).items()}
    shas = {name: hashlib.sha256(p.read_bytes()).hexdigest() for name, p in image_files(root).items()}
    for layout in rest:
        srv.reset_stats()
        summary = kaokore.download(root, metadata_dir=synth.meta_dir, layout=layout, quiet=True)
        assert srv.request_log == []
        assert summary.downloaded == 0 and summary.already_present == len(synth.urls)
        # Renamed: the very same files (a copy, even byte for byte, would be a new inode), not re-encoded.
        assert {name: p.stat().st_ino for name, p in image_files(root).items()} == inodes
        assert {name: hashlib.sha256(p.read_bytes()).hexdigest() for name, p in image_files(root).items()} == shas
        assert {row["layout"] for row in manifest(root).values()} == {layout}
        assert json.loads((root / "kaokore.json").read_text())["layout"] == layout
        code, out, _ = run_cli(capsys, "verify", "--dir", str(root))
        assert code == EXIT_OK, out
        # The old layout's folders are gone, so no image sits in two trees.
        if layout != "flat":
            assert not (root / "images_256").exists()
        if layout == "flat":
            assert not (root / "train").exists()


def test_layout_switch_then_fetches_only_what_is_missing(srv, synth, tmp_path):
    root = tmp_path / "data"
    kaokore.download(root, metadata_dir=synth.meta_dir, layout="split", quiet=True, splits=["train"])
    srv.reset_stats()
    summary = kaokore.download(root, metadata_dir=synth.meta_dir, layout="gender", quiet=True)
    trains = sum(1 for i in synth.urls if synth.labels.get(i, ("",))[0] == "train")
    assert summary.already_present == trains
    assert len(srv.request_log) == len(synth.urls) - trains


def test_leftover_temporaries_are_swept(srv, synth, tree):
    leftover = tree / "train" / ".00000000.jpg.deadbeef.kaokore-tmp"
    leftover.write_bytes(b"partial")
    kaokore.download(tree, metadata_dir=synth.meta_dir, quiet=True)
    assert not leftover.exists()


def test_a_file_with_no_row_in_a_tree_of_known_version_is_normalized_in_place(srv, synth, tree):
    """Files with no manifest row (e.g. upstream's script left a 200x200 one) are the version's
    own images when DIR's version is known: normalized from disk, not fetched again."""
    rows = manifest(tree)
    name = sorted(rows)[2]
    from PIL import Image

    Image.new("RGB", (200, 200), (10, 120, 40)).save(tree / rows[name]["path"])
    lines = (tree / "manifest.csv").read_text().splitlines()
    (tree / "manifest.csv").write_text("\n".join(line for line in lines if not line.startswith(name)) + "\n")
    srv.reset_stats()
    summary = kaokore.download(tree, metadata_dir=synth.meta_dir, quiet=True)
    assert srv.request_log == [] and summary.adopted == 1
    assert jpeg_info(tree / rows[name]["path"]) == ("JPEG", (256, 256), "RGB")
    row = manifest(tree)[name]
    assert (row["origin"], row["converted"], row["source_width"]) == ("adopted", "true", "200")
    assert kaokore.verify(tree).ok


def test_a_file_with_no_row_is_replaced_when_its_metadata_changed(srv, synth, tree):
    """The user's own metadata changed since DIR was made: a file with no record is not known to be image N."""
    rows = manifest(tree)
    name = sorted(rows)[2]
    (tree / rows[name]["path"]).write_bytes((tree / rows[sorted(rows)[3]]["path"]).read_bytes())
    lines = (tree / "manifest.csv").read_text().splitlines()
    (tree / "manifest.csv").write_text("\n".join(line for line in lines if not line.startswith(name)) + "\n")
    synth.rewrite("urls.txt", synth.files["urls.txt"] + b"\n")  # the same URLs, but not the same file
    srv.reset_stats()
    summary = kaokore.download(tree, metadata_dir=synth.meta_dir, quiet=True)
    assert summary.adopted == 0 and summary.damaged == 1 and len(srv.request_log) == 1
    assert (tree / rows[name]["path"]).read_bytes() == srv.expected_bytes(rows[name]["url"])


def test_a_crafted_manifest_path_cannot_touch_files_outside_dir(srv, synth, tree):
    victim = tree.parent / "victim.txt"
    victim.write_text("precious")
    text = (tree / "manifest.csv").read_text()
    row = manifest(tree)[sorted(manifest(tree))[0]]
    (tree / "manifest.csv").write_text(text.replace(row["path"], "../victim.txt"))
    kaokore.download(tree, metadata_dir=synth.meta_dir, quiet=True)
    assert victim.read_text() == "precious"


def test_an_image_whose_url_changed_is_fetched_again(srv, synth, tree):
    """Same name, new URL in the metadata: the old bytes are another image and must not be kept."""
    index = sorted(synth.urls)[0]
    old_url = synth.urls[index]
    new_url = srv.url(1, "book1/another.tif", region="5,5,300,300")
    synth.rewrite("urls.txt", synth.files["urls.txt"].replace(old_url.encode(), new_url.encode()))
    srv.reset_stats()
    summary = kaokore.download(tree, metadata_dir=synth.meta_dir, quiet=True)
    assert srv.requests(new_url) == 1 and len(srv.request_log) == 1
    assert summary.damaged == 1 and "1 damaged" in summary.line()
    row = manifest(tree)[synth.name(index)]
    assert row["url"] == new_url
    assert (tree / row["path"]).read_bytes() == srv.expected_bytes(new_url)


def test_a_failed_layout_switch_leaves_the_state_naming_the_layout_on_disk(srv, synth, tree, capsys):
    code, _, _ = run_cli(capsys, "download", "--dir", str(tree), "--metadata-dir", str(synth.meta_dir),
                         "--layout", "flat", "--limit", "-1")
    assert code == EXIT_USAGE
    assert json.loads((tree / "kaokore.json").read_text())["layout"] == "split"
    assert run_cli(capsys, "verify", "--dir", str(tree))[0] == EXIT_OK


def test_damage_is_reported_in_the_summary(srv, synth, tree):
    rows = manifest(tree)
    name = sorted(rows)[3]
    (tree / rows[name]["path"]).write_bytes(b"not the image")
    summary = kaokore.download(tree, metadata_dir=synth.meta_dir, quiet=True)
    assert summary.damaged == 1 and summary.downloaded == 1 and summary.to_json()["damaged"] == 1


def test_a_torn_journal_line_does_not_swallow_the_next_row(tmp_path):
    from kaokore.storage.manifest import Journal, read_rows
    from kaokore.storage.records import ManifestRow

    row = ManifestRow("00000001.jpg", "train/00000001.jpg", "http://h/1", "a" * 64, 10, 256, 256, "RGB", False, "split")
    journal = Journal(tmp_path)
    journal.append(row)
    journal.close()
    with open(tmp_path / "manifest.journal.csv", "a") as f:
        f.write("00000002.jpg,train/000")  # killed mid-line
    journal = Journal(tmp_path)
    journal.append(row.__class__(**{**row.__dict__, "image": "00000003.jpg", "path": "train/00000003.jpg"}))
    journal.close()
    assert sorted(read_rows(tmp_path / "manifest.journal.csv")) == ["00000001.jpg", "00000003.jpg"]


def test_hand_edited_state_and_manifest_do_not_crash_verify(synth, tree, capsys):
    (tree / "kaokore.json").write_text('{"dataset_version": ["1.0"], "layout": 3, "metadata_pinned": false}')
    text = (tree / "manifest.csv").read_text().replace(",split,fetched,", ",bogus,fetched,", 1)
    (tree / "manifest.csv").write_text(text)
    code, out, err = run_cli(capsys, "verify", "--dir", str(tree))
    assert "Traceback" not in err
    assert code == EXIT_INCOMPLETE
    assert "unlisted" in out  # the bogus row was dropped, and its image is reported


def test_a_second_run_on_the_same_dir_is_refused_while_the_first_holds_it(srv, synth, tree, capsys):
    from kaokore.storage.lock import exclusive

    with exclusive(tree):
        srv.reset_stats()
        code, _, err = run_cli(capsys, "download", "--dir", str(tree), "--metadata-dir", str(synth.meta_dir))
        assert code == EXIT_USAGE and "another kaokore download" in err
        assert srv.request_log == []
    assert run_cli(capsys, "download", "--dir", str(tree), "--metadata-dir", str(synth.meta_dir), "--quiet")[0] == 0


def test_a_bare_rerun_resumes_the_layout_and_version_dir_holds(srv, synth, tmp_path, capsys):
    """`kaokore download --dir X` is what `info` and the loaders tell users to run: it must not
    rearrange a gender tree into the default layout."""
    root = tmp_path / "data"
    kaokore.download(root, metadata_dir=synth.meta_dir, layout="gender", quiet=True)
    before = {p.relative_to(root).as_posix() for p in image_files(root).values()}
    srv.reset_stats()
    code, _, err = run_cli(capsys, "download", "--dir", str(root), "--metadata-dir", str(synth.meta_dir))
    assert code == EXIT_OK and "moved" not in err
    assert {p.relative_to(root).as_posix() for p in image_files(root).values()} == before
    assert srv.request_log == []
    assert json.loads((root / "kaokore.json").read_text())["layout"] == "gender"


def test_verify_of_a_smoke_tree_caps_its_lines_and_says_why(srv, synth, tmp_path, capsys):
    from helpers import make_synthetic

    big = make_synthetic(srv, tmp_path / "big", n=60, blank=(), unlabeled=())
    root = tmp_path / "smoke"
    kaokore.download(root, metadata_dir=big.meta_dir, quiet=True, limit=5)
    code, out, _ = run_cli(capsys, "verify", "--dir", str(root))
    assert code == EXIT_INCOMPLETE
    lines = out.strip().splitlines()
    assert sum(": missing:" in line for line in lines) == 20  # docs/cli.md: at most 20 of each kind
    assert "... and 35 more missing" in out and "--limit" in out
    code, out, _ = run_cli(capsys, "verify", "--dir", str(root), "--limit", "5")
    assert code == EXIT_OK
    doc = json.loads(run_cli(capsys, "verify", "--dir", str(root), "--json")[1])
    assert doc["missing"] == 55 and len(doc["problems"]) == 55


def test_verify_split_checks_the_subset_a_split_download_fetched(srv, synth, tmp_path, capsys):
    root = tmp_path / "data"
    kaokore.download(root, metadata_dir=synth.meta_dir, quiet=True, splits=["dev"])
    dev = sorted(synth.name(i) for i, (split, _, _) in synth.labels.items() if split == "dev" and i in synth.urls)
    code, out, _ = run_cli(capsys, "verify", "--dir", str(root), "--split", "dev", "--json")
    doc = json.loads(out)
    assert code == EXIT_OK and (doc["expected"], doc["intact"], doc["problems"]) == (len(dev), len(dev), [])
    code, out, _ = run_cli(capsys, "verify", "--dir", str(root), "--json")  # the whole tree: the rest is missing
    doc = json.loads(out)
    assert code == EXIT_INCOMPLETE and doc["missing"] == len(synth.urls) - len(dev)

    kaokore.download(root, metadata_dir=synth.meta_dir, quiet=True)
    damaged = root / "train" / synth.name(0)
    damaged.write_bytes(damaged.read_bytes()[:-10])
    for splits, expected in ((["dev"], EXIT_OK), (["dev", "test"], EXIT_OK), (["train"], EXIT_INCOMPLETE)):
        code, out, _ = run_cli(capsys, "verify", "--dir", str(root), *(f"--split={s}" for s in splits))
        assert code == expected, (splits, out)
    assert f"{synth.name(0)}: checksum" in out


def test_verify_json_answers_even_when_it_cannot_start(tmp_path, capsys):
    code, out, err = run_cli(capsys, "verify", "--dir", str(tmp_path / "absent"), "--json")
    assert code == EXIT_USAGE
    assert json.loads(out)["exit_status"] == EXIT_USAGE and "absent" in json.loads(out)["error"]


def test_file_browser_litter_is_not_a_problem_but_other_strays_are(tree, capsys):
    (tree / "train" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (tree / "dev" / "Thumbs.db").write_bytes(b"x")
    assert run_cli(capsys, "verify", "--dir", str(tree))[0] == EXIT_OK
    (tree / "dev" / "notes.txt").write_text("mine")
    code, out, _ = run_cli(capsys, "verify", "--dir", str(tree))
    assert code == EXIT_INCOMPLETE and "dev/notes.txt: stray" in out
