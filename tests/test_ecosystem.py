"""DIR as other tools read it: Hugging Face `datasets` (imagefolder), `mlcroissant`, and the dataset card.

Real libraries on trees downloaded from loopback IIIF hosts, in every layout.
"""
from __future__ import annotations

import itertools
import os
import tempfile
from collections import Counter

import pytest

from helpers import fingerprint_by_hand, make_synthetic
from synthetic import expected_attributes

import kaokore
from kaokore.description.card import MARKER
from kaokore.description.fingerprint import dataset_fingerprint
from kaokore.storage.manifest import read_manifest

LAYOUTS = ["split", "flat", "gender", "status"]
HF_SPLIT = {"train": "train", "dev": "validation", "test": "test"}

# imagefolder needs no network for a local folder; keep its caches out of the user's home.
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HOME", tempfile.mkdtemp(prefix="kaokore-hf-"))


def _load_imagefolder(root, cache):
    datasets = pytest.importorskip("datasets")
    datasets.disable_progress_bars()
    return datasets.load_dataset("imagefolder", data_dir=str(root), cache_dir=str(cache))


def _check_row(synth, row, split_column=True):
    index = int(row["name"][:8])
    label = synth.labels.get(index)
    if label is None:
        assert (row["split"], row["gender"], row["status"]) == ("unlabeled", None, None)
    else:
        split, gender, status = label
        assert (row["gender"], row["status"]) == (gender, status), row["name"]
        if split_column:
            assert row["split"] == split
    want = expected_attributes(index, label)
    assert (row["work"], row["holder"], row["orientation"], row["fine_status"]) == (
        want["work"], want["holder"], want["orientation"], want["fine_status"])
    assert row["image"].size == (256, 256)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_imagefolder_gives_the_splits_with_labels_and_attributes_in_every_layout(srv, synth, tmp_path, layout):
    root = tmp_path / "data"
    kaokore.download(root, metadata_dir=synth.meta_dir, layout=layout, quiet=True)
    ds = _load_imagefolder(root, tmp_path / "cache")
    for split in ds.values():
        assert "label" not in split.column_names  # no class made from folder names
        columns = {"image", "name", "split", "gender", "status", "work", "holder", "orientation"}
        assert columns <= set(split.column_names)
    labelled = Counter(HF_SPLIT[label[0]] for i, label in synth.labels.items() if i in synth.urls)
    assert len(synth.urls) > sum(labelled.values())  # the tree holds unlabeled images too
    if layout == "flat":
        # One folder, one split: every labelled image, the real split in the `split` column.
        assert list(ds) == ["train"] and len(ds["train"]) == sum(labelled.values())
        assert Counter(ds["train"]["split"]) == Counter(synth.labels[i][0] for i in synth.urls if i in synth.labels)
    else:
        assert {name: len(split) for name, split in ds.items()} == dict(labelled)  # unlabeled/ left out
    for split in ds.values():
        assert None not in split["gender"] and None not in split["status"]
        for row in split:
            _check_row(synth, row)


def imagefolder_table(card: str) -> dict[str, tuple[int, str]]:
    """The card's table of what imagefolder gives: split -> (rows, metadata file)."""
    lines = card.splitlines()
    start = lines.index("| split | rows | metadata file |") + 2
    table = {}
    for line in itertools.takewhile(lambda line: line.startswith("|"), lines[start:]):
        split, rows, file = (cell.strip() for cell in line.strip("|").split("|"))
        table[split] = (int(rows.replace(",", "")), file.strip("`"))
    return table


@pytest.mark.parametrize("layout,splits", [
    ("split", None), ("flat", None), ("gender", None), ("status", None),
    ("flat", ["dev", "unlabeled"]), ("split", ["test", "unlabeled"]), ("gender", ["train"]),
])
def test_the_card_says_what_imagefolder_gives_and_it_does(srv, synth, tmp_path, layout, splits):
    root = tmp_path / "data"
    kaokore.download(root, metadata_dir=synth.meta_dir, layout=layout, splits=splits, quiet=True)
    card = (root / "README.md").read_text(encoding="utf-8")
    table = imagefolder_table(card)
    # The metadata files it names are the ones on disk, no more...
    assert sorted(file for _, file in table.values()) == sorted(
        p.relative_to(root).as_posix() for p in root.rglob("metadata.jsonl"))
    # ...and imagefolder gives exactly the splits and rows it says, none with a null label.
    ds = _load_imagefolder(root, tmp_path / "cache")
    assert {name: len(split) for name, split in ds.items()} == {split: rows for split, (rows, _) in table.items()}
    for split in ds.values():
        assert None not in split["gender"] and None not in split["status"]
    unlabeled = sum(1 for i in synth.urls if i not in synth.labels and (splits is None or "unlabeled" in splits))
    assert unlabeled in (0, 2)
    where = "images_256/" if layout == "flat" else "unlabeled/"
    assert (f"Unlabeled images ({unlabeled} on disk, in {where}) are in no `metadata.jsonl`, so imagefolder "
            "leaves them out: no row has a null gender or status.") in card
    if layout == "flat":
        by_split = Counter(ds["train"]["split"])
        assert list(ds) == ["train"] and set(by_split) <= {"train", "dev", "test"}
        assert ("told apart by the `split` column "
                f"(train {by_split['train']}, dev {by_split['dev']}, test {by_split['test']})") in card
        assert "Croissant's `faces` lists them with every field but the image and its name empty" in card
    else:
        assert "told apart by the `split` column" not in card


def test_imagefolder_follows_a_layout_switch_and_verify_sees_no_strays(srv, synth, tmp_path):
    root = tmp_path / "data"
    kaokore.download(root, metadata_dir=synth.meta_dir, layout="gender", quiet=True)
    assert kaokore.verify(root).ok
    kaokore.download(root, metadata_dir=synth.meta_dir, layout="flat", quiet=True)
    assert not (root / "train").exists()  # its metadata.jsonl went with the images
    assert (root / "images_256" / "metadata.jsonl").is_file() and kaokore.verify(root).ok
    kaokore.download(root, metadata_dir=synth.meta_dir, layout="split", quiet=True)
    assert not (root / "images_256").exists() and kaokore.verify(root).ok
    ds = _load_imagefolder(root, tmp_path / "cache")
    assert sorted(ds) == ["test", "train", "validation"]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_croissant_validates_and_loads_labelled_images(srv, synth, tmp_path, layout):
    mlc = pytest.importorskip("mlcroissant")
    root = tmp_path / "data"
    kaokore.download(root, metadata_dir=synth.meta_dir, layout=layout, quiet=True)
    dataset = mlc.Dataset(jsonld=str(root / "croissant.json"))  # raises on any validation error
    assert not dataset.metadata.ctx.issues.errors
    records = list(dataset.records("faces"))

    def text(value):
        return value.decode() if isinstance(value, bytes) else value

    names = {text(r["faces/name"]) for r in records}
    labelled = {synth.name(i) for i in synth.labels if i in synth.urls}
    assert names == ({synth.name(i) for i in synth.urls} if layout == "flat" else labelled)
    for r in records:
        index = int(text(r["faces/name"])[:8])
        assert r["faces/image"].size == (256, 256)
        if index not in synth.labels:  # the flat layout's unlabeled images, as its card says
            assert {k for k, v in r.items() if v is not None} == {"faces/name", "faces/image"}, r
        if index in synth.labels:
            split, gender, status = synth.labels[index]
            assert (text(r["faces/split"]), r["faces/gender"], r["faces/status"]) == (split, gender, status)
            want = expected_attributes(index, synth.labels[index])
            assert (text(r["faces/work"]), text(r["faces/orientation"])) == (want["work"], want["orientation"])


def test_croissant_names_licence_doi_providers_and_labels_sha256(srv, synth, tmp_path):
    import hashlib
    import json

    root = tmp_path / "data"
    kaokore.download(root, metadata_dir=synth.meta_dir, quiet=True, limit=6)
    doc = json.loads((root / "croissant.json").read_text(encoding="utf-8"))
    assert doc["conformsTo"] == "http://mlcommons.org/croissant/1.0"
    assert doc["license"] == "https://creativecommons.org/licenses/by-sa/4.0/"
    assert "10.20676/00000353" in doc["identifier"] and "2002.08595" in doc["citeAs"]
    assert len(doc["provider"]) == 3
    files = {d["name"]: d for d in doc["distribution"]}
    assert files["labels.csv"]["sha256"] == hashlib.sha256((root / "labels.csv").read_bytes()).hexdigest()
    assert files["attributes.csv"]["sha256"] == hashlib.sha256((root / "attributes.csv").read_bytes()).hexdigest()


def test_the_card_says_what_the_folder_is_and_who_to_credit(srv, tmp_path):
    synth = make_synthetic(srv, tmp_path, n=12, sizes={1: "!200,200", 2: "!200,200"})
    root = tmp_path / "data"
    kaokore.download(root, metadata_dir=synth.meta_dir, quiet=True, limit=8)
    card = (root / "README.md").read_text(encoding="utf-8")
    front, _, body = card.partition("\n---\n")
    assert front.startswith("---\n") and "license: cc-by-sa-4.0" in front and "image-classification" in front
    assert MARKER in body
    for needle in ("10.20676/00000353", "2002.08595", "Yingtao Tian", "CC BY-SA 4.0",
                   "Dataset of Pre-Modern Japanese Text", "Digital Collection of Keio University Libraries",
                   "Kyoto University Rare Materials Digital Archive", "--limit 8",
                   "2 of the 8 images were re-encoded"):
        assert needle in card, needle
    assert f"`{fingerprint_by_hand(root)}`" in card


def test_a_readme_the_user_wrote_is_never_replaced(srv, synth, tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    (root / "README.md").write_text("my notes\n")
    kaokore.download(root, metadata_dir=synth.meta_dir, quiet=True, limit=3)
    assert (root / "README.md").read_text() == "my notes\n"
    assert MARKER in (root / "README.kaokore.md").read_text(encoding="utf-8")


def test_the_fingerprint_ignores_layout_and_manifest_order_but_not_bytes(srv, synth, tmp_path):
    root = tmp_path / "data"
    kaokore.download(root, metadata_dir=synth.meta_dir, quiet=True)
    rows = list(read_manifest(root).values())
    first = dataset_fingerprint(rows)
    assert first == fingerprint_by_hand(root)
    assert first == dataset_fingerprint(reversed(rows))
    kaokore.download(root, metadata_dir=synth.meta_dir, layout="flat", quiet=True)
    assert dataset_fingerprint(read_manifest(root).values()) == first
    from dataclasses import replace
    assert dataset_fingerprint([replace(rows[0], sha256="0" * 64), *rows[1:]]) != first
