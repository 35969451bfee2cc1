"""Small KaoKore metadata in the real files' shapes, for the tests and the benchmark.

Plain module (no pytest), so benchmarks/throughput.py imports it as it imports iiif_server.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

CLASSES_EN = (
    "gender\tstatus\n2\t4\n\ngender\n\t0\tmale\n\t1\tfemale\n\n"
    "status\n\t0\tnoble\n\t1\twarrior\n\t2\tincarnation\n\t3\tcommoner\n"
).encode()
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
        "original_tags.txt": "".join(f"{i:08d}.jpg:性別=男\n" for i, line in enumerate(url_lines) if line).encode(),
    }


def write_files(folder: Path, files: Mapping[str, bytes]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
