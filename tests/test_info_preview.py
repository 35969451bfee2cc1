"""`kaokore info` and `kaokore preview` on small synthetic trees downloaded from loopback."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter

import pytest
from PIL import Image

from helpers import image_files, make_synthetic, run_cli

import kaokore
from kaokore.errors import DirectoryError, UsageError
from kaokore.offline.info import dataset_info
from kaokore.offline.preview import BAND, EMPTY_TILE, contact_sheet, render
from kaokore.offline.sheet import geometry, plan_sheet, sheet_size

GENDER = ("male", "female")
STATUS = ("noble", "warrior", "incarnation", "commoner")
SPLITS = ("train", "dev", "test")
CONVERTED = (1, 6)  # served at 300x300, so re-encoded on download


@pytest.fixture
def tree(srv, tmp_path):
    """40 URL lines: one blank, one labelled but blank, three unlabeled, two needing re-encoding."""
    synth = make_synthetic(srv, tmp_path / "src", n=40, unlabeled=(3, 7, 11), labeled_blank=(9,),
                           sizes={i: "300,300" for i in CONVERTED})
    root = tmp_path / "data"
    kaokore.download(root, metadata_dir=synth.meta_dir, quiet=True)
    return synth, root


def expected_table(labels, category: str, only=None) -> dict:
    names = GENDER if category == "gender" else STATUS
    table = {split: {name: 0 for name in names} for split in SPLITS}
    for index, (split, gender, status) in labels.items():
        if only is None or index in only:
            table[split][names[gender if category == "gender" else status]] += 1
    return table


# ---- info ----------------------------------------------------------------------------------------

def test_info_counts_match_labels_csv_and_the_tree(tree):
    synth, root = tree
    info = dataset_info(root)
    on_disk = image_files(root)
    assert info.layout == "split" and info.metadata == "custom" and info.dataset_version == "1.0"
    assert info.classes == {"gender": list(GENDER), "status": list(STATUS)}
    assert info.expected == len(synth.urls) and info.present == len(on_disk) == len(synth.urls)
    assert info.complete
    assert info.unlabeled_expected == info.unlabeled_present == 3
    assert info.unlabeled_present == len(list((root / "unlabeled").iterdir()))
    for split in SPLITS:
        assert info.split_present[split] == len(list((root / split).glob("*.jpg")))  # metadata.jsonl is no image
    assert info.no_url == 1  # image 9: a label row, no URL
    for category in ("gender", "status"):
        assert info.labels[category] == expected_table(synth.labels, category)
    assert sum(sum(row.values()) for row in info.labels["status"].values()) == len(synth.labels)
    assert info.manifest.converted == len(CONVERTED)
    assert info.manifest.pass_through == len(synth.urls) - len(CONVERTED)
    assert info.manifest.converted_from == {"300x300 RGB": len(CONVERTED)}


def test_info_separates_what_is_listed_from_what_is_on_disk(tree):
    synth, root = tree
    gone = (0, 2, 4)
    for index in gone:
        (root / synth.labels[index][0] / synth.name(index)).unlink()
    info = dataset_info(root)
    assert not info.complete and info.present == len(synth.urls) - len(gone)
    assert info.labels["gender"] == expected_table(synth.labels, "gender")  # labels.csv did not change
    still_there = {int(name[:8]) for name in image_files(root)}
    for category in ("gender", "status"):
        assert info.on_disk[category] == expected_table(synth.labels, category, only=still_there)
    assert info.manifest.rows == info.present  # rows of deleted files describe nothing on disk
    assert "On disk (only the images present)" in info.text()


@pytest.mark.parametrize("layout", ["flat", "status"])
def test_info_reads_every_layout(srv, tmp_path, layout):
    synth = make_synthetic(srv, tmp_path / "src", n=12)
    root = tmp_path / layout
    kaokore.download(root, metadata_dir=synth.meta_dir, layout=layout, quiet=True)
    info = dataset_info(root)
    assert info.layout == layout and info.complete and info.present == len(synth.urls)
    assert info.labels["status"] == expected_table(synth.labels, "status")


def test_info_cli_text_reads_as_a_table(tree, capsys):
    synth, root = tree
    code, out, err = run_cli(capsys, "info", "--dir", str(root))
    assert code == 0 and err == ""
    assert f"images present  {len(synth.urls)} of {len(synth.urls)} (complete)" in out
    assert "unlabeled       3 of 3 present" in out
    assert "re-encoded to 256x256 RGB JPEG" in out
    lines = out.splitlines()
    header = next(line for line in lines if line.split()[:1] == ["status"])
    assert header.split() == ["status", "train", "dev", "test", "total", "share"]
    noble = next(line for line in lines if line.split()[:1] == ["noble"]).split()
    table = expected_table(synth.labels, "status")
    assert [int(n) for n in noble[1:5]] == [*(table[s]["noble"] for s in SPLITS), sum(
        table[s]["noble"] for s in SPLITS)]


def test_info_json_is_the_same_data(tree, capsys):
    _, root = tree
    code, out, _ = run_cli(capsys, "info", "--dir", str(root), "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc == json.loads(json.dumps(dataset_info(root).to_json()))
    assert doc["complete"] is True and doc["missing"] == 0 and doc["unlabeled"] == {"expected": 3, "present": 3}


def test_info_recognizes_pinned_metadata(srv, tmp_path, monkeypatch):
    synth = make_synthetic(srv, tmp_path / "src", n=8)
    version = synth.version()
    monkeypatch.setattr("kaokore.dataset.versions.VERSIONS", {"1.0": version})
    root = tmp_path / "data"
    kaokore.download(root, dataset_version=version, metadata_dir=synth.meta_dir, quiet=True)
    info = dataset_info(root)
    assert info.metadata == "pinned" and info.metadata_pinned
    assert "metadata: the pinned 1.0 files" in info.text()


def test_info_refuses_a_directory_without_a_download(tmp_path, capsys):
    with pytest.raises(DirectoryError):
        dataset_info(tmp_path)
    code, out, err = run_cli(capsys, "info", "--dir", str(tmp_path / "nope"))
    assert code == 2 and out == "" and err.count("\n") == 1 and "does not exist" in err
    assert f"run `kaokore download --dir {tmp_path / 'nope'}` first" in err


# ---- preview -------------------------------------------------------------------------------------

def test_contact_sheet_has_one_labelled_row_per_class_of_that_class(tree):
    synth, root = tree
    plan = plan_sheet(root, "status", per_class=3, tile=64, seed=1)
    assert [row.label for row in plan.rows] == list(STATUS)
    for label, row in enumerate(plan.rows):
        assert len(row.picks) == 3
        assert all(synth.labels[int(p.name[:8])][2] == label for p in row.picks)
    sheet = render(plan)
    g = geometry(64, labelled=True)
    # docs/cli.md: C x PX + (C + 1) x gap wide, gap = max(2, PX // 32): 3 x 64 + 4 x 2.
    assert sheet.size[0] == 200 and g.gap == 2
    assert sheet.size == plan.size == (200, g.title + 4 * (g.band + 64 + g.gap))
    for r, row in enumerate(plan.rows):
        top = g.title + r * (g.band + 64 + g.gap)
        assert sheet.getpixel((sheet.width - 2, top + 1)) == BAND  # a label band heads every row
        for c, pick in enumerate(row.picks):
            # The tile holds that very face: compare its centre with the file's, scaled the same way.
            face = Image.open(pick.path).convert("RGB").resize((64, 64))
            got = sheet.getpixel((g.gap + c * (64 + g.gap) + 32, top + g.band + 32))
            assert max(abs(a - b) for a, b in zip(got, face.getpixel((32, 32)))) < 40


def test_contact_sheet_by_gender_and_split(tree):
    synth, root = tree
    plan = plan_sheet(root, "gender", split="dev", per_class=4, tile=32)
    assert [row.label for row in plan.rows] == list(GENDER)
    picked = [p for row in plan.rows for p in row.picks]
    assert picked and all(synth.labels[int(p.name[:8])][0] == "dev" for p in picked)
    sheet = contact_sheet(root, "gender", split="dev", per_class=4, tile=32)
    assert sheet.size == sheet_size(32, 4, 2) and sheet.width == 4 * 32 + 5 * 2


def test_seed_makes_the_choice_reproducible(tree):
    """The same seed on the same tree gives the same faces, in another process too (where Python
    hashes strings differently: no set order can leak into the choice)."""
    _, root = tree
    def names(**kw):
        return [[p.name for p in row.picks] for row in plan_sheet(root, "gender", per_class=5, **kw).rows]
    code = ("import json, sys; from kaokore.offline.sheet import plan_sheet; "
            "print(json.dumps([[p.name for p in r.picks] for r in "
            "plan_sheet(sys.argv[1], 'gender', per_class=5, seed=7).rows]))")
    elsewhere = [json.loads(subprocess.run([sys.executable, "-c", code, str(root)], capture_output=True, text=True,
                                           check=True, env={**os.environ, "PYTHONHASHSEED": str(seed)}).stdout)
                 for seed in (1, 2)]
    assert names(seed=7) == elsewhere[0] == elsewhere[1]
    assert names(seed=7) != names(seed=8)
    longer = [[p.name for p in row.picks] for row in plan_sheet(root, "gender", per_class=8, seed=7).rows]
    assert [row[:5] for row in longer] == names(seed=7)  # more per class extends the rows, keeps the faces


def test_missing_classes_get_placeholder_tiles_and_a_note(tree):
    _, root = tree
    # The synthetic split cycle puts no incarnation or commoner in train.
    plan = plan_sheet(root, "status", split="train", per_class=12, tile=32)
    counts = {row.label: len(row.picks) for row in plan.rows}
    assert counts["incarnation"] == counts["commoner"] == 0
    assert any(n.startswith("incarnation: no images present in train") for n in plan.notes)
    assert any(n.startswith("noble: only") for n in plan.notes)
    sheet = render(plan)
    g = geometry(32, labelled=True)
    top = g.title + 3 * (g.band + 32 + g.gap) + g.band
    assert sheet.getpixel((g.gap + 1, top + 1)) == EMPTY_TILE


def test_mosaic(tree):
    synth, root = tree
    plan = plan_sheet(root, None, rows=2, cols=5, tile=32, split="unlabeled")
    assert plan.by is None and len(plan.rows) == 2
    assert sorted(p.name for row in plan.rows for p in row.picks) == [synth.name(i) for i in (3, 7, 11)]
    assert any("only 3 images present in unlabeled" in n for n in plan.notes)
    g = geometry(32, labelled=False)
    assert g.band == 0 and render(plan).size == (5 * 32 + 6 * 2, g.title + 2 * (32 + g.gap))


def test_preview_cli_writes_the_png(tree, capsys, tmp_path):
    _, root = tree
    out = tmp_path / "sheet.png"
    code, stdout, err = run_cli(capsys, "preview", "--dir", str(root), "--out", str(out), "--tile", "48",
                                "--per-class", "3", "--names")
    assert code == 0 and f"wrote {out}" in stdout
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size == sheet_size(48, 3, len(STATUS))  # --by status is the default
        assert im.width == 3 * 48 + 4 * 2
        rows = json.loads(im.text["kaokore:rows"])
    assert list(rows) == list(STATUS) and all(len(v) == 3 for v in rows.values())

    code, _, _ = run_cli(capsys, "preview", "--dir", str(root), "--out", str(out), "--rows", "2", "--cols", "3",
                         "--tile", "32")
    with Image.open(out) as im:
        assert code == 0 and im.size == sheet_size(32, 3, 2, labelled=False)  # --rows/--cols: a mosaic
        assert im.width == 3 * 32 + 4 * 2

    code, _, _ = run_cli(capsys, "preview", "--dir", str(root), "--out", str(out), "--per-class", "2",
                         "--tile", "320")
    with Image.open(out) as im:
        assert code == 0 and im.width == 2 * 320 + 3 * 10  # a gap of 320 // 32


@pytest.mark.parametrize("argv, message", [
    (["--rows", "2", "--by", "gender"], "--rows/--cols shape a mosaic"),
    (["--mosaic", "--by", "status"], "contradict"),
    (["--mosaic", "--per-class", "3"], "--per-class applies to rows by class"),
    (["--by", "status", "--split", "unlabeled"], "unlabeled images have no gender or status"),
    (["--tile", "8"], "--tile must be between"),
])
def test_preview_cli_refuses_contradictions(tree, capsys, tmp_path, argv, message):
    _, root = tree
    code, out, err = run_cli(capsys, "preview", "--dir", str(root), "--out", str(tmp_path / "x.png"), *argv)
    assert code == 2 and message in err and not (tmp_path / "x.png").exists()


def test_unreadable_face_is_a_placeholder_and_a_note(tree, capsys, tmp_path):
    _, root = tree
    for path in image_files(root).values():
        if path.parent.name == "dev":
            path.write_bytes(b"not a jpeg")
    code, _, err = run_cli(capsys, "preview", "--dir", str(root), "--out", str(tmp_path / "s.png"),
                           "--split", "dev", "--by", "gender", "--tile", "32")
    assert code == 0 and "could not be read" in err and "kaokore verify" in err
    assert Counter(line.startswith("kaokore: note:") for line in err.splitlines())[False] == 0


def test_api_refuses_unknown_category(tree):
    with pytest.raises(UsageError, match="unknown --by"):
        plan_sheet(tree[1], "age")


def test_renders_without_scalable_default_font(tree, monkeypatch):
    """Pillow < 10.1: load_default() takes no size; the sheet must still come out, same size."""
    from PIL import ImageFont

    small = ImageFont.load_default()  # made before truetype is taken away below

    def old_load_default(*args, **kwargs):
        if args or kwargs:
            raise TypeError("load_default() takes 0 positional arguments")
        return small

    monkeypatch.setattr(ImageFont, "load_default", old_load_default)
    monkeypatch.setattr(ImageFont, "truetype", lambda *a, **k: (_ for _ in ()).throw(OSError("no font")))
    assert contact_sheet(tree[1], "gender", per_class=2, tile=32).size == sheet_size(32, 2, 2)


def test_note_tells_a_partial_download_from_an_absent_class(tree):
    synth, root = tree
    male_train = [i for i, (split, gender, _) in synth.labels.items() if split == "train" and gender == 0
                  and i in synth.urls]
    for index in male_train:
        (root / "train" / synth.name(index)).unlink()
    plan = plan_sheet(root, "gender", split="train", tile=32)
    assert f"male: no images present in train ({len(male_train)} more listed but not downloaded); " \
           "row left empty" in plan.notes


def test_preview_refuses_a_non_png_name(tmp_path, capsys):
    from helpers import run_cli

    code, _, err = run_cli(capsys, "preview", "--dir", str(tmp_path), "--out", str(tmp_path / "sheet.jpg"))
    assert code == 2 and ".png" in err and not (tmp_path / "sheet.jpg").exists()
