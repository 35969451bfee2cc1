"""original_tags.txt: parsed into English attributes in upstream's shapes, and validated like the other files."""
from __future__ import annotations

import pytest

from helpers import fingerprint_by_hand, framework, run_cli
from synthetic import expected_attributes

import kaokore
from kaokore.dataset import metadata as md
from kaokore.dataset.attributes import CLASSES, iiif_source, parse_attributes
from kaokore.errors import EXIT_USAGE, MetadataError

URL = "https://iiif.example.org/iiif/200014736/200014736_00010.tif/-19,1240,195,195/256,256/0/default.jpg"


def test_every_synthetic_line_reads_as_written_by_hand(synth):
    meta = md.parse(synth.files, pinned=False)
    assert set(meta.attributes) == set(synth.urls)
    for index in synth.urls:
        got = meta.attributes[index].as_dict()
        want = expected_attributes(index, synth.labels.get(index))
        assert {k: got[k] for k in want} == want, index


@pytest.mark.parametrize("line, expected", [
    # 1.0: 原典ID holds a Keio call number; three 制作年 values (from, to, era)
    ("00000000.jpg:制作年=from 1500;制作年=to 1600;制作年=室町末近世初;原典=ふんせう;原典ID=110X@445@3@2;"
     "向き=四分の三;性別=男;所蔵=慶應義塾大学;身分=貴族",
     dict(work="ふんせう", holder="Keio University", orientation="three-quarter", period="室町末近世初",
          year_from=1500, year_to=1600, tags=(), fine_status="noble", source_id="110X@445@3@2",
          source_id_type="keio-call-number")),
    # 1.1: repeated タグ, empty 制作年 values, a DOI with a trailing blank
    ("00000000.jpg:タグ=中国;タグ=外国;タグ=馬周;制作年=;制作年=;制作年=;原典=鳳闕見聞図説;"
     "原典ID=10.20730/200021064 ;向き=横;性別=男;所蔵=国文学研究資料館;身分=僧侶",
     dict(holder="National Institute of Japanese Literature", orientation="side", period="", year_from=None,
          tags=("中国", "外国", "馬周"), fine_status="monk", source_id="10.20730/200021064",
          source_id_type="doi")),
    # 1.3: per-holder id keys, stray empty "=" fields, an empty タグ, a single year with its era
    ("00000000.jpg:=;=;タグ=;京都大学貴重資料デジタルアーカイブレコードID=RB00013604;制作年=1651;制作年=慶安4;"
     "原典=病草子;向き=後;性別=不明;所蔵=京都大学;身分=神職",
     dict(holder="Kyoto University", orientation="back", period="慶安4", year_from=1651, year_to=1651, tags=(),
          fine_status="priest", source_id="RB00013604", source_id_type="kyoto-record-id")),
    ("00000000.jpg:DOI=10.20730/200015535;制作年=不明;原典=後三年合戦絵;向き=正面;性別=女;所蔵=国文学研究資料館;身分=動物",
     dict(orientation="front", period="不明", fine_status="animal", source_id_type="doi")),
])
def test_upstream_shapes_of_every_version(line, expected):
    (attributes,) = parse_attributes([line], [URL]).values()
    got = {k: getattr(attributes, k) for k in expected}
    assert got == expected
    assert attributes.holder in CLASSES["holder"] and attributes.orientation in CLASSES["orientation"]


def test_iiif_page_and_region_come_from_the_url():
    assert iiif_source(URL) == ("https://iiif.example.org/iiif/200014736/200014736_00010.tif", "-19,1240,195,195")
    assert iiif_source("https://example.org/plain/file.jpg") == ("", "")
    assert iiif_source(None) == ("", "")


@pytest.mark.parametrize("line, problem", [
    ("00000001.png:原典=x", "expected 'NNNNNNNN.jpg:key=value"),
    ("00000001.jpg:原典", "expected key=value"),
    ("00000001.jpg:向き=斜め", "向き '斜め' is not one of"),
    ("00000001.jpg:所蔵=どこか", "所蔵 'どこか' is not one of"),
    ("00000001.jpg:身分=王", "身分 '王' is not one of"),
    ("00000001.jpg:制作年=from 十六世紀", "expected a year"),
    ("00000001.jpg:原典=a;原典=b", "原典 given twice"),
    ("00000001.jpg:DOI=10.1/x;原典ID=RB1", "two source ids"),
    ("00000001.jpg:原典=a\x1bb", "control characters"),
])
def test_a_bad_line_names_file_and_line(line, problem):
    data = f"00000000.jpg:原典=ok\n{line}\n".encode()
    with pytest.raises(MetadataError) as err:
        md.parse_attributes(data)
    assert str(err.value).startswith("original_tags.txt:2: ") and problem in str(err.value)


def test_a_duplicate_image_names_its_first_line():
    expected = r"original_tags.txt:3: duplicate line for 00000000.jpg \(first on line 1\)"
    with pytest.raises(MetadataError, match=expected):
        md.parse_attributes("00000000.jpg:原典=a\n00000001.jpg:原典=b\n00000000.jpg:原典=c\n".encode())


def test_bad_original_tags_stop_the_download_before_any_request(srv, synth, tmp_path, capsys):
    good = synth.files["original_tags.txt"].decode().splitlines()
    good[4] = good[4].replace("向き=", "向き=斜め")
    synth.rewrite("original_tags.txt", ("\n".join(good) + "\n").encode())
    srv.reset_stats()
    code, _, err = run_cli(capsys, "download", "--dir", str(tmp_path / "data"), "--metadata-dir",
                           str(synth.meta_dir), "--quiet")
    assert code == EXIT_USAGE
    assert "original_tags.txt:5: 向き" in err and "Traceback" not in err
    assert srv.request_log == []


def test_every_run_writes_attributes_csv(srv, synth, tmp_path):
    import csv

    kaokore.download(tmp_path / "data", metadata_dir=synth.meta_dir, quiet=True)
    rows = {r["image"]: r for r in csv.DictReader(open(tmp_path / "data" / "attributes.csv", encoding="utf-8"))}
    assert set(rows) == {synth.name(i) for i in synth.urls}
    for index in synth.urls:
        want = expected_attributes(index, synth.labels.get(index))
        row = rows[synth.name(index)]
        assert (row["work"], row["holder"], row["orientation"], row["tags"]) == (
            want["work"], want["holder"], want["orientation"], ";".join(want["tags"]))


def test_torch_loader_returns_attributes_and_takes_an_attribute_as_target(srv, synth, tmp_path):
    framework("torch")
    from kaokore.torch import KaoKore

    root = tmp_path / "data"
    kaokore.download(root, metadata_dir=synth.meta_dir, layout="gender", quiet=True)
    ds = KaoKore(root, split="train", attributes=True)
    for i in range(len(ds)):
        image, target, attrs = ds[i]
        index = int(attrs["name"][:8])
        assert target == synth.labels[index][1]
        want = expected_attributes(index, synth.labels[index])
        assert {k: attrs[k] for k in ("work", "holder", "orientation")} == {
            k: want[k] for k in ("work", "holder", "orientation")}
    by_orientation = KaoKore(root, split="test", category="orientation")
    assert by_orientation.classes == list(CLASSES["orientation"])
    for path, target in by_orientation.samples:
        index = int(path[-12:-4])
        assert by_orientation.classes[target] == expected_attributes(index, synth.labels[index])["orientation"]


def test_tensorflow_loader_returns_attributes(srv, synth, tmp_path):
    framework("tensorflow")
    import kaokore.tensorflow

    root = tmp_path / "data"
    kaokore.download(root, metadata_dir=synth.meta_dir, quiet=True)
    ds = kaokore.tensorflow.load(root, split="dev", category="holder", attributes=True)
    assert ds.class_names == list(CLASSES["holder"])
    seen = 0
    for image, label, attrs in ds.as_numpy_iterator():
        index = int(attrs["name"].decode()[:8])
        want = expected_attributes(index, synth.labels[index])
        assert attrs["work"].decode() == want["work"] and CLASSES["holder"][label] == want["holder"]
        assert image.shape == (256, 256, 3)
        seen += 1
    assert seen == sum(1 for i, lab in synth.labels.items() if lab[0] == "dev" and i in synth.urls)


def test_info_counts_by_work_holder_and_orientation_and_prints_the_fingerprint(srv, synth, tmp_path, capsys):
    import json
    from collections import Counter

    root = tmp_path / "data"
    kaokore.download(root, metadata_dir=synth.meta_dir, quiet=True, limit=10)
    for by in ("work", "holder", "orientation"):
        code, out, _ = run_cli(capsys, "info", "--dir", str(root), "--by", by, "--json")
        assert code == 0
        counts = json.loads(out)["by"]["counts"]
        listed = Counter(expected_attributes(i, synth.labels.get(i))[by] for i in synth.urls)
        assert {v: c["listed"] for v, c in counts.items()} == dict(listed)
        assert sum(c["present"] for c in counts.values()) == 10
    fingerprint = fingerprint_by_hand(root)
    code, out, _ = run_cli(capsys, "info", "--dir", str(root), "--by", "holder")
    assert "Kyoto University" in out and f"fingerprint     {fingerprint}" in out
    code, out, _ = run_cli(capsys, "verify", "--dir", str(root), "--limit", "10")
    assert code == 0 and fingerprint in out
    code, out, _ = run_cli(capsys, "verify", "--dir", str(root), "--limit", "10", "--json")
    assert json.loads(out)["fingerprint"] == fingerprint


def test_info_by_work_lines_up_its_counts_under_japanese_titles(srv, synth, tmp_path, capsys):
    """The works' titles are Japanese: two terminal columns a character. The counts must still end
    in one column, as a person reads the table."""
    import unicodedata

    root = tmp_path / "data"
    kaokore.download(root, metadata_dir=synth.meta_dir, quiet=True)
    code, out, _ = run_cli(capsys, "info", "--dir", str(root), "--by", "work")
    assert code == 0
    table = out[out.index("By work"):].splitlines()[2:]
    assert len(table) == 5 and any("しゆてんとうし" in line for line in table)  # a header and the 4 works

    def columns(text: str) -> int:
        return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)

    assert len({columns(line) for line in table}) == 1, table
