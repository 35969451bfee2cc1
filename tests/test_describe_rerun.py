"""A rerun recomputes the description (attributes.csv, metadata.jsonl, croissant.json, the card)
only when something it is made of changed, and then it is what a fresh run would write."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import kaokore
import kaokore.pipeline.run
from kaokore.description import write as describe

DESCRIPTION = ("attributes.csv", "croissant.json", "README.md")


def description(root: Path) -> dict[str, bytes]:
    """Every file of the description under DIR, by path."""
    files = {name: (root / name).read_bytes() for name in DESCRIPTION if (root / name).exists()}
    for path in root.rglob(describe.HF_METADATA):
        files[path.relative_to(root).as_posix()] = path.read_bytes()
    return files


def fresh(root: Path, synth) -> dict[str, bytes]:
    """The description a run writes when it has no record of an earlier one."""
    state = json.loads((root / "kaokore.json").read_text())
    state.pop("description")
    (root / "kaokore.json").write_text(json.dumps(state))
    for rel in description(root):
        (root / rel).unlink()
    kaokore.download(root, metadata_dir=synth.meta_dir, quiet=True)
    return description(root)


@pytest.fixture
def prepared(monkeypatch) -> list[int]:
    """Counts the runs that recompute the description (its slow part, original_tags.txt, first)."""
    calls = []
    real = describe.prepare_description

    def counted(meta, layout):
        calls.append(1)
        return real(meta, layout)

    monkeypatch.setattr(describe, "prepare_description", counted)
    monkeypatch.setattr(kaokore.pipeline.run, "prepare_description", counted)
    return calls


def test_a_rerun_of_a_complete_tree_recomputes_and_writes_nothing(srv, synth, tmp_path, prepared):
    root = tmp_path / "data"
    kaokore.download(root, metadata_dir=synth.meta_dir, quiet=True)
    assert prepared == [1]
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}

    srv.reset_stats()
    summary = kaokore.download(root, metadata_dir=synth.meta_dir, quiet=True)

    assert summary.exit_status == 0 and srv.request_log == []
    assert prepared == [1]  # not recomputed
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()} == before


def test_new_images_make_the_description_a_fresh_run_would(srv, synth, tmp_path, prepared):
    root = tmp_path / "data"
    kaokore.download(root, metadata_dir=synth.meta_dir, quiet=True, limit=5)
    kaokore.download(root, metadata_dir=synth.meta_dir, quiet=True)  # the rest arrives
    assert prepared == [1, 1]
    after = description(root)
    assert after["train/metadata.jsonl"].count(b"\n") == sum(
        1 for i, (split, _, _) in synth.labels.items() if split == "train" and i in synth.urls)
    assert fresh(root, synth) == after


def test_a_layout_switch_and_back_makes_the_description_a_fresh_run_would(srv, synth, tmp_path, prepared):
    root = tmp_path / "data"
    kaokore.download(root, metadata_dir=synth.meta_dir, quiet=True)
    split = description(root)
    kaokore.download(root, metadata_dir=synth.meta_dir, layout="flat", quiet=True)
    flat = description(root)
    assert set(flat) == {*DESCRIPTION, "images_256/metadata.jsonl"}
    kaokore.download(root, metadata_dir=synth.meta_dir, layout="split", quiet=True)
    assert prepared == [1, 1, 1]
    assert description(root) == split
    assert fresh(root, synth) == split


@pytest.mark.parametrize("change", ["edited", "deleted", "a metadata.jsonl planted", "an image deleted"])
def test_a_changed_description_or_tree_is_recomputed(srv, synth, tmp_path, prepared, change):
    root = tmp_path / "data"
    kaokore.download(root, metadata_dir=synth.meta_dir, quiet=True)
    good = description(root)
    if change == "edited":
        (root / "attributes.csv").write_bytes(good["attributes.csv"].replace(b"Keio", b"Kyoto"))
    elif change == "deleted":
        (root / "croissant.json").unlink()
    elif change == "a metadata.jsonl planted":
        (root / "unlabeled" / describe.HF_METADATA).write_bytes(good["train/metadata.jsonl"])
    else:
        gone = sorted((root / "dev").glob("*.jpg"))[0]
        gone.unlink()
        srv.inject(synth.urls[int(gone.name[:8])], "s404")  # it cannot come back

    kaokore.download(root, metadata_dir=synth.meta_dir, quiet=True,
                     policy=kaokore.RetryPolicy(backoff_factor=0.01))

    assert prepared == [1, 1]
    if change == "an image deleted":
        assert gone.name.encode() not in description(root)["dev/metadata.jsonl"]
        assert description(root) != good
    else:
        assert description(root) == good
    assert fresh(root, synth) == description(root)


def test_a_hand_edited_record_is_ignored(srv, synth, tmp_path, prepared):
    root = tmp_path / "data"
    kaokore.download(root, metadata_dir=synth.meta_dir, quiet=True)
    good = description(root)
    (root / "croissant.json").write_bytes(b"{}")
    state = json.loads((root / "kaokore.json").read_text())
    for record in ({"inputs": state["description"]["inputs"], "files": "nonsense"}, "nonsense", None):
        state["description"] = record
        (root / "kaokore.json").write_text(json.dumps(state))
        assert kaokore.download(root, metadata_dir=synth.meta_dir, quiet=True).exit_status == 0
        assert description(root) == good
        (root / "croissant.json").write_bytes(b"{}")
