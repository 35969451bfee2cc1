"""What DIR says about itself to other tools, rewritten at the end of every download run.

Four kinds of file, all derived from the metadata, the layout and the images on disk,
so each run (a layout switch included) keeps them true:

* attributes.csv: original_tags.txt under English names, one row per image;
* metadata.jsonl in each split folder (images_256/ in the flat layout), which
  Hugging Face `datasets`' imagefolder reads instead of guessing labels from folder names;
* croissant.json: the MLCommons Croissant description (see kaokore.croissant);
* README.md: the dataset card (see kaokore.card), only where kaokore wrote the one there.
"""
from __future__ import annotations

import csv
import io
import json
import os
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from . import metadata as md
from .attributes import ATTRIBUTE_NAMES, export_row
from .errors import DirectoryError
from .layout import FLAT_FOLDER, SPLITS, UNLABELED, image_path, layout_folders
from .safefs import remove_file, remove_folder, scan, update_file
from .store import ManifestRow

HF_METADATA = "metadata.jsonl"  # a name imagefolder looks for; verify and the loaders skip it
ATTRIBUTES_CSV = "attributes.csv"
ATTRIBUTE_COLUMNS = ("image", *ATTRIBUTE_NAMES)
# Where any layout may have had a metadata.jsonl: the split folders and the flat folder.
HF_FOLDERS = (*SPLITS, FLAT_FOLDER, UNLABELED)


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


def write_dataset_description(root: str | os.PathLike, meta: md.Metadata, layout: str,
                              rows: Iterable[ManifestRow], *, version: str | None = None,
                              command: str | None = None) -> None:
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

    Raises
    ------
    DirectoryError
        If a file cannot be written.
    """
    from .card import write_card
    from .croissant import write_croissant

    root = Path(root)
    present = present_images(root, meta, layout)
    try:
        update_file(root, ATTRIBUTES_CSV, attributes_csv(meta))
        write_hf_metadata(root, meta, layout, present)
        write_croissant(root, meta, layout, present, version)
        write_card(root, meta, layout, present, list(rows), command, version)
    except OSError as exc:
        where = exc.filename or str(root)  # safefs.write_file names the file it could not write
        raise DirectoryError(f"cannot write {where!r} (the dataset description): {exc.strerror or exc}") from None


def present_images(root: Path, meta: md.Metadata, layout: str) -> list[Present]:
    """The version's images that are where `layout` puts them, by image number.

    Parameters
    ----------
    root : Path
        The dataset directory.
    meta : Metadata
        The parsed metadata of the version DIR holds.
    layout : str
        The layout to look in.

    Returns
    -------
    list of Present
    """
    on_disk = set()
    for folder in layout_folders(layout, meta.classes):
        on_disk.update(f"{folder}/{e.name}" for e in scan(root, folder)
                       if e.is_file and md.IMAGE_NAME.fullmatch(e.name))
    found = []
    for item in meta.items:
        rel = image_path(item, layout, meta.classes)
        if rel in on_disk:
            found.append(Present(item, rel))
    return found


def attributes_csv(meta: md.Metadata) -> bytes:
    """attributes.csv: every image original_tags.txt describes, by image number.

    Parameters
    ----------
    meta : Metadata
        The parsed metadata.

    Returns
    -------
    bytes
        UTF-8 CSV with a header, columns ``image`` and then the `export_row` columns.
    """
    out = io.StringIO(newline="")
    writer = csv.DictWriter(out, ATTRIBUTE_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for index in sorted(meta.attributes):
        writer.writerow({"image": f"{index:08d}.jpg", **export_row(meta.attributes[index])})
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


def write_hf_metadata(root: Path, meta: md.Metadata, layout: str, present: Sequence[Present]) -> None:
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

    Raises
    ------
    OSError
        A file cannot be written or removed.
    """
    groups = hf_groups(meta, layout, present)
    for folder, rows in groups.items():
        text = "".join(json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n" for row in rows)
        update_file(root, f"{folder}/{HF_METADATA}", text.encode("utf-8"))
    keep = set(layout_folders(layout, meta.classes)) | {f.split("/")[0] for f in layout_folders(layout, meta.classes)}
    for folder in HF_FOLDERS:
        if folder in groups:
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
