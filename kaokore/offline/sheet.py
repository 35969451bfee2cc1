"""What a contact sheet shows, and where: the faces `kaokore preview` draws, chosen without Pillow.

Kept apart from the drawing (`kaokore.offline.preview`), so what a sheet shows can be
tested, and reproduced, without looking at pixels. Only files already under DIR are read.
"""
from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path

from .. import defaults, hints
from ..dataset.layout import SPLIT_CHOICES, UNLABELED, split_of
from ..errors import UsageError
from ..storage.tree import Tree, open_tree
from .info_report import plural

BY_CHOICES = ("status", "gender", "none")
DEFAULT_BY = "status"
SHEET_SPLITS = (*SPLIT_CHOICES, "all")  # a sheet may also draw from every split
DEFAULT_TILE = 128
DEFAULT_PER_CLASS = 8
DEFAULT_ROWS, DEFAULT_COLS = 4, 8
MAX_SIDE = 64  # tiles per row or rows per sheet; past this a contact sheet stops being looked at
TILE_RANGE = (32, 512)
MAX_SHEET_PIXELS = 80_000_000  # ~240 MB of RGB while drawing


@dataclass(frozen=True)
class Pick:
    name: str  # NNNNNNNN.jpg
    path: Path


@dataclass(frozen=True)
class Row:
    label: str  # the class name; "" in a mosaic
    available: int  # images of this class present in the chosen split(s)
    picks: tuple[Pick, ...]  # at most `cols`; the rest of the row is placeholder tiles


@dataclass(frozen=True)
class SheetPlan:
    """Which faces a contact sheet shows, and where: what `plan_sheet` returns and `render` draws.

    Attributes
    ----------
    title : str
        The sheet's title line (version, category or "mosaic", split, seed).
    by : str or None
        "gender" or "status" for one labelled row per class; None for a mosaic.
    split : str
        "train", "dev", "test", "unlabeled" or "all".
    seed : int
        The seed the faces were drawn with.
    tile : int
        The side of a tile, in pixels.
    cols : int
        Tiles per row.
    rows : tuple of Row
        Each row's class name ("" in a mosaic), the images of that class present, and
        the faces picked; a row with fewer than `cols` faces is padded with empty tiles.
    notes : tuple of str
        What a person should know: short rows, classes missing, nothing on disk.
    """

    title: str
    by: str | None
    split: str
    seed: int
    tile: int
    cols: int
    rows: tuple[Row, ...]
    notes: tuple[str, ...]

    @property
    def where(self) -> str:
        """The split the faces come from, as a sheet's captions and notes name it."""
        return _where(self.split)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the sheet, in pixels."""
        return sheet_size(self.tile, self.cols, len(self.rows), labelled=self.by is not None)


@dataclass(frozen=True)
class Geometry:
    gap: int
    font_size: int
    band: int  # height of a row's label band (0 in a mosaic)
    title: int  # height of the title band


def geometry(tile: int, labelled: bool) -> Geometry:
    """Spacing and text size scale with the tile, but text never drops below a legible size."""
    font_size = max(13, min(24, tile // 7))
    band = font_size + 2 * (font_size // 3) if labelled else 0
    title = font_size + 2 * (font_size // 2)
    return Geometry(gap=max(2, tile // 32), font_size=font_size, band=band, title=title)


def sheet_size(tile: int, cols: int, rows: int, labelled: bool = True) -> tuple[int, int]:
    """(width, height) in pixels: tiles with a gap around each, a title band, a label band per row."""
    g = geometry(tile, labelled)
    return cols * tile + (cols + 1) * g.gap, g.title + rows * (g.band + tile + g.gap)


def plan_sheet(dir: str | os.PathLike | Tree = defaults.DIR, by: str | None = DEFAULT_BY, *, split: str = "all",
               per_class: int = DEFAULT_PER_CLASS, rows: int = DEFAULT_ROWS, cols: int = DEFAULT_COLS,
               tile: int = DEFAULT_TILE, seed: int = 0) -> SheetPlan:
    """Which faces go where on a contact sheet, drawn at random among the images on disk.

    The draw is reproducible: the same seed on the same tree gives the same sheet,
    and each row has its own draw, so a longer row extends a shorter one.

    Parameters
    ----------
    dir : str or os.PathLike or Tree
        The dataset directory, or a tree already read by `kaokore.storage.tree.open_tree`.
    by : str or None
        "gender" or "status" for one labelled row per class; None or "none" for a mosaic.
    split : str
        Draw from "train", "dev", "test", "unlabeled" (a mosaic only) or "all".
    per_class : int
        Faces per class row, 1 to 64 (rows by class only).
    rows, cols : int
        The mosaic's rows and columns, 1 to 64 each (mosaic only).
    tile : int
        The side of a tile in pixels, 32 to 512.
    seed : int
        Which faces are drawn.

    Returns
    -------
    SheetPlan
        The faces picked, row by row, and notes on rows left short.

    Raises
    ------
    UsageError
        An unknown `by` or `split`, rows by class of unlabeled images, a number out of
        range, or a sheet of more than 80 million pixels.
    DirectoryError
        DIR does not exist or lacks metadata files.
    MetadataError
        A metadata file in DIR is malformed.
    """
    tree = dir if isinstance(dir, Tree) else open_tree(dir)
    by = None if by in (None, "none") else by
    _check_options(by, split, per_class, rows, cols, tile)
    in_split = [item for item in tree.meta.downloadable
                if item.name in tree.present and (split == "all" or split_of(item) == split)]
    where = _where(split)
    if by is None:
        cols_, sheet_rows, notes = cols, *_mosaic_rows(tree, in_split, rows, cols, seed, where)
    else:
        cols_, sheet_rows, notes = per_class, *_class_rows(tree, in_split, by, split, per_class, seed, where)
    if not tree.present:
        notes.insert(0, f"no images on disk yet: run {hints.command('download', tree.root)}")
    version = tree.state.get("dataset_version", "")
    title = "  |  ".join([f"KaoKore {version}".strip(), f"by {by}" if by else "mosaic", where, f"seed {seed}"])
    plan = SheetPlan(title, by, split, seed, tile, cols_, sheet_rows, tuple(notes))
    width, height = plan.size
    if width * height > MAX_SHEET_PIXELS:
        raise UsageError(f"a {width}x{height} sheet is too large; use a smaller --tile or fewer tiles")
    return plan


def _mosaic_rows(tree: Tree, candidates: list, rows: int, cols: int, seed: int, where: str):
    chosen = [_pick(tree, item) for item in _shuffled(candidates, seed, "mosaic")[: rows * cols]]
    sheet_rows = tuple(Row("", len(candidates), tuple(chosen[r * cols:(r + 1) * cols])) for r in range(rows))
    notes = []
    if len(candidates) < rows * cols:
        notes.append(f"only {plural(len(candidates), 'image')} present in {where}; "
                     f"{plural(rows * cols - len(candidates), 'tile')} left empty")
    return sheet_rows, notes


def _class_rows(tree: Tree, candidates: list, by: str, split: str, per_class: int, seed: int, where: str):
    sheet_rows, notes = [], []
    for label, name in enumerate(tree.meta.classes[by]):
        members = [item for item in candidates if item.split is not None and item.label(by) == label]
        chosen = _shuffled(members, seed, f"{by}/{name}")[:per_class]
        sheet_rows.append(Row(name, len(members), tuple(_pick(tree, item) for item in chosen)))
        if len(members) >= per_class:
            continue
        listed = sum(1 for item in tree.meta.downloadable if item.split is not None and item.label(by) == label
                     and (split == "all" or item.split == split))
        # A partial download and a class the split simply lacks call for different actions.
        missing = f" ({listed - len(members):,} more listed but not downloaded)" if listed > len(members) else ""
        if not members:
            notes.append(f"{name}: no images present in {where}{missing}; row left empty")
        else:
            notes.append(f"{name}: only {plural(len(members), 'image')} present in {where}{missing}; "
                         f"{plural(per_class - len(members), 'tile')} left empty")
    return tuple(sheet_rows), notes


def _where(split: str) -> str:
    return "all splits" if split == "all" else split


def _shuffled(items, seed: int, key: str) -> list:
    """A reproducible order per row: its own RNG, so --per-class 16 extends the row --per-class 8 drew."""
    ordered = sorted(items, key=lambda item: item.index)
    random.Random(f"{seed}/{key}").shuffle(ordered)
    return ordered


def _pick(tree: Tree, item) -> Pick:
    return Pick(item.name, tree.path(item))


def _check_options(by: str | None, split: str, per_class: int, rows: int, cols: int, tile: int) -> None:
    if by is not None and by not in BY_CHOICES:
        raise UsageError(f"unknown --by {by!r} (choose from {', '.join(BY_CHOICES)})")
    if split not in SHEET_SPLITS:
        raise UsageError(f"unknown split {split!r} (choose from {', '.join(SHEET_SPLITS)})")
    if by is not None and split == UNLABELED:
        raise UsageError("unlabeled images have no gender or status: use --by none for a mosaic of them")
    _check_range("--tile", tile, *TILE_RANGE)
    _check_range("--per-class" if by else "--cols", per_class if by else cols, 1, MAX_SIDE)
    if by is None:
        _check_range("--rows", rows, 1, MAX_SIDE)


def _check_range(flag: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise UsageError(f"{flag} must be between {low} and {high}, not {value}")


__all__ = ["plan_sheet", "sheet_size", "geometry", "SheetPlan", "Row", "Pick", "Geometry"]
