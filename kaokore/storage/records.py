"""The records DIR keeps about itself: the files that hold them, and the rows and state they hold.

Below every other storage module: the manifest and failures are read and written in
`manifest`, the image files in `store`, and these records are what both agree on.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Protocol

from ..dataset.metadata import Item
from ..dataset.versions import METADATA_FILES
from .lock import LOCK

MANIFEST = "manifest.csv"
JOURNAL = "manifest.journal.csv"  # rows of the run in progress; folded into the manifest at its end
FAILURES = "failures.csv"
CONTENT_PROVIDERS = "CONTENT_PROVIDERS.txt"
STATE = "kaokore.json"  # which version and layout DIR holds, and whether its metadata was pinned
# Every file kaokore keeps at DIR's root: none of them may be a link leading outside DIR.
ROOT_FILES = (*METADATA_FILES, CONTENT_PROVIDERS, MANIFEST, JOURNAL, FAILURES, STATE, LOCK)
FAILURE_COLUMNS = ("image", "url", "error", "attempts")
ORIGINS = ("fetched", "adopted", "reused")


class Made(Protocol):
    """How an image's bytes were made: a normalized image, or the manifest row of a file taken as it is."""

    source_width: int | None
    source_height: int | None
    source_mode: str
    converted: bool | None


@dataclass(frozen=True)
class ManifestRow:
    image: str
    path: str  # relative to DIR, '/' separators
    url: str
    sha256: str
    bytes: int
    source_width: int | None  # None: unknown (adopted by an older kaokore, which did not record it)
    source_height: int | None
    source_mode: str
    converted: bool | None  # False: the bytes are the server's own
    layout: str
    origin: str = "fetched"  # fetched: by kaokore from the URL | adopted: found on disk, DIR's version known
    # | reused: the same IIIF request's file, taken from another tree (or another image of DIR's): see `reuse`
    source: str = ""  # reused: the file it was taken from (an absolute path, or the name of DIR's own image)

    @classmethod
    def of(cls, item: Item, rel: str, layout: str, made: Made, sha256: str, size: int, *,
           origin: str = "fetched", source: str = "") -> ManifestRow:
        """The row of `item`'s file at `rel` in `layout`, whose bytes (`size` of them, hashing to
        `sha256`) were `made` as it says."""
        return cls(item.name, rel, item.url, sha256, size, made.source_width, made.source_height,
                   made.source_mode, made.converted, layout, origin, source)


MANIFEST_COLUMNS = tuple(f.name for f in fields(ManifestRow))


@dataclass(frozen=True)
class State:
    """kaokore.json: what a run leaves DIR as, written once its files are where `layout` puts them."""

    dataset_version: str
    layout: str
    metadata_pinned: bool  # False: from --metadata-dir, whose files no pin holds
    metadata_sha256: Mapping[str, str]  # of the identifying files the run numbered images by
    kaokore: str  # the version of kaokore that wrote it
    description: Mapping | None = None  # the record of the description written (None: none yet)

    def to_json(self) -> dict:
        """The document, without `description` when there is none."""
        doc = asdict(self)
        if self.description is None:
            del doc["description"]
        return doc
