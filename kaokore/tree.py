"""A downloaded DIR as found on disk: its metadata copies, state, manifest, layout and images.

`verify`, `info` and `preview` read a tree the same way through here, so they
can never disagree about which layout DIR has or which images it holds.
"""
from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from . import metadata as md
from .errors import DirectoryError
from .layout import LAYOUTS, all_folders, image_path
from .store import ManifestRow, read_manifest, read_state
from .versions import METADATA_FILES


@dataclass(frozen=True)
class Tree:
    """A dataset directory as found on disk: its metadata, layout and which images are where they belong."""

    root: Path
    meta: md.Metadata
    layout: str
    state: dict
    manifest: dict[str, ManifestRow]
    present: frozenset[str]  # names of images found at the path the layout gives them

    def path(self, item: md.Item) -> Path:
        return self.root / image_path(item, self.layout, self.meta.classes)


def open_tree(dir: str | os.PathLike) -> Tree:
    """Read DIR's metadata copies, state and manifest, and list its image folders once."""
    root = Path(dir)
    if not root.is_dir():
        raise DirectoryError(f"{str(root)!r} is not a directory")
    if not any((root / name).exists() for name in METADATA_FILES):
        raise DirectoryError(f"{str(root)!r} holds no KaoKore metadata (urls.txt, labels.csv, ...); "
                             f"run `kaokore download --dir {root}` first")
    meta = md.parse(md.read_local(root), pinned=False)
    state = read_state(root)
    manifest = read_manifest(root)
    layout = detect_layout(root, state, manifest, meta.classes)
    # One directory listing per folder, not one stat per image: a full tree is ~10,000 files.
    on_disk = set()
    for folder in all_folders(layout, meta.classes):
        try:
            on_disk.update(f"{folder}/{e.name}" for e in os.scandir(root / folder) if e.is_file())
        except OSError:
            continue
    present = frozenset(item.name for item in meta.downloadable
                        if image_path(item, layout, meta.classes) in on_disk)
    return Tree(root, meta, layout, state, manifest, present)


def detect_layout(root: Path, state: dict, rows: dict[str, ManifestRow], classes) -> str:
    """The state file says; failing that the manifest, and failing that the folders on disk."""
    if state.get("layout") in LAYOUTS:
        return state["layout"]
    if rows:
        return Counter(r.layout for r in rows.values()).most_common(1)[0][0]
    if (root / "images_256").is_dir():
        return "flat"
    for layout in ("gender", "status"):
        if any((root / f).is_dir() for f in all_folders(layout, classes) if "/" in f):
            return layout
    return "split"
