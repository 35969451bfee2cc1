"""What DIR says about itself to other tools, rewritten at the end of every download run.

Four kinds of file, all derived from the metadata, the layout and the images on disk,
so each run (a layout switch included) keeps them true:

* attributes.csv: original_tags.txt under English names, one row per image;
* metadata.jsonl in each split folder (images_256/ in the flat layout), which
  Hugging Face `datasets`' imagefolder reads instead of guessing labels from folder names;
* croissant.json: the MLCommons Croissant description (see kaokore.croissant);
* README.md: the dataset card (see kaokore.card), only where kaokore wrote the one there.

What they take from the metadata alone (`prepare_description`: original_tags.txt parsed,
attributes.csv, each image's attribute columns) can be made while the images download.
A run records what the files were made from, and what they hold, in kaokore.json: the
next run recomputes nothing when neither changed (a no-op rerun), and everything when
either did (a new image, a layout switch, an edited file, another kaokore).
"""
from __future__ import annotations

import csv
import io
import json
import os
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from json.encoder import encode_basestring
from pathlib import Path

from .._version import __version__
from ..dataset import metadata as md
from ..dataset.attributes import ATTRIBUTE_NAMES, export_fields, export_row, field_values
from ..dataset.layout import FLAT_FOLDER, SPLITS, UNLABELED, image_path, layout_folders
from ..errors import DirectoryError
from ..storage.records import ManifestRow
from ..storage.safefs import TreeReader, read_file, scan_names
from ..storage.safewrite import remove_file, remove_folder, update_file

HF_METADATA = "metadata.jsonl"  # a name imagefolder looks for; verify and the loaders skip it
ATTRIBUTES_CSV = "attributes.csv"
ATTRIBUTE_COLUMNS = ("image", *ATTRIBUTE_NAMES)
# Where any layout may have had a metadata.jsonl: the split folders and the flat folder.
HF_FOLDERS = (*SPLITS, FLAT_FOLDER, UNLABELED)
# json.dumps(row, ensure_ascii=False, separators=(",", ":")), made once.
_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
# The modules whose code writes the description: a record made by other code is not trusted.
_WRITERS = ("description.write", "description.card", "description.croissant", "dataset.citation", "dataset.attributes")


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
    places: tuple
    lines: Mapping[int, tuple[str, bytes]]


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
    rel: str  # relative to DIR, '/' separators


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
            continue  # an unlabeled image gets no row, in any layout: see hf_groups
        found = fields.get(item.index)
        if found is None:
            columns = absent = absent or _JSON.encode(export_row(None))[1:]
        else:
            columns = _JSON.encode(dict(zip(ATTRIBUTE_NAMES, export_fields(found))))[1:]
        # hf_row as JSON: json.dumps(row, ensure_ascii=False, separators=(",", ":")), piece by piece.
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


def write_dataset_description(root: str | os.PathLike, meta: md.Metadata, layout: str,
                              rows: Iterable[ManifestRow], *, version: str | None = None,
                              command: str | None = None, prepared: Prepared | None = None,
                              record: Mapping | None = None) -> dict:
    """Rewrite attributes.csv, the metadata.jsonl files, croissant.json and the dataset card.

    Parameters
    ----------
    root : path
        The dataset directory, after the run has written its manifest.
    meta : Metadata
        The parsed metadata of the version DIR holds.
    layout : str
        The layout DIR is now in.
    rows : iterable of ManifestRow
        The manifest's rows, for the fingerprint and the count of re-encoded images.
    version : str, optional
        The dataset version's name (1.0 ... 1.3).
    command : str, optional
        The command line that reproduces this tree (see `download_command`).
    prepared : Prepared, optional
        `prepare_description(meta)`, if made already.
    record : Mapping, optional
        What the last call returned (kept in kaokore.json): when what the files are made of
        is what it was then, and every file still holds what was written, nothing is
        recomputed or written.

    Returns
    -------
    dict
        The record of this description: a digest of what it was made of, and the SHA-256
        of each file.

    Raises
    ------
    DirectoryError
        If a file cannot be written.
    """
    from .card import card_path, dataset_card
    from .croissant import croissant_json

    root = Path(root)
    rows = list(rows)
    if prepared is not None and prepared.layout != layout:
        prepared = None
    present = present_images(root, meta, layout, prepared)
    card = card_path(root)
    inputs = _inputs(meta, layout, present, rows, version, command, card)
    if _unchanged(root, record, inputs):
        return dict(record)
    prepared = prepared or prepare_description(meta, layout)
    hf = hf_files(meta, layout, present, prepared)
    try:
        update_file(root, ATTRIBUTES_CSV, prepared.attributes_csv)
        for rel, data in hf.items():
            update_file(root, rel, data)
        _remove_hf_leftovers(root, meta, layout, hf)
        files = {ATTRIBUTES_CSV: prepared.attributes_csv, **hf}
        files[CROISSANT] = croissant_json(meta, layout, present, version, md.sha256(prepared.attributes_csv))
        update_file(root, CROISSANT, files[CROISSANT])
        files[card] = dataset_card(meta, layout, present, rows, command, version).encode("utf-8")
        update_file(root, card, files[card])
    except OSError as exc:
        where = exc.filename or str(root)  # safefs.write_file names the file it could not write
        raise DirectoryError(f"cannot write {where!r} (the dataset description): {exc.strerror or exc}") from None
    return {"inputs": inputs, "files": {name: md.sha256(data) for name, data in files.items()}}


CROISSANT = "croissant.json"  # kaokore.croissant's file, named here for the record


def _inputs(meta: md.Metadata, layout: str, present: Sequence[Present], rows: Sequence[ManifestRow],
            version: str | None, command: str | None, card: str) -> str:
    """A digest of everything the description is made of: the code that writes it, the metadata,
    the layout, the images present and where, every manifest row, the version and the command."""
    rows_text = "".join(f"{r.image} {r.sha256} {r.converted} {r.source_width} {r.source_height} {r.source_mode} "
                        f"{r.origin}\n" for r in sorted(rows, key=lambda r: r.image))
    parts = [__version__, _code_digest(), str(version), layout, str(command), card, str(meta.pinned),
             *(f"{name} {md.sha256(data)}" for name, data in sorted(meta.files.items())),
             md.sha256("\n".join(p.rel for p in present).encode("utf-8")), md.sha256(rows_text.encode("utf-8"))]
    return md.sha256("\n".join(parts).encode("utf-8"))


def _code_digest() -> str:
    """The SHA-256 of the modules that write the description (a changed card is another card)."""
    import importlib

    h = []
    for name in _WRITERS:
        path = getattr(importlib.import_module(f"kaokore.{name}"), "__file__", None)
        try:
            h.append(Path(path).read_bytes() if path else name.encode())
        except OSError:
            h.append(name.encode())
    return md.sha256(b"\0".join(h))


def _unchanged(root: Path, record: Mapping | None, inputs: str) -> bool:
    """Whether `record` is of a description made of `inputs` whose files are still as written,
    and no metadata.jsonl it did not write has appeared where imagefolder would read it."""
    if not isinstance(record, Mapping) or record.get("inputs") != inputs:
        return False
    files = record.get("files")
    if not isinstance(files, Mapping) or not all(isinstance(v, str) for v in files.values()):
        return False
    with TreeReader(root) as reader:
        for name, digest in files.items():
            try:
                if md.sha256(reader.read(name)) != digest:
                    return False
            except (OSError, TypeError):
                return False
    for folder in HF_FOLDERS:
        rel = f"{folder}/{HF_METADATA}"
        if rel not in files:
            try:
                read_file(root, rel)
            except FileNotFoundError:
                continue
            except OSError:
                pass
            return False
    return True


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
    image = md.IMAGE_NAME.fullmatch
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


def attributes_csv(meta: md.Metadata, fields: Mapping[int, Sequence] | None = None) -> bytes:
    """attributes.csv: every image original_tags.txt describes, by image number.

    Parameters
    ----------
    meta : Metadata
        The parsed metadata.
    fields : Mapping of int to sequence, optional
        Each image's attributes as fields in order (`kaokore.attributes.field_rows`), if read already.

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


def hf_row(meta: md.Metadata, present: Present, file_name: str) -> dict:
    """One image's row of metadata.jsonl.

    Parameters
    ----------
    meta : Metadata
        The parsed metadata, for the image's attributes.
    present : Present
        The image.
    file_name : str
        Its path relative to the folder holding the metadata.jsonl.

    Returns
    -------
    dict
        file_name, name, split, gender and status (ints), and the `export_row` columns.
    """
    item = present.item
    return {"file_name": file_name, "name": item.name, "split": item.split,
            "gender": item.gender, "status": item.status, **export_row(meta.attributes.get(item.index))}


def hf_folder(layout: str, item: md.Item) -> str | None:
    """The folder whose metadata.jsonl lists `item` (see `hf_groups`), or None for an unlabeled image.

    Parameters
    ----------
    layout : str
        DIR's layout.
    item : Item
        The image.

    Returns
    -------
    str or None
        "train", "dev" or "test"; "images_256" in the flat layout; None when unlabeled.
    """
    if item.split is None:
        return None
    return FLAT_FOLDER if layout == "flat" else item.split


def hf_groups(meta: md.Metadata, layout: str, present: Sequence[Present]) -> dict[str, list[dict]]:
    """The metadata.jsonl rows of each folder that gets one.

    imagefolder takes a split from a folder named train/dev/test, so a labelled split's
    rows sit in its folder, with file_name relative to it (male/00000001.jpg in the
    gender layout). unlabeled/ is no split name: it gets no rows. The flat layout has
    one folder, hence one metadata file and one split, with a `split` column; its
    unlabeled images get no rows either, so that in every layout imagefolder gives the
    labelled images only and no row has a null gender or status (imagefolder reads the
    rows of metadata.jsonl, and leaves out an image that has none, from datasets 3.4 on).

    Parameters
    ----------
    meta : Metadata
        The parsed metadata.
    layout : str
        DIR's layout.
    present : sequence of Present
        The images on disk (`present_images`).

    Returns
    -------
    dict of str to list of dict
        Folder relative to DIR -> its `hf_row` rows.
    """
    groups: dict[str, list[dict]] = {}
    for p in present:
        folder = hf_folder(layout, p.item)
        if folder is None:
            continue
        groups.setdefault(folder, []).append(hf_row(meta, p, p.rel[len(folder) + 1:]))
    return groups


def hf_files(meta: md.Metadata, layout: str, present: Sequence[Present],
             prepared: Prepared | None = None) -> dict[str, bytes]:
    """Each metadata.jsonl (relative to DIR) and its bytes: the `hf_groups` rows, one JSON object a line.

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


def write_hf_metadata(root: Path, meta: md.Metadata, layout: str, present: Sequence[Present],
                      prepared: Prepared | None = None) -> None:
    """Write each folder's metadata.jsonl (`hf_groups`), and remove those no longer wanted.

    A metadata.jsonl left in a folder by another layout (or by images since removed)
    is deleted, and its folder with it when the layout does not use the folder and it
    is then empty.

    Parameters
    ----------
    root : Path
        The dataset directory.
    meta : Metadata
        The parsed metadata.
    layout : str
        DIR's layout.
    present : sequence of Present
        The images on disk (`present_images`).
    prepared : Prepared, optional
        `prepare_description(meta)`, if made already.

    Raises
    ------
    OSError
        A file cannot be written or removed.
    """
    files = hf_files(meta, layout, present, prepared)
    for rel, data in files.items():
        update_file(root, rel, data)
    _remove_hf_leftovers(root, meta, layout, files)


def _remove_hf_leftovers(root: Path, meta: md.Metadata, layout: str, written: Mapping[str, bytes]) -> None:
    folders = layout_folders(layout, meta.classes)
    keep = set(folders) | {f.split("/")[0] for f in folders}
    for folder in HF_FOLDERS:
        if f"{folder}/{HF_METADATA}" in written:
            continue
        # Left by another layout (or by images since removed): imagefolder would read it as a split.
        if remove_file(root, f"{folder}/{HF_METADATA}") and folder not in keep:
            remove_folder(root, folder)  # emptied by the layout switch but for our file


def download_command(root: str | os.PathLike, version: str, layout: str, splits: Sequence[str] | None = None,
                     limit: int | None = None, metadata_dir: str | os.PathLike | None = None) -> str:
    """The `kaokore download` command line that makes (or completes) this tree.

    Parameters
    ----------
    root : str or os.PathLike
        The dataset directory.
    version : str
        The dataset version's name.
    layout : str
        The layout.
    splits : sequence of str, optional
        The splits selected, if not all.
    limit : int, optional
        The image limit, if any.
    metadata_dir : str or os.PathLike, optional
        The ``--metadata-dir``, if the metadata came from one.

    Returns
    -------
    str
        A shell-quoted command line.
    """
    argv = ["kaokore", "download", "--dir", os.fspath(root), "--dataset_version", version, "--layout", layout]
    for split in splits or ():
        argv += ["--split", split]
    if limit is not None:
        argv += ["--limit", str(limit)]
    if metadata_dir is not None:
        argv += ["--metadata-dir", os.fspath(metadata_dir)]
    return shlex.join(argv)
