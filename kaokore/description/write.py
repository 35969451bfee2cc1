"""What DIR says about itself to other tools, rewritten at the end of every download run.

Four kinds of file, all derived from the metadata, the layout and the images on disk,
so each run (a layout switch included) keeps them true:

* attributes.csv and the metadata.jsonl files Hugging Face's imagefolder reads
  (see kaokore.description.listing);
* croissant.json: the MLCommons Croissant description (see kaokore.description.croissant);
* README.md: the dataset card (see kaokore.description.card), only where kaokore wrote the one there.

A run records what the files were made from, and what they hold, in kaokore.json: the
next run recomputes nothing when neither changed (a no-op rerun), and everything when
either did (a new image, a layout switch, an edited file, another kaokore).
"""
from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from .._version import __version__
from ..dataset import attributes, citation
from ..dataset import layout as layouts
from ..dataset import metadata as md
from ..dataset.layout import ANY_HF_FOLDERS, layout_folders
from ..errors import DirectoryError
from ..storage.records import ManifestRow
from ..storage.safefs import TreeReader, read_file
from ..storage.safewrite import remove_file, remove_folder, update_file
from . import card, croissant, fingerprint, listing
from .card import card_path, dataset_card
from .croissant import CROISSANT, croissant_json
from .listing import ATTRIBUTES_CSV, HF_METADATA, Prepared, Present, hf_files, prepare_description, present_images

# The modules whose code writes the description: a record made by other code is not trusted.
_WRITERS = (sys.modules[__name__], listing, card, croissant, fingerprint, citation, attributes, layouts)


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
        `prepare_description(meta, layout)`, if made already.
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
    root = Path(root)
    rows = list(rows)
    if prepared is not None and prepared.layout != layout:
        prepared = None
    present = present_images(root, meta, layout, prepared)
    card_name = card_path(root)
    inputs = _inputs(meta, layout, present, rows, version, command, card_name)
    if _unchanged(root, record, inputs):
        return dict(record)
    prepared = prepared or prepare_description(meta, layout)
    listed = {ATTRIBUTES_CSV: prepared.attributes_csv, **hf_files(meta, layout, present, prepared)}
    described = {CROISSANT: croissant_json(meta, layout, present, version, md.sha256(prepared.attributes_csv)),
                 card_name: dataset_card(meta, layout, present, rows, command, version).encode("utf-8")}
    try:
        _write(root, listed)
        _remove_hf_leftovers(root, meta, layout, listed)
        _write(root, described)
    except OSError as exc:
        where = exc.filename or str(root)  # safefs.write_file names the file it could not write
        raise DirectoryError(f"cannot write {where!r} (the dataset description): {exc.strerror or exc}") from None
    files = {**listed, **described}
    return {"inputs": inputs, "files": {name: md.sha256(data) for name, data in files.items()}}


def _write(root: Path, files: Mapping[str, bytes]) -> None:
    for rel, data in files.items():
        update_file(root, rel, data)


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
    h = []
    for module in _WRITERS:
        path = getattr(module, "__file__", None)
        try:
            h.append(Path(path).read_bytes() if path else module.__name__.encode())
        except OSError:
            h.append(module.__name__.encode())
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
    for folder in ANY_HF_FOLDERS:
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


def _remove_hf_leftovers(root: Path, meta: md.Metadata, layout: str, written: Mapping[str, bytes]) -> None:
    folders = layout_folders(layout, meta.classes)
    keep = set(folders) | {f.split("/")[0] for f in folders}
    for folder in ANY_HF_FOLDERS:
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
