"""The framework-free index both loaders (`kaokore.torch`, `kaokore.tensorflow`) share.

The index reads a tree through its metadata copies rather than by listing
folders, so every layout `kaokore download` writes yields the same images, in
the same order, with the labels of labels.csv; an image absent from disk is
counted and reported, never silently dropped.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

from .. import hints
from ..dataset import metadata as md
from ..dataset.attributes import CLASSES as ATTRIBUTE_CLASSES
from ..dataset.attributes import Attributes
from ..dataset.labels import CATEGORIES, parse_classes, parse_labels
from ..dataset.layout import SPLITS
from ..errors import DirectoryError, KaokoreError, MetadataError, UsageError
from ..storage.directory import DatasetDir, inspect

TARGETS = (*CATEGORIES, *ATTRIBUTE_CLASSES)  # what a loader's `category` may name
EXAMPLES_SHOWN = 5  # missing image names quoted in the warning


class MissingFramework(ImportError, KaokoreError):
    """The loader's framework (PyTorch, TensorFlow) is not installed; the message names the extra to install.

    Both an `ImportError` and a `KaokoreError`.
    """


class MissingImagesWarning(UserWarning):
    """Some labelled images of the split are not on disk; they are left out of the dataset.

    Issued once per dataset by the loaders. To make a partial tree an error instead:
    ``warnings.simplefilter("error", MissingImagesWarning)``.
    """


@dataclass(frozen=True)
class Index:
    """The labelled images of one split that are on disk, and those that are not.

    Attributes
    ----------
    root : str
        The dataset directory, absolute.
    split : str
        "train", "dev" or "test".
    category : str
        The category the labels are of.
    classes : tuple of str
        Class names, from labels.metadata.en.txt; a label indexes this tuple.
    samples : tuple of (str, int)
        (absolute image path, label) of each image on disk, by image number.
    not_downloaded : tuple of str
        Names of images not on disk that a rerun of `kaokore download` could fetch
        (every missing image when the tree has no urls.txt).
    unavailable : tuple of str
        Names of labelled images urls.txt gives no URL: nothing can fetch them.
    attributes : tuple of dict
        With ``attributes=True``, each sample's name and original_tags.txt attributes;
        else empty.
    """

    root: str
    split: str
    category: str
    classes: tuple[str, ...]
    samples: tuple[tuple[str, int], ...]
    not_downloaded: tuple[str, ...]
    unavailable: tuple[str, ...]
    attributes: tuple[dict, ...] = ()

    @property
    def expected(self) -> int:
        """The split's labelled images, on disk or not."""
        return len(self.samples) + len(self.not_downloaded) + len(self.unavailable)

    def warn_missing(self, stacklevel: int) -> None:
        """One warning per dataset for everything left out, so a partial tree is never mistaken for a full one."""
        if not (self.not_downloaded or self.unavailable):
            return
        parts = []
        if self.not_downloaded:
            shown = ", ".join(self.not_downloaded[:EXAMPLES_SHOWN])
            more = ", ..." if len(self.not_downloaded) > EXAMPLES_SHOWN else ""
            parts.append(f"{len(self.not_downloaded)} not downloaded ({shown}{more}; "
                         f"{hints.command('download', self.root)} fetches them)")
        if self.unavailable:
            parts.append(f"{len(self.unavailable)} with no URL in urls.txt (unavailable upstream)")
        missing = len(self.not_downloaded) + len(self.unavailable)
        warnings.warn(
            f"kaokore: {missing} of {self.expected} labelled {self.split} images are missing under "
            f"{self.root} and left out: {'; '.join(parts)}",
            MissingImagesWarning, stacklevel=stacklevel + 1,
        )


def read_index(root: str | os.PathLike, split: str = "train", category: str = "gender",
               attributes: bool = False) -> Index:
    """Which labelled images of `split` are under `root`, in any layout, with their `category` labels.

    The index both loaders build on; it needs no framework.

    Parameters
    ----------
    root : str or os.PathLike
        A dataset directory, in any of kaokore's layouts.
    split : str
        "train", "dev" or "test".
    category : str
        A labels.csv category ("gender", "status") or a closed set of original_tags.txt
        ("orientation", "holder", "fine_status"; labels index ``ATTRIBUTE_CLASSES[category]``).
    attributes : bool
        Also give each sample's attributes (`Index.attributes`).

    Returns
    -------
    Index

    Raises
    ------
    UsageError
        An unknown split or category.
    DirectoryError
        `root` is not a directory, or holds none of the split's labelled images.
    MetadataError
        labels.csv, labels.metadata.en.txt (or original_tags.txt, when read) is
        missing or malformed.
    """
    path = _dataset_root(root, split, category)
    dataset_dir = inspect(path)  # the same reading of DIR as download, verify and info
    classes, labels, urls, tags = _read_metadata(dataset_dir, path, category, attributes)
    samples, kept, not_downloaded, unavailable = [], [], [], []
    for index in sorted(labels):
        item_split, gender, status = labels[index]
        if item_split != split:
            continue
        url = urls[index] if urls is not None and index < len(urls) else None
        item = md.Item(index, url, item_split, gender, status)
        located = dataset_dir.locate(item, classes)
        if located is None:
            # urls.txt only tells "never downloadable" from "not downloaded yet"; a tree from elsewhere may lack it.
            (unavailable if urls is not None and not url else not_downloaded).append(item.name)
            continue
        attrs = tags.get(index) or Attributes()
        samples.append((str(path / located.rel), _label(item, attrs, category)))
        kept.append({"name": item.name, **attrs.as_dict()} if attributes else None)
    if not samples and (not_downloaded or unavailable):
        raise DirectoryError(
            f"none of the {len(not_downloaded) + len(unavailable)} labelled {split} images is under "
            f"{str(path)!r}; download them first ({hints.command('download', root)}, or download=True)")
    names = classes[category] if category in CATEGORIES else ATTRIBUTE_CLASSES[category]
    return Index(str(path), split, category, tuple(names), tuple(samples),
                 tuple(not_downloaded), tuple(unavailable), tuple(kept) if attributes else ())


def _dataset_root(root: str | os.PathLike, split: str, category: str) -> Path:
    """`root`, absolute, once the split, the category and the directory are known to be usable."""
    if split not in SPLITS:
        raise UsageError(f"unknown split {split!r} (choose from {', '.join(SPLITS)})")
    if category not in TARGETS:
        raise UsageError(f"unknown category {category!r} (choose from {', '.join(TARGETS)})")
    path = Path(os.path.expanduser(os.fspath(root))).resolve()
    if not path.is_dir():
        raise DirectoryError(f"{str(path)!r} is not a directory; download the dataset first "
                             f"({hints.command('download', root)}, or download=True)")
    return path


def _label(item: md.Item, attrs: Attributes, category: str) -> int:
    if category in CATEGORIES:
        return item.label(category)
    return ATTRIBUTE_CLASSES[category].index(getattr(attrs, category))


def _read_metadata(dataset_dir: DatasetDir, path: Path, category: str, attributes: bool):
    """The class names, labels.csv, urls.txt (None when DIR lacks it) and, when asked for, original_tags.txt."""
    # The metadata copies as inspect read them: never through a link leading outside DIR.
    files = dataset_dir.files
    classes = parse_classes(_read(files, path, "labels.metadata.en.txt"))
    labels = parse_labels(_read(files, path, "labels.csv"), classes)
    urls = md.parse_urls(files["urls.txt"]) if "urls.txt" in files else None
    tags = {}
    if attributes or category in ATTRIBUTE_CLASSES:
        tags = md.parse_attributes(_read(files, path, "original_tags.txt"), urls or ())
    return classes, labels, urls, tags


def _read(files, root: Path, name: str) -> bytes:
    if name in files:
        return files[name]
    why = ("a symbolic link leading outside the dataset directory, not read" if os.path.islink(root / name)
           else "missing; a tree written by `kaokore download` has it at its root")
    raise MetadataError(str(root / name), None, why)
