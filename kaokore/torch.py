"""PyTorch loader: `KaoKore`, a map-style `torch.utils.data.Dataset`.

    >>> from kaokore.torch import KaoKore, to_tensor
    >>> train = KaoKore("kaokore", split="train", category="status", transform=to_tensor)
    >>> loader = torch.utils.data.DataLoader(train, batch_size=64, shuffle=True, num_workers=4)

The dataset holds only strings, ints and the transforms, and opens each image
when it is asked for, so it pickles into DataLoader workers under both the
fork and the spawn start methods.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image

from .errors import UsageError

# The index is framework-free; kaokore.tensorflow imports TensorFlow only inside load().
from .offline.index import MissingFramework, MissingImagesWarning, read_index
from .pipeline.run import download as _download

try:
    import torch
    from torch.utils.data import Dataset
except ModuleNotFoundError as exc:
    if exc.name is None or exc.name.split(".")[0] != "torch":
        raise  # PyTorch is there but broken: its own error says more than ours would
    raise MissingFramework("kaokore.torch needs PyTorch: pip install 'kaokore[torch]'") from None

__all__ = ["KaoKore", "to_tensor", "MissingImagesWarning"]


class KaoKore(Dataset):
    """The labelled images of one split, as (image, label) pairs.

    Images come in image-number order as PIL RGB images, or ``transform(image)``;
    labels are ints indexing `classes`. Labelled images missing from disk are left
    out and reported in one `MissingImagesWarning`.

    Parameters
    ----------
    root : str or os.PathLike
        A directory written by `kaokore download`, in any layout (or a tree with
        labels.csv and labels.metadata.en.txt at its root and the images in any of
        kaokore's layouts, e.g. upstream's images_256/).
    split : str
        "train", "dev" or "test".
    category : str
        The label: "gender" or "status" (labels.csv), or a closed set of
        original_tags.txt: "orientation", "holder" or "fine_status".
    transform : callable, optional
        Applied to each PIL image.
    target_transform : callable, optional
        Applied to each int label.
    download : bool
        First run ``kaokore.download(root, **download_options)``, which fetches only
        what is missing and keeps the layout and version the tree already has.
    attributes : bool
        Make each item (image, label, attributes), the attributes a dict of the
        image's original_tags.txt in English (name, work, holder, orientation,
        period, tags, ...).
    **download_options
        Keyword arguments of `kaokore.download` (not `dir`), with ``download=True`` only.

    Attributes
    ----------
    root : str
        The dataset directory, absolute.
    split, category : str
        As given.
    classes : list of str
        Class names; a label indexes this list.
    class_to_idx : dict of str to int
        Label by class name.
    samples : list of (str, int)
        (image path, label) of each item, as torchvision names it.
    targets : list of int
        The label of each item.
    missing : list of str
        Names of the split's labelled images not on disk (not downloaded, or with no
        URL upstream).
    attributes : list of dict or None
        Each item's attributes with ``attributes=True``; else None.
    transform, target_transform : callable or None
        As given.

    Raises
    ------
    UsageError
        An unknown split or category, or `dir` among the download options.
    DirectoryError
        `root` is not a directory, or holds none of the split's labelled images.
    MetadataError
        A metadata file under `root` is missing or malformed.
    TypeError
        Download options without ``download=True``.

    Examples
    --------
    >>> from kaokore.torch import KaoKore, to_tensor
    >>> train = KaoKore("data", split="train", category="status", transform=to_tensor)
    >>> image, label = train[0]
    >>> train.classes[label]
    """

    def __init__(self, root: str | os.PathLike, split: str = "train", category: str = "gender",
                 transform: Callable[[Image.Image], Any] | None = None,
                 target_transform: Callable[[int], Any] | None = None,
                 download: bool = False, attributes: bool = False, **download_options: Any):
        if download:
            _download_into(root, download_options)
        elif download_options:
            raise TypeError(f"download options {sorted(download_options)} given without download=True")
        index = read_index(root, split, category, attributes=attributes)
        index.warn_missing(stacklevel=2)
        self.attributes: list[dict] | None = list(index.attributes) if attributes else None
        self.root = index.root
        self.split = split
        self.category = category
        self.transform = transform
        self.target_transform = target_transform
        self.classes: list[str] = list(index.classes)
        self.class_to_idx: dict[str, int] = {name: i for i, name in enumerate(self.classes)}
        self.samples: list[tuple[str, int]] = list(index.samples)  # torchvision's name, for code written for it
        self.targets: list[int] = [label for _, label in self.samples]
        self.missing: list[str] = [*index.not_downloaded, *index.unavailable]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        path, target = self.samples[i]
        with Image.open(path) as im:
            image = im.convert("RGB")  # loads the pixels, so the file is closed on return
        if self.transform is not None:
            image = self.transform(image)
        if self.target_transform is not None:
            target = self.target_transform(target)
        if self.attributes is not None:
            return image, target, self.attributes[i]
        return image, target

    def __repr__(self) -> str:
        lines = [
            f"Dataset {type(self).__name__}",
            f"    Number of datapoints: {len(self)}",
            f"    Root location: {self.root}",
            f"    Split: {self.split}",
            f"    Category: {self.category} {self.classes}",
        ]
        if self.missing:
            lines.append(f"    Missing from disk: {len(self.missing)}")
        for name, value in (("Transform", self.transform), ("Target transform", self.target_transform)):
            if value is not None:
                lines.append(f"    {name}: {value!r}")
        return "\n".join(lines)


def _download_into(root, options: dict) -> None:
    # kaokore.download completes a tree in the version and layout it already has.
    if "dir" in options:
        raise UsageError("pass the directory as root, not as dir=")
    _download(Path(os.path.expanduser(os.fspath(root))), **options)


def to_tensor(image: Image.Image) -> torch.Tensor:
    """A PIL image as a float32 tensor, like torchvision's ``ToTensor``, without torchvision.

    Parameters
    ----------
    image : PIL.Image.Image
        Any mode; converted to RGB first.

    Returns
    -------
    torch.Tensor
        float32, shape [3, H, W], values in [0, 1].
    """
    width, height = image.size
    pixels = torch.frombuffer(bytearray(image.convert("RGB").tobytes()), dtype=torch.uint8)
    return pixels.view(height, width, 3).permute(2, 0, 1).contiguous().float().div_(255)

