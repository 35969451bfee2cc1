"""A complete dataset directory read for the offline commands (verify, info, preview).

Unlike a download, which completes whatever DIR holds, these read a tree that must
already have all five metadata copies: they parse them, and see which images are
where the layout puts them.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .. import hints
from ..dataset import metadata as md
from ..dataset.layout import image_path
from ..dataset.versions import METADATA_FILES, Version
from ..errors import DirectoryError
from .directory import DatasetDir, inspect
from .records import ManifestRow


@dataclass(frozen=True)
class Tree:
    """A dataset directory with its metadata parsed and the images that are where its layout puts them.

    What `open_tree` returns; `root`, `layout`, `state`, `manifest` and `version` are
    those of `dataset_dir`.

    Attributes
    ----------
    dataset_dir : DatasetDir
        What `inspect` found.
    meta : Metadata
        The parsed metadata files.
    present : frozenset of str
        Names of the images found at the path the layout gives them.
    """

    dataset_dir: DatasetDir
    meta: md.Metadata
    present: frozenset[str]

    @property
    def root(self) -> Path:
        return self.dataset_dir.root

    @property
    def layout(self) -> str:
        return self.dataset_dir.layout

    @property
    def state(self) -> Mapping:
        return self.dataset_dir.state

    @property
    def manifest(self) -> Mapping[str, ManifestRow]:
        return self.dataset_dir.manifest

    @property
    def version(self) -> Version | None:
        return self.dataset_dir.version

    def path(self, item: md.Item) -> Path:
        """Where the layout puts `item`, present or not."""
        return self.dataset_dir.path(item, self.meta.classes)


def open_tree(dir: str | os.PathLike) -> Tree:
    """Read DIR for `verify`, `info` and `preview`: all five metadata copies must be there.

    Parameters
    ----------
    dir : str or os.PathLike
        The dataset directory.

    Returns
    -------
    Tree

    Raises
    ------
    DirectoryError
        DIR does not exist, is not a directory, or lacks a metadata file.
    MetadataError
        A metadata file is malformed.
    """
    dataset_dir = inspect(dir)
    root = dataset_dir.root
    if not root.exists():
        raise DirectoryError(f"{str(root)!r} does not exist; {hints.download_first(root)}")
    if not root.is_dir():
        raise DirectoryError(f"{str(root)!r} is not a directory")
    if not dataset_dir.files:
        raise DirectoryError(f"{str(root)!r} holds no KaoKore metadata (urls.txt, labels.csv, ...); "
                             f"{hints.download_first(root)}")
    missing = [name for name in METADATA_FILES if name not in dataset_dir.files]
    if missing:
        upstream = dataset_dir.image_files and "urls.txt" in missing
        what = "a tree from upstream's download.py" if upstream else "incomplete"
        raise DirectoryError(f"{str(root)!r} lacks {', '.join(missing)} ({what}); "
                             f"{hints.command('download', root)} completes it")
    meta = md.parse(dataset_dir.files, pinned=dataset_dir.pinned)
    present = frozenset(item.name for item in meta.downloadable
                        if image_path(item, dataset_dir.layout, meta.classes) in dataset_dir.image_files)
    return Tree(dataset_dir, meta, present)
