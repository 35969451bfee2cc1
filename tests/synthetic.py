"""Small KaoKore metadata in the real files' shapes, for the tests and the benchmark.

Plain module (no pytest), so benchmarks/throughput.py imports it as it imports iiif_server.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

CLASSES_EN = (
    b"gender\tstatus\n2\t4\n\ngender\n\t0\tmale\n\t1\tfemale\n\n"
    b"status\n\t0\tnoble\n\t1\twarrior\n\t2\tincarnation\n\t3\tcommoner\n"
)
CLASSES_JA = "性別\t身分\n2\t4\n\n性別\n\t0\t男\n\t1\t女\n\n身分\n\t0\t貴族\n\t1\t武士\n\t2\t化身\n\t3\t庶民\n".encode()
SPLIT_CYCLE = ("train", "train", "dev", "test")


def default_label(index: int) -> tuple[str, int, int]:
    """(split, gender, status): every split, class and combination turns up within a few images."""
    return SPLIT_CYCLE[index % 4], index % 2, index % 4


def metadata_files(url_lines: Sequence[str | None], labels: Mapping[int, tuple[str, int, int]]) -> dict[str, bytes]:
    """The five files for these urls.txt lines (None or "" for a blank line) and label rows."""
    # Rows grouped by label rather than by image number, as upstream's are: order must not matter.
    rows = sorted(labels.items(), key=lambda kv: (kv[1], kv[0]))
    return {
        "urls.txt": "".join(f"{line or ''}\n" for line in url_lines).encode(),
        "labels.csv": ("image,gender,status,set\n" + "".join(
            f"{i:08d}.jpg,{g},{s},{split}\n" for i, (split, g, s) in rows)).encode(),
        "labels.metadata.en.txt": CLASSES_EN,
        "labels.metadata.ja.txt": CLASSES_JA,
        "original_tags.txt": "".join(tag_line(i, labels.get(i)) for i, line in enumerate(url_lines) if line).encode(),
    }


# original_tags.txt in upstream's shapes: the 1.0-1.2 keys (原典ID) for two holders and 1.3's
# per-holder id keys for the third, three 制作年 values, repeated タグ, and a stray empty "=".
_HOLDERS = (  # (所蔵, English, id key, id format, id type)
    ("国文学研究資料館", "National Institute of Japanese Literature", "原典ID", "10.20730/2000{:05d}", "doi"),
    ("慶應義塾大学", "Keio University", "原典ID", "110X@445@3@{}", "keio-call-number"),
    ("京都大学", "Kyoto University", "京都大学貴重資料デジタルアーカイブレコードID", "RB000{:05d}", "kyoto-record-id"),
)
_WORKS = ("文正草子", "宇津保物語", "しゆてんとうし", "源氏物語絵巻 3巻")
_ORIENTATIONS = (("四分の三", "three-quarter"), ("横", "side"), ("後", "back"), ("正面", "front"))
_STATUS_JA = ("貴族", "武士", "化身", "庶民")
_STATUS_EN = ("noble", "warrior", "incarnation", "commoner")
_TAGS = ((), ("外国", "中国"), ("山伏",), ("鬼", "付喪神", "少年"))


def tag_line(index: int, label: tuple[str, int, int] | None) -> str:
    """Image `index`'s original_tags.txt line; an unlabeled image is a monk of unknown gender."""
    holder, _, id_key, id_form, _ = _HOLDERS[index % 3]
    gender = ("男", "女")[label[1]] if label else "不明"
    status = _STATUS_JA[label[2]] if label else "僧侶"
    fields = ["=" if index % 7 == 6 else None]
    fields += [f"タグ={t}" for t in _TAGS[index % 4]]
    fields += ["制作年=from 1600", "制作年=to 1700", "制作年=江戸前期"] if index % 2 else ["制作年=不明"]
    fields += [f"原典={_WORKS[index % 4]}", f"{id_key}={id_form.format(index // 3)}",
               f"向き={_ORIENTATIONS[index % 4][0]}", f"性別={gender}", f"所蔵={holder}", f"身分={status}"]
    return f"{index:08d}.jpg:" + ";".join(f for f in fields if f) + "\n"


def expected_attributes(index: int, label: tuple[str, int, int] | None) -> dict:
    """What kaokore should read from `tag_line(index, label)`, written out by hand."""
    _, holder, _, id_form, id_type = _HOLDERS[index % 3]
    return {
        "work": _WORKS[index % 4],
        "holder": holder,
        "orientation": _ORIENTATIONS[index % 4][1],
        "period": "江戸前期" if index % 2 else "不明",
        "year_from": 1600 if index % 2 else None,
        "year_to": 1700 if index % 2 else None,
        "tags": list(_TAGS[index % 4]),
        "fine_status": _STATUS_EN[label[2]] if label else "monk",
        "source_id": id_form.format(index // 3),
        "source_id_type": id_type,
    }


def write_files(folder: Path, files: Mapping[str, bytes]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
