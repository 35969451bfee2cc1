"""What plain `kaokore verify` proves, and what only `kaokore verify --deep` does.

An image whose SHA-256 matches its manifest row was decoded in full by kaokore before it
wrote that row: plain verify hashes it and reads its header (format, size, mode). An
image with no row, and every image under --deep, is decoded in full.
"""
from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import pytest
from PIL import Image

from helpers import encode, manifest, run_cli

import kaokore
from kaokore.errors import EXIT_INCOMPLETE, EXIT_OK


@pytest.fixture
def tree(srv, synth, tmp_path):
    kaokore.download(tmp_path / "data", metadata_dir=synth.meta_dir, quiet=True)
    return tmp_path / "data"


def replace_image(root: Path, name: str, data: bytes, *, record: bool) -> str:
    """Write `data` as image `name`; with `record`, rewrite its manifest row to match (as a hand edit would)."""
    table = list(manifest(root).values())
    row = next(r for r in table if r["image"] == name)
    (root / row["path"]).write_bytes(data)
    if record:
        row["sha256"], row["bytes"] = hashlib.sha256(data).hexdigest(), str(len(data))
        with open(root / "manifest.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, list(table[0]), lineterminator="\n")
            writer.writeheader()
            writer.writerows(table)
    return row["path"]


def verify(capsys, root: Path, *extra: str) -> tuple[int, dict]:
    code, out, _ = run_cli(capsys, "verify", "--dir", str(root), "--json", *extra)
    return code, {(p["where"], p["kind"]): p["detail"] for p in json.loads(out)["problems"]}


def test_scan_data_damaged_under_a_matching_row_is_found_by_deep_only(tree, capsys):
    name = sorted(manifest(tree))[2]
    good = (tree / manifest(tree)[name]["path"]).read_bytes()
    damaged = good[: len(good) * 2 // 3]  # the header whole, the scan data cut short
    with Image.open(tree / manifest(tree)[name]["path"]) as im:
        assert (im.format, im.size, im.mode) == ("JPEG", (256, 256), "RGB")  # the header says nothing wrong
    replace_image(tree, name, damaged, record=False)

    # Its hash no longer matches: plain verify finds it.
    code, problems = verify(capsys, tree)
    assert code == EXIT_INCOMPLETE and list(problems) == [(name, "checksum")]

    # The row rewritten to match the damaged bytes: the hash proves nothing any more, only a decode does.
    replace_image(tree, name, damaged, record=True)
    code, problems = verify(capsys, tree)
    assert code == EXIT_OK and problems == {}
    code, problems = verify(capsys, tree, "--deep")
    assert code == EXIT_INCOMPLETE and list(problems) == [(name, "not-normalized")]


@pytest.mark.parametrize("image", [Image.new("RGB", (200, 200), (90, 60, 30)), Image.new("L", (256, 256), 128)],
                         ids=["200x200", "grayscale"])
def test_a_wrong_size_or_mode_under_a_matching_row_is_found_by_plain_verify(tree, capsys, image):
    name = sorted(manifest(tree))[1]
    replace_image(tree, name, encode(image), record=True)
    for mode in ((), ("--deep",)):
        code, problems = verify(capsys, tree, *mode)
        assert code == EXIT_INCOMPLETE and list(problems) == [(name, "not-normalized")], mode


def test_an_image_with_no_row_is_decoded_in_full(tree, capsys):
    table = list(manifest(tree).values())
    good, bad = sorted(r["image"] for r in table)[:2]
    path = next(r["path"] for r in table if r["image"] == bad)
    damaged = (tree / path).read_bytes()
    (tree / path).write_bytes(damaged[: len(damaged) // 2])
    kept = [r for r in table if r["image"] not in (good, bad)]
    with open(tree / "manifest.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, list(table[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(kept)

    code, problems = verify(capsys, tree)

    assert code == EXIT_INCOMPLETE and set(problems) == {(good, "unlisted"), (bad, "unlisted")}
    assert "not a decodable" not in problems[(good, "unlisted")]
    assert problems[(bad, "unlisted")].endswith("is not a decodable 256x256 RGB JPEG")


def test_verify_help_says_what_each_mode_proves(capsys):
    with pytest.raises(SystemExit):
        run_cli(capsys, "verify", "--help")
    out = capsys.readouterr().out
    assert "--deep" in out and "header is read" in out and "decoded in full" in out
