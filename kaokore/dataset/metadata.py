"""Metadata: get the five upstream files, check them, and parse them into items.

Every check here names the file and the line, because the files come from the
network (or a user's folder) and a bad line must never turn into a path outside
DIR, a request to a non-HTTP URL, or a silently wrong label.
"""
from __future__ import annotations

import hashlib
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
from .labels import CATEGORIES, parse_classes, parse_labels
from .text import decode, split_lines
from .versions import METADATA_FILES, Version

# The whole-file shape of a well-formed urls.txt, checked in one pass of the regex engine. A file that
# has it needs no check line by line; any other file goes through the line-by-line checks, which
# find and name the first bad line. A URL here passes every check of `_url_problem`: http(s), a host
# name, a port urlsplit accepts, then printable ASCII only (no space, no control character).
_PORT = r"(?:[0-9]{1,4}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
_PLAIN_URL = rf"https?://[A-Za-z0-9.-]+(?::{_PORT})?(?:[/?#][!-~]*)?"
PLAIN_URLS = re.compile(rf"(?:(?:{_PLAIN_URL})?\r?\n)*(?:{_PLAIN_URL}\r?)?")


@dataclass(frozen=True, init=False)
class Item:
    """One image of the dataset: its URL line and, when it has one, its label row."""

    index: int
    url: str | None
    split: str | None = None
    gender: int | None = None
    status: int | None = None

    def __init__(self, index: int, url: str | None, split: str | None = None, gender: int | None = None,
                 status: int | None = None) -> None:
        # Straight into the instance dict: a frozen dataclass's own __init__ sets each field through
        # object.__setattr__, and 1.3's 9,683 items took twice as long (15 ms, in front of a run's first
        # request). `name`, asked for many times per image by every command, is made once, here.
        fields = self.__dict__
        fields["index"], fields["url"], fields["split"], fields["gender"], fields["status"] = (
            index, url, split, gender, status)
        fields["name"] = f"{index:08d}.jpg"

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
            check_attributes(split_lines(decode(self._data, "original_tags.txt")))

    def fields(self) -> Iterator[tuple[int, tuple]]:
        """(image index, its attributes' fields in order) for every image the file lists, without
        keeping ~10,000 Attributes (~10 MB for 1.3) when they were not parsed already: for a
        caller that reads them once."""
        if self._parsed is not None:
            return ((index, field_values(a)) for index, a in self._parsed.items())
        return field_rows(split_lines(decode(self._data, "original_tags.txt")), self._urls)

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
    return _parse_attributes(split_lines(decode(data, "original_tags.txt")), urls)


def parse_urls(data: bytes) -> list[str | None]:
    """Line N (from 0) is image N; a blank line keeps the numbering but has no image."""
    text = decode(data, "urls.txt")
    if PLAIN_URLS.fullmatch(text):
        return [line or None for line in split_lines(text)]
    urls: list[str | None] = []
    for number, line in enumerate(split_lines(text), start=1):
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


