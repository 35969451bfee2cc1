"""What the description lists: the images on disk, attributes.csv and the metadata.jsonl files.

The records the card, the Croissant document and the writer share, below all three:

* attributes.csv: original_tags.txt under English names, one row per image;
* metadata.jsonl in each split folder (images_256/ in the flat layout), which
  Hugging Face `datasets`' imagefolder reads instead of guessing labels from folder names.

What they take from the metadata alone (`prepare_description`: original_tags.txt parsed,
attributes.csv, each image's metadata.jsonl line) can be made while the images download.
"""
from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from json.encoder import encode_basestring
from pathlib import Path

from ..dataset import metadata as md
from ..dataset.attributes import ATTRIBUTE_NAMES, export_fields, export_row, field_values
from ..dataset.labels import IMAGE_NAME
from ..dataset.layout import hf_folder, image_path, layout_folders
from ..storage.safefs import scan_names

HF_METADATA = "metadata.jsonl"  # a name imagefolder looks for; verify and the loaders skip it
ATTRIBUTES_CSV = "attributes.csv"
ATTRIBUTE_COLUMNS = ("image", *ATTRIBUTE_NAMES)
# json.dumps(row, ensure_ascii=False, separators=(",", ":")), made once.
_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


@dataclass(frozen=True)
class Present:
    """An image of the version found where the layout puts it.

    Attributes
    ----------
    item : Item
        The image, with its URL and labels.
    rel : str
        Its path relative to DIR, with '/' separators.
    """

    item: md.Item
    rel: str


@dataclass(frozen=True)
class Prepared:
    """What the description takes from the metadata and the layout alone, made before the images
    are known (`prepare_description`): the slow part, done while they download.

    Attributes
    ----------
    layout : str
        The layout it was made for.
    attributes_csv : bytes
        attributes.csv.
    places : tuple of Present
        Every image of the version at its place in `layout`, by image number.
    lines : Mapping of int to (str, bytes)
        By image index: the folder whose metadata.jsonl lists the image, and its line there.
    """

    layout: str
    attributes_csv: bytes
    places: tuple[Present, ...]
    lines: Mapping[int, tuple[str, bytes]]


def prepare_description(meta: md.Metadata, layout: str) -> Prepared:
    """The parts of the description that depend on the metadata and the layout alone; no I/O,
    so a run can make them on another thread while it fetches.

    Parameters
    ----------
    meta : Metadata
        The parsed metadata.
    layout : str
        The layout DIR will be in.

    Returns
    -------
    Prepared
    """
    classes = meta.classes
    fields = _fields(meta)
    places = tuple(Present(item, image_path(item, layout, classes)) for item in meta.items)
    lines = {}
    absent = None
    for p in places:
        item = p.item
        folder = hf_folder(layout, item)
        if not item.url or folder is None:
            continue  # an unlabeled image gets no row, in any layout: see hf_folder
        found = fields.get(item.index)
        if found is None:
            columns = absent = absent or _JSON.encode(export_row(None))[1:]
        else:
            columns = _JSON.encode(dict(zip(ATTRIBUTE_NAMES, export_fields(found))))[1:]
        # The row as json.dumps(row, ensure_ascii=False, separators=(",", ":")) writes it, built
        # piece by piece: it is made for every image of the version.
        lines[item.index] = (folder, (
            f'{{"file_name":{encode_basestring(p.rel[len(folder) + 1:])},"name":{encode_basestring(item.name)},'
            f'"split":{encode_basestring(item.split)},"gender":{_JSON.encode(item.gender)},'
            f'"status":{_JSON.encode(item.status)},{columns}\n').encode())
    return Prepared(layout, attributes_csv(meta, fields), places, lines)


def _fields(meta: md.Metadata) -> dict[int, tuple]:
    """Each image's attributes as a tuple of fields, by image index (lighter than Attributes)."""
    if isinstance(meta.attributes, md.LazyAttributes):
        return dict(meta.attributes.fields())
    return {index: field_values(a) for index, a in meta.attributes.items()}


def attributes_csv(meta: md.Metadata, fields: Mapping[int, Sequence] | None = None) -> bytes:
    """attributes.csv: every image original_tags.txt describes, by image number.

    Parameters
    ----------
    meta : Metadata
        The parsed metadata.
    fields : Mapping of int to sequence, optional
        Each image's attributes as fields in order (`kaokore.dataset.attributes.field_rows`), if read already.

    Returns
    -------
    bytes
        UTF-8 CSV with a header, columns ``image`` and then the `export_row` columns.
    """
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(ATTRIBUTE_COLUMNS)
    if fields is None:
        fields = _fields(meta)
    writer.writerows([f"{index:08d}.jpg", *export_fields(fields[index])] for index in sorted(fields))
    return out.getvalue().encode("utf-8")


def present_images(root: Path, meta: md.Metadata, layout: str, prepared: Prepared | None = None) -> list[Present]:
    """The version's images that are where `layout` puts them, by image number.

    Parameters
    ----------
    root : Path
        The dataset directory.
    meta : Metadata
        The parsed metadata of the version DIR holds.
    layout : str
        The layout to look in.
    prepared : Prepared, optional
        `prepare_description(meta, layout)`, if made already: it knows every image's place.

    Returns
    -------
    list of Present
    """
    on_disk = set()
    image = IMAGE_NAME.fullmatch
    for folder in layout_folders(layout, meta.classes):
        on_disk.update(f"{folder}/{name}" for name in scan_names(root, folder)[0] if image(name))
    if not on_disk:
        return []
    if prepared is not None and prepared.layout == layout:
        return [p for p in prepared.places if p.rel in on_disk]
    classes = meta.classes
    found = []
    for item in meta.items:
        rel = image_path(item, layout, classes)
        if rel in on_disk:
            found.append(Present(item, rel))
    return found


def hf_files(meta: md.Metadata, layout: str, present: Sequence[Present],
             prepared: Prepared | None = None) -> dict[str, bytes]:
    """Each metadata.jsonl, relative to DIR, and its bytes: in the folder `hf_folder` names, one JSON
    object a line per labelled image present, with file_name (relative to that folder), name,
    split, gender and status (ints), and the `export_row` columns.

    Parameters
    ----------
    meta : Metadata
        The parsed metadata.
    layout : str
        DIR's layout.
    present : sequence of Present
        The images on disk (`present_images`).
    prepared : Prepared, optional
        `prepare_description(meta, layout)`, if made already.

    Returns
    -------
    dict of str to bytes
    """
    if prepared is None or prepared.layout != layout:
        prepared = prepare_description(meta, layout)
    lines: dict[str, list[bytes]] = {}
    made = prepared.lines
    for p in present:
        entry = made.get(p.item.index)
        if entry is not None:
            lines.setdefault(entry[0], []).append(entry[1])
    return {f"{folder}/{HF_METADATA}": b"".join(text) for folder, text in lines.items()}
