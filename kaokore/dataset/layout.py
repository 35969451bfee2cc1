"""Where each image lives on disk, as pure functions of the image and the layout.

Keeping this free of I/O lets the downloader, verifier, loaders, layout switching
and the description agree on paths without a server or a filesystem in the way:
every question whose answer depends on the layout is answered here, including how
Hugging Face's imagefolder and Croissant see the tree.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType

from ..errors import UsageError
from .labels import SPLIT_NAMES
from .metadata import Item

LAYOUTS = ("split", "flat", "gender", "status")
DEFAULT_LAYOUT = "split"
SPLITS = SPLIT_NAMES
UNLABELED = "unlabeled"
FLAT_FOLDER = "images_256"  # upstream's folder name, which existing loaders read
SPLIT_CHOICES = (*SPLITS, UNLABELED)  # what --split selects
TOP_FOLDERS = (*SPLITS, UNLABELED, FLAT_FOLDER)  # every layout's folders sit in these (class folders one level down)
# Where a metadata.jsonl would be read by imagefolder: every layout's `hf_folders`, and unlabeled/.
ANY_HF_FOLDERS = (*SPLITS, FLAT_FOLDER, UNLABELED)
_HF_SPLITS = MappingProxyType({"train": "train", "dev": "validation", "test": "test", FLAT_FOLDER: "train"})


def check_layout(layout: str) -> str:
    if layout not in LAYOUTS:
        raise UsageError(f"unknown layout {layout!r} (choose from {', '.join(LAYOUTS)})")
    return layout


def is_flat(layout: str) -> bool:
    """Whether `layout` keeps every image, labelled or not, in the one folder images_256/."""
    return layout == "flat"


def split_of(item: Item) -> str:
    """The split `item` is counted in and `--split` selects it by: train, dev, test or unlabeled."""
    return item.split or UNLABELED


def unlabeled_folder(layout: str) -> str:
    """The folder holding the images with no labels.csv row in `layout`."""
    return FLAT_FOLDER if is_flat(layout) else UNLABELED


def folder(item: Item, layout: str, classes: Mapping[str, Sequence[str]]) -> str:
    """The folder, relative to DIR and with '/' separators, that holds `item`."""
    if is_flat(layout):
        return FLAT_FOLDER
    if item.split is None:
        return UNLABELED
    if layout == "split":
        return item.split
    label = item.label(layout)
    return f"{item.split}/{classes[layout][label]}"


def image_path(item: Item, layout: str, classes: Mapping[str, Sequence[str]]) -> str:
    """The path of `item` relative to DIR, with '/' separators."""
    if layout == "split" and item.split is not None:  # most images, asked twice each before a run's first request
        return f"{item.split}/{item.name}"
    return f"{folder(item, layout, classes)}/{item.name}"


def layout_folders(layout: str, classes: Mapping[str, Sequence[str]]) -> list[str]:
    """Every folder that `layout` may put images in, whether or not it is used."""
    if is_flat(layout):
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


def guess_layout(folders: Iterable[str]) -> str:
    """The layout whose folders these are (the folders relative to DIR that hold images), for a
    tree that does not say: images_256/ is upstream's flat layout, and the class folders under
    a split tell gender (male, female) from status."""
    folders = set(folders)
    if FLAT_FOLDER in folders:
        return "flat"
    class_folders = {f.split("/")[1] for f in folders if f.count("/") == 1 and f.split("/")[0] in SPLITS}
    if class_folders & {"male", "female"}:
        return "gender"
    if class_folders:
        return "status"
    return DEFAULT_LAYOUT


def hf_folder(layout: str, item: Item) -> str | None:
    """The folder whose metadata.jsonl lists `item`, or None for an unlabeled image.

    imagefolder takes a split from a folder named train/dev/test, so a labelled split's
    rows sit in its folder, with file_name relative to it (male/00000001.jpg in the
    gender layout). unlabeled/ is no split name: it gets no rows. The flat layout has
    one folder, hence one metadata file and one split, with a `split` column; its
    unlabeled images get no rows either, so that in every layout imagefolder gives the
    labelled images only and no row has a null gender or status (imagefolder reads the
    rows of metadata.jsonl, and leaves out an image that has none, from datasets 3.4 on).

    Returns
    -------
    str or None
        "train", "dev" or "test"; "images_256" in the flat layout; None when unlabeled.
    """
    if item.split is None:
        return None
    return FLAT_FOLDER if is_flat(layout) else item.split


def hf_folders(layout: str) -> list[str]:
    """The folders of `layout` that may have a metadata.jsonl (`hf_folder`), in split order."""
    return [FLAT_FOLDER] if is_flat(layout) else list(SPLITS)


def hf_split(folder: str) -> str:
    """The split imagefolder makes of the metadata.jsonl in `folder` (one of `hf_folders`):
    validation for dev, and train for the flat layout's one folder."""
    return _HF_SPLITS[folder]


def croissant_globs(layout: str) -> list[str]:
    """The glob patterns, relative to DIR, of the Croissant FileSet of `layout`'s images: those of
    the split folders (so not unlabeled/), or in the flat layout every image of images_256/.

    E.g. ``["train/*.jpg", "dev/*.jpg", "test/*.jpg"]`` for the split layout.
    """
    if is_flat(layout):
        return [f"{FLAT_FOLDER}/*.jpg"]
    depth = "*.jpg" if layout == "split" else "*/*.jpg"
    return [f"{split}/{depth}" for split in SPLITS]
