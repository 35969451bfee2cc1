"""labels.csv and labels.metadata.en.txt: which split and classes each image has.

Every check names the file and the line: a bad line must never become a folder
name outside DIR or a silently wrong label.
"""
from __future__ import annotations

import csv
import io
import re
from collections.abc import Mapping, Sequence

from ..errors import MetadataError
from .text import decode, split_lines

IMAGE_NAME = re.compile(r"[0-9]{8}\.jpg")
CLASS_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 _.-]*")  # must be safe as a folder name
# ASCII only: str.isdigit() also accepts "²" (which int() rejects) and "٣" (which it reads as 3).
NUMBER = re.compile(r"[0-9]{1,6}")
LABEL_COLUMNS = ("image", "gender", "status", "set")
SPLIT_NAMES = ("train", "dev", "test")
CATEGORIES = ("gender", "status")

# The whole-file shape of a well-formed labels.csv, checked in one pass of the regex engine: such a
# file needs no check line by line; any other goes through the row-by-row reading, which finds and
# names the first bad row.
_LABEL_ROW = r"([0-9]{8})\.jpg,([0-9]{1,6}),([0-9]{1,6}),(train|dev|test)"
PLAIN_LABELS = re.compile(rf"image,gender,status,set\r?\n(?:{_LABEL_ROW}\r?\n)*(?:{_LABEL_ROW}\r?)?")
LABEL_ROW = re.compile(_LABEL_ROW)


def parse_classes(data: bytes) -> dict[str, tuple[str, ...]]:
    """labels.metadata.en.txt: a header of categories and counts, then one section per category."""
    filename = "labels.metadata.en.txt"
    lines = split_lines(decode(data, filename))
    if len(lines) < 2:
        raise MetadataError(filename, len(lines) + 1, "expected a header of categories and class counts")
    names = lines[0].split("\t")
    counts = lines[1].split("\t")
    if len(names) != len(counts) or not all(NUMBER.fullmatch(c.strip()) for c in counts):
        raise MetadataError(filename, 2, "class counts do not match the categories")
    declared = {n.strip(): int(c) for n, c in zip(names, counts)}
    missing = [c for c in CATEGORIES if c not in declared]
    if missing:
        raise MetadataError(filename, 1, f"missing categories: {', '.join(missing)}")

    sections: dict[str, dict[int, tuple[str, int]]] = {}
    current = None
    for number, line in enumerate(lines[2:], start=3):
        if not line.strip():
            continue
        if not line.startswith("\t"):
            current = line.strip()
            if current in sections:
                raise MetadataError(filename, number, f"category {current!r} declared twice")
            sections[current] = {}
            continue
        fields = line.strip("\t").split("\t")
        if current is None or len(fields) != 2 or not NUMBER.fullmatch(fields[0]):
            raise MetadataError(filename, number, "expected '<tab><label><tab><class name>'")
        label, name = int(fields[0]), fields[1].strip()
        if not CLASS_NAME.fullmatch(name) or name in (".", ".."):
            raise MetadataError(filename, number, f"class name {name!r} is not usable as a folder name")
        sections[current][label] = (name, number)

    classes = {}
    for category in CATEGORIES:
        entries = sections.get(category, {})
        if sorted(entries) != list(range(len(entries))) or len(entries) != declared[category]:
            raise MetadataError(
                filename, 2,
                f"category {category!r} declares {declared[category]} classes but lists labels {sorted(entries)}",
            )
        names_ = tuple(entries[i][0] for i in range(declared[category]))
        for i, name in enumerate(names_):
            if name in names_[:i]:
                raise MetadataError(filename, entries[i][1], f"category {category!r} repeats class name {name!r}")
        classes[category] = names_
    return classes


def parse_labels(data: bytes, classes: Mapping[str, Sequence[str]]) -> dict[int, tuple[str, int, int]]:
    """labels.csv -> {image index: (split, gender, status)}."""
    filename = "labels.csv"
    text = decode(data, filename)
    fast = _plain_labels(text, classes)
    if fast is not None:
        return fast
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise MetadataError(filename, 1, "empty file, expected the header image,gender,status,set") from None
    except csv.Error as exc:
        raise MetadataError(filename, 1, f"malformed CSV: {exc}") from None
    missing = [c for c in LABEL_COLUMNS if c not in header]
    if missing:
        raise MetadataError(filename, 1, f"missing column(s): {', '.join(missing)}")
    column = {c: header.index(c) for c in LABEL_COLUMNS}

    labels: dict[int, tuple[str, int, int]] = {}
    first_seen: dict[int, int] = {}
    try:
        for row in reader:
            number = reader.line_num
            if not any(field.strip() for field in row):
                continue
            if len(row) < len(header):
                raise MetadataError(filename, number, f"expected {len(header)} fields, found {len(row)}")
            image = row[column["image"]].strip()
            if not IMAGE_NAME.fullmatch(image):
                raise MetadataError(filename, number, f"image name {image[:60]!r} is not of the form NNNNNNNN.jpg")
            index = int(image[:8])
            split = row[column["set"]].strip()
            if split not in SPLIT_NAMES:
                raise MetadataError(filename, number, f"set {split[:20]!r} is not one of {', '.join(SPLIT_NAMES)}")
            values = []
            for category in CATEGORIES:
                raw = row[column[category]].strip()
                if not NUMBER.fullmatch(raw) or int(raw) >= len(classes[category]):
                    raise MetadataError(
                        filename, number,
                        f"{category} {raw[:20]!r} is outside 0..{len(classes[category]) - 1} "
                        "declared by labels.metadata.en.txt",
                    )
                values.append(int(raw))
            if index in labels:
                raise MetadataError(filename, number, f"duplicate row for {image} (first on line {first_seen[index]})")
            labels[index] = (split, values[0], values[1])
            first_seen[index] = number
    except csv.Error as exc:
        raise MetadataError(filename, reader.line_num, f"malformed CSV: {exc}") from None
    return labels


def _plain_labels(text: str, classes: Mapping[str, Sequence[str]]) -> dict[int, tuple[str, int, int]] | None:
    """labels.csv read in one pass when it is upstream's plain shape and every row is good;
    None otherwise, and the row-by-row reading finds and names the first bad row."""
    if not PLAIN_LABELS.fullmatch(text):
        return None
    rows = LABEL_ROW.findall(text)
    if not rows:
        return {}
    images, genders, statuses, splits = zip(*rows)
    indices = list(map(int, images))
    gender, status = list(map(int, genders)), list(map(int, statuses))
    if (max(gender) >= len(classes["gender"]) or max(status) >= len(classes["status"])
            or len(set(indices)) != len(indices)):
        return None
    return dict(zip(indices, zip(splits, gender, status)))
