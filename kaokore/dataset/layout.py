"""Where each image lives on disk, as pure functions of the image and the layout.

Keeping this free of I/O lets the downloader, verifier, loaders and layout
switching agree on paths without a server or a filesystem in the way.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from ..errors import UsageError
from .metadata import SPLIT_NAMES, Item

LAYOUTS = ("split", "flat", "gender", "status")
DEFAULT_LAYOUT = "split"
SPLITS = SPLIT_NAMES
UNLABELED = "unlabeled"
FLAT_FOLDER = "images_256"  # upstream's folder name, which existing loaders read
SPLIT_CHOICES = (*SPLITS, UNLABELED)  # what --split selects
TOP_FOLDERS = (*SPLITS, UNLABELED, FLAT_FOLDER)  # every layout's folders sit in these (class folders one level down)


def check_layout(layout: str) -> str:
    if layout not in LAYOUTS:
        raise UsageError(f"unknown layout {layout!r} (choose from {', '.join(LAYOUTS)})")
    return layout


def folder(item: Item, layout: str, classes: Mapping[str, Sequence[str]]) -> str:
    """The folder, relative to DIR and with '/' separators, that holds `item`."""
    if layout == "flat":
        return FLAT_FOLDER
    if item.split is None:
        return UNLABELED
    if layout == "split":
        return item.split
    label = item.label(layout)
    return f"{item.split}/{classes[layout][label]}"


def image_path(item: Item, layout: str, classes: Mapping[str, Sequence[str]]) -> str:
    """The path of `item` relative to DIR, with '/' separators."""
    return f"{folder(item, layout, classes)}/{item.name}"


def layout_folders(layout: str, classes: Mapping[str, Sequence[str]]) -> list[str]:
    """Every folder that `layout` may put images in, whether or not it is used."""
    if layout == "flat":
        return [FLAT_FOLDER]
    if layout == "split":
        return [*SPLITS, UNLABELED]
    return [f"{split}/{name}" for split in SPLITS for name in classes[layout]] + [UNLABELED]


def any_layout_folders(classes: Mapping[str, Sequence[str]]) -> set[str]:
    """Every folder any layout may put images in: where leftovers of any earlier run can be."""
    return {f for layout in LAYOUTS for f in layout_folders(layout, classes)}


def candidate_paths(item: Item, classes: Mapping[str, Sequence[str]], layouts: Iterable[str] = LAYOUTS) -> list[str]:
    """Where an earlier run with any layout could have left `item`."""
    seen: dict[str, None] = {}
    for layout in layouts:
        seen.setdefault(image_path(item, layout, classes))
    return list(seen)
