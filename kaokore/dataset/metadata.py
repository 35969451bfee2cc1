"""Metadata: get the five upstream files, check them, and parse them into items.

Every check here names the file and the line, because the files come from the
network (or a user's folder) and a bad line must never turn into a path outside
DIR, a request to a non-HTTP URL, or a silently wrong label.
"""
from __future__ import annotations

import csv
import hashlib
import io
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlsplit

from ..errors import ChecksumError, MetadataError
from . import versions
from .attributes import Attributes, check_attributes, field_rows, field_values
from .attributes import parse_attributes as _parse_attributes
from .versions import METADATA_FILES, Version

IMAGE_NAME = re.compile(r"[0-9]{8}\.jpg")
CLASS_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 _.-]*")  # must be safe as a folder name
# ASCII only: str.isdigit() also accepts "²" (which int() rejects) and "٣" (which it reads as 3).
NUMBER = re.compile(r"[0-9]{1,6}")
LABEL_COLUMNS = ("image", "gender", "status", "set")
SPLIT_NAMES = ("train", "dev", "test")
CATEGORIES = ("gender", "status")

# Whole-file shapes of the well-formed files, checked in one pass of the regex engine. A file that
# has them needs no check line by line; any other file goes through the line-by-line checks, which
# find and name the first bad line. A URL here passes every check of `_url_problem`: http(s), a host
# name, a port urlsplit accepts, then printable ASCII only (no space, no control character).
_PORT = r"(?:[0-9]{1,4}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
_PLAIN_URL = rf"https?://[A-Za-z0-9.-]+(?::{_PORT})?(?:[/?#][!-~]*)?"
PLAIN_URLS = re.compile(rf"(?:(?:{_PLAIN_URL})?\r?\n)*(?:{_PLAIN_URL}\r?)?")
_LABEL_ROW = r"([0-9]{8})\.jpg,([0-9]{1,6}),([0-9]{1,6}),(train|dev|test)"
PLAIN_LABELS = re.compile(rf"image,gender,status,set\r?\n(?:{_LABEL_ROW}\r?\n)*(?:{_LABEL_ROW}\r?)?")
LABEL_ROW = re.compile(_LABEL_ROW)


@dataclass(frozen=True)
class Item:
    """One image of the dataset: its URL line and, when it has one, its label row."""

    index: int
    url: str | None
    split: str | None = None
    gender: int | None = None
    status: int | None = None

    def __post_init__(self) -> None:
        # `name` is asked for many times per image by every command: made once, here (a frozen
        # dataclass's own fields cannot be set, but its instance dict can).
        self.__dict__["name"] = f"{self.index:08d}.jpg"

    @cached_property
    def name(self) -> str:
        return f"{self.index:08d}.jpg"

    def label(self, category: str) -> int | None:
        if category not in CATEGORIES:
            raise ValueError(f"unknown category {category!r}")
        return getattr(self, category)


class LazyAttributes(Mapping):
    """original_tags.txt's attributes by image index, parsed on first use.

    Only the description, `info --by` and the loaders read them, so a command that does
    not need them never pays for them; `load()` parses (and so checks) the file now.
    """

    def __init__(self, data: bytes | None, urls: Sequence[str | None]):
        self._data, self._urls = data, urls
        self._parsed: dict[int, Attributes] | None = None if data is not None else {}

    def load(self) -> dict[int, Attributes]:
        if self._parsed is None:
            self._parsed = parse_attributes(self._data, self._urls)
            self._data = self._urls = None
        return self._parsed

    def check(self) -> None:
        """Parse the file now, so that a bad line raises here; what it gives is parsed again on use
        (a download uses it once, on another thread, and need not hold ~10 MB meanwhile)."""
        if self._parsed is None:
            check_attributes(_lines(_text(self._data, "original_tags.txt")))

    def fields(self) -> Iterator[tuple[int, tuple]]:
        """(image index, its attributes' fields in order) for every image the file lists, without
        keeping ~10,000 Attributes (~10 MB for 1.3) when they were not parsed already: for a
        caller that reads them once."""
        if self._parsed is not None:
            return ((index, field_values(a)) for index, a in self._parsed.items())
        return field_rows(_lines(_text(self._data, "original_tags.txt")), self._urls)

    def __getitem__(self, index: int) -> Attributes:
        return self.load()[index]

    def __iter__(self) -> Iterator[int]:
        return iter(self.load())

    def __len__(self) -> int:
        return len(self.load())

    def __contains__(self, index: object) -> bool:
        return index in self.load()


@dataclass(frozen=True)
class Metadata:
    files: Mapping[str, bytes]  # the raw bytes, so DIR gets byte-exact copies
    items: tuple[Item, ...]  # ordered by index
    classes: Mapping[str, tuple[str, ...]]  # category -> class names, index = label
    pinned: bool  # whether every file matched the pinned SHA-256
    attributes: Mapping[int, Attributes] = field(default_factory=dict)  # image index -> original_tags.txt

    @property
    def downloadable(self) -> list[Item]:
        return [item for item in self.items if item.url]


def sha256(data: bytes | BinaryIO) -> str:
    """The SHA-256 (hex) of `data`: bytes, or a binary file read to its end in 1 MiB blocks.

    The one hash kaokore uses, for the metadata pins, the manifest and the fingerprint.
    """
    if isinstance(data, (bytes, bytearray, memoryview)):
        return hashlib.sha256(data).hexdigest()
    h = hashlib.sha256()
    for block in iter(lambda: data.read(1 << 20), b""):
        h.update(block)
    return h.hexdigest()


def check_pinned(version: Version, filename: str, data: bytes, source: str) -> None:
    digest = sha256(data)
    if digest != version.sha256[filename]:
        raise ChecksumError(
            filename, None,
            f"SHA-256 mismatch for dataset {version.name} from {source} "
            f"(expected {version.sha256[filename][:16]}…, got {digest[:16]}…)",
        )


def read_local(folder: str | os.PathLike) -> dict[str, bytes]:
    """The five files from a local folder; a missing one is an error."""
    folder = Path(folder)
    files = {}
    for name in METADATA_FILES:
        try:
            files[name] = (folder / name).read_bytes()
        except FileNotFoundError:
            raise MetadataError(str(folder / name), None, "missing metadata file") from None
        except OSError as exc:
            raise MetadataError(str(folder / name), None, f"cannot read: {exc.strerror}") from None
    return files


def fetch_pinned(version: Version, base_url: str, get: Callable[[str], bytes],
                 names: Sequence[str] = METADATA_FILES) -> dict[str, bytes]:
    """The files `names` (all five by default) from `base_url` (upstream or a mirror), each checked against its pin."""
    files = {}
    for name in names:
        url = version.metadata_url(name, base_url)
        data = get(url)
        check_pinned(version, name, data, url)
        files[name] = data
    return files


def parse(files: Mapping[str, bytes], pinned: bool) -> Metadata:
    """The five files parsed and checked; a bad line raises MetadataError naming file and line.

    original_tags.txt is checked here too, so that a bad one stops a download before anything is
    fetched, unless it is byte for byte one of the pinned files of a known version: those are
    known to parse, and their attributes are only read when something needs them.
    """
    classes = parse_classes(files["labels.metadata.en.txt"])
    urls = parse_urls(files["urls.txt"])
    labels = parse_labels(files["labels.csv"], classes)
    # A blank URL line with no label row is a gap in the numbering, not an image.
    indices = sorted({i for i, url in enumerate(urls) if url} | labels.keys())
    nurls = len(urls)
    no_label = (None, None, None)
    items = tuple(Item(index, urls[index] if index < nurls else None, *labels.get(index, no_label))
                  for index in indices)
    tags = files.get("original_tags.txt")
    attributes = LazyAttributes(tags, urls)
    if tags is not None and sha256(tags) not in {v.sha256["original_tags.txt"] for v in versions.VERSIONS.values()}:
        attributes.check()
    return Metadata(dict(files), items, classes, pinned, attributes)


def parse_attributes(data: bytes, urls: Sequence[str | None] = ()) -> dict[int, Attributes]:
    """original_tags.txt -> {image index: Attributes} (see kaokore.attributes)."""
    return _parse_attributes(_lines(_text(data, "original_tags.txt")), urls)


def _text(data: bytes, filename: str) -> str:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise MetadataError(filename, line, "not valid UTF-8") from None
    return text


def _lines(text: str) -> list[str]:
    # Only "\n" (and "\r\n") end a line. str.splitlines() also splits at "\x85",
    # "\u2028" and friends, and one of those in urls.txt would silently shift
    # every later image onto the next image's URL and labels.
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def parse_urls(data: bytes) -> list[str | None]:
    """Line N (from 0) is image N; a blank line keeps the numbering but has no image."""
    text = _text(data, "urls.txt")
    if PLAIN_URLS.fullmatch(text):
        return [line or None for line in _lines(text)]
    urls: list[str | None] = []
    for number, line in enumerate(_lines(text), start=1):
        url = line.strip()
        if not url:
            urls.append(None)
            continue
        problem = _url_problem(url)
        if problem:
            raise MetadataError("urls.txt", number, f"{problem}: {url[:80]!r}")
        urls.append(url)
    return urls


def _url_problem(url: str) -> str | None:
    # Not printable: Unicode's "Other" (control, format, surrogate, private, unassigned) and
    # "Separator" categories, the ASCII space excepted; which with it are exactly the characters
    # that are whitespace or "Other".
    if not url.isprintable() or " " in url:
        return "URL contains spaces or control characters"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        return "malformed URL"
    if parts.scheme not in ("http", "https"):
        return "not an http(s) URL"
    if not parts.hostname:
        return "URL has no host"
    return None


def parse_classes(data: bytes) -> dict[str, tuple[str, ...]]:
    """labels.metadata.en.txt: a header of categories and counts, then one section per category."""
    filename = "labels.metadata.en.txt"
    lines = _lines(_text(data, filename))
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
    text = _text(data, filename)
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
