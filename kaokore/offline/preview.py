"""`kaokore preview`: a contact sheet of faces, one labelled row per class, or a plain mosaic.

Choosing faces (`plan_sheet`) is kept apart from drawing them (`render`), so
what a sheet shows can be tested, and reproduced, without looking at pixels.
Only files already under DIR are read.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import random
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .. import defaults, hints
from ..dataset.layout import SPLIT_CHOICES, UNLABELED
from ..errors import EXIT_OK, DirectoryError, UsageError
from ..storage.directory import Tree, open_tree
from ..storage.store import atomic_write
from .info import plural

if TYPE_CHECKING:  # Pillow is imported where a sheet is drawn: every command registers this one
    from PIL import Image, ImageDraw

BY_CHOICES = ("status", "gender", "none")
DEFAULT_BY = "status"
SHEET_SPLITS = (*SPLIT_CHOICES, "all")  # a sheet may also draw from every split
DEFAULT_TILE = 128
DEFAULT_PER_CLASS = 8
DEFAULT_ROWS, DEFAULT_COLS = 4, 8
MAX_SIDE = 64  # tiles per row or rows per sheet; past this a contact sheet stops being looked at
TILE_RANGE = (32, 512)
MAX_SHEET_PIXELS = 80_000_000  # ~240 MB of RGB while drawing

BACKGROUND = (28, 28, 30)
BAND = (44, 44, 48)
EMPTY_TILE = (52, 52, 56)
EMPTY_MARK = (84, 84, 90)
TEXT = (240, 240, 240)
DIM_TEXT = (160, 160, 168)
NAME_PAD = 3  # pixels around an image number on its tag
NAME_MIN_FONT = 8  # smaller than this an image number is not legible: shorten it, or leave it out


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
    by: str | None  # None: a mosaic
    split: str
    seed: int
    tile: int
    cols: int
    rows: tuple[Row, ...]
    notes: tuple[str, ...]  # what a person should know: short rows, missing classes

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


# ---- choosing faces ------------------------------------------------------------------------------

def plan_sheet(dir: str | os.PathLike | Tree = defaults.DIR, by: str | None = DEFAULT_BY, *, split: str = "all",
               per_class: int = DEFAULT_PER_CLASS, rows: int = DEFAULT_ROWS, cols: int = DEFAULT_COLS,
               tile: int = DEFAULT_TILE, seed: int = 0) -> SheetPlan:
    """Which faces go where on a contact sheet, drawn at random among the images on disk.

    The draw is reproducible: the same seed on the same tree gives the same sheet,
    and each row has its own draw, so a longer row extends a shorter one.

    Parameters
    ----------
    dir : str or os.PathLike or Tree
        The dataset directory, or a tree already read by `kaokore.directory.open_tree`.
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

    in_split = [item for item in tree.meta.downloadable
                if item.name in tree.present and (split == "all" or (item.split or UNLABELED) == split)]
    where = "all splits" if split == "all" else split
    if by is None:
        cols_, sheet_rows, notes = cols, *_mosaic_rows(tree, in_split, rows, cols, seed, where)
    else:
        cols_, sheet_rows, notes = per_class, *_class_rows(tree, in_split, by, split, per_class, seed, where)
    if not tree.present:
        notes.insert(0, "no images on disk yet: run `kaokore download` with this --dir")
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


def _shuffled(items, seed: int, key: str) -> list:
    """A reproducible order per row: its own RNG, so --per-class 16 extends the row --per-class 8 drew."""
    ordered = sorted(items, key=lambda item: item.index)
    random.Random(f"{seed}/{key}").shuffle(ordered)
    return ordered


def _pick(tree: Tree, item) -> Pick:
    return Pick(item.name, tree.path(item))


def _check_range(flag: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise UsageError(f"{flag} must be between {low} and {high}, not {value}")


# ---- drawing -------------------------------------------------------------------------------------

def render(plan: SheetPlan, *, names: bool = False, unreadable: list[str] | None = None) -> Image.Image:
    """Draw the sheet a `SheetPlan` describes.

    A face that cannot be read becomes a placeholder tile rather than an error: one
    bad file should not cost the sheet.

    Parameters
    ----------
    plan : SheetPlan
        What `plan_sheet` chose.
    names : bool
        Print each face's image number on its tile (shortened, or left out, when the
        tile is too small for it to be legible).
    unreadable : list of str, optional
        The names of faces that could not be read are appended to it.

    Returns
    -------
    PIL.Image.Image
        An RGB image of ``plan.size``.
    """
    from PIL import Image, ImageDraw

    g = geometry(plan.tile, plan.by is not None)
    sheet = Image.new("RGB", plan.size, BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    font = _font(g.font_size)
    small = _font(max(11, g.font_size * 3 // 4))
    tags = _name_tags(draw, plan, max(11, g.font_size * 3 // 4)) if names else None

    _text_in_band(draw, (g.gap, 0, sheet.width - g.gap, g.title), plan.title, font, TEXT)
    y = g.title
    where = "all splits" if plan.split == "all" else plan.split
    for row in plan.rows:
        if plan.by is not None:
            draw.rectangle((0, y, sheet.width, y + g.band - 1), fill=BAND)
            shown = len(row.picks)
            caption = (f"{shown} of {row.available:,} in {where}" if row.available
                       else f"none present in {where}")
            end = _text_in_band(draw, (g.gap, y, sheet.width - g.gap, y + g.band), row.label, font, TEXT)
            _text_in_band(draw, (end + g.font_size, y, sheet.width - g.gap, y + g.band), caption, small, DIM_TEXT)
            y += g.band
        for col in range(plan.cols):
            x = g.gap + col * (plan.tile + g.gap)
            pick = row.picks[col] if col < len(row.picks) else None
            face = _load_tile(pick.path, plan.tile) if pick else None
            if face is None and pick and unreadable is not None:
                unreadable.append(pick.name)
            if face is None:
                _placeholder(draw, (x, y, x + plan.tile - 1, y + plan.tile - 1),
                             "unreadable" if pick else "", small)
            else:
                sheet.paste(face, (x, y))
            if tags and pick:
                _name_tag(sheet, (x, y + plan.tile), tags[0][pick.name], tags[1])
        y += plan.tile + g.gap
    return sheet


def contact_sheet(dir: str | os.PathLike = defaults.DIR, by: str | None = DEFAULT_BY, *, names: bool = False,
                  **options) -> Image.Image:
    """A contact sheet of DIR's faces as a PIL image: `plan_sheet`, then `render`.

    Parameters
    ----------
    dir : str or os.PathLike
        The dataset directory.
    by : str or None
        "gender" or "status" for one labelled row per class; None or "none" for a mosaic.
    names : bool
        Print each face's image number on its tile.
    **options
        `plan_sheet`'s keyword arguments: split, per_class, rows, cols, tile, seed.

    Returns
    -------
    PIL.Image.Image
        The sheet, in RGB.

    Raises
    ------
    UsageError, DirectoryError, MetadataError
        As `plan_sheet`.

    Examples
    --------
    >>> from kaokore.preview import contact_sheet
    >>> contact_sheet("data", by="gender", split="test", seed=1).save("faces.png")
    """
    return render(plan_sheet(dir, by, **options), names=names)


def _png_path(out: str | os.PathLike) -> Path:
    out = Path(out)
    if out.suffix.lower() != ".png":
        # A .jpg name holding PNG bytes confuses every viewer; say so rather than guess a format.
        raise UsageError(f"--out {str(out)!r}: the contact sheet is a PNG; give a name ending in .png")
    return out


def save_png(image: Image.Image, plan: SheetPlan, out: str | os.PathLike) -> Path:
    """Write atomically, recording in the PNG which faces are where so a sheet can be traced back."""
    from PIL import PngImagePlugin

    out = _png_path(out)
    if not out.parent.is_dir():
        raise DirectoryError(f"cannot write {str(out)!r}: {str(out.parent)!r} is not a directory")
    info = PngImagePlugin.PngInfo()
    info.add_text("Title", plan.title)
    info.add_text("kaokore:rows", json.dumps({row.label or str(n): [p.name for p in row.picks]
                                             for n, row in enumerate(plan.rows)}))
    buf = io.BytesIO()
    image.save(buf, format="PNG", pnginfo=info, optimize=False)
    try:
        atomic_write(out, buf.getvalue())
    except OSError as exc:
        raise DirectoryError(f"cannot write {str(out)!r}: {exc.strerror or exc}") from None
    return out


def _load_tile(path: Path, tile: int) -> Image.Image | None:
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as im:
            im.draft("RGB", (tile, tile))  # JPEG: decode at a reduced scale, much faster for small tiles
            face = im.convert("RGB")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None
    return ImageOps.pad(face, (tile, tile), Image.Resampling.LANCZOS, color=BACKGROUND)


def _placeholder(draw: ImageDraw.ImageDraw, box, text: str, font) -> None:
    x0, y0, x1, y1 = box
    draw.rectangle(box, fill=EMPTY_TILE)
    inset = (x1 - x0) // 4
    draw.line((x0 + inset, y0 + inset, x1 - inset, y1 - inset), fill=EMPTY_MARK, width=2)
    draw.line((x0 + inset, y1 - inset, x1 - inset, y0 + inset), fill=EMPTY_MARK, width=2)
    if text:
        _text_in_band(draw, (x0 + 4, y1 - 24, x1 - 4, y1 - 4), text, font, TEXT)


def _name_tags(draw: ImageDraw.ImageDraw, plan: SheetPlan, largest: int) -> tuple[dict[str, str], object] | None:
    """Each face's image number as it fits on its tile, and the one font they share.

    The full eight digits at the largest legible size that fits the tile; else the number
    without its leading zeros; None when not even that fits. The size is capped at a third
    of the tile so that a tag never hides most of a small face.
    """
    picked = [pick.name for row in plan.rows for pick in row.picks]
    if not picked:
        return None
    room = plan.tile - 2 * NAME_PAD
    top = min(largest, plan.tile // 3)
    for shorten in (False, True):
        texts = {name: (name[:8].lstrip("0") or "0") if shorten else name[:8] for name in picked}
        for size in range(top, NAME_MIN_FONT - 1, -1):
            font = _font(size)
            if max(draw.textlength(text, font=font) for text in texts.values()) <= room:
                return texts, font
    return None


def _name_tag(sheet: Image.Image, bottom_left: tuple[int, int], text: str, font) -> None:
    from PIL import ImageDraw

    x, y = bottom_left
    draw = ImageDraw.Draw(sheet, "RGBA")
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    h = bottom - top + 2 * (NAME_PAD - 1)
    draw.rectangle((x, y - h, x + right - left + 2 * NAME_PAD, y - 1), fill=(0, 0, 0, 170))
    draw.text((x + NAME_PAD - left, y - h + NAME_PAD - 1 - top), text, font=font, fill=TEXT)


def _text_in_band(draw: ImageDraw.ImageDraw, box, text: str, font, fill) -> int:
    """Draw `text` left-aligned and vertically centred in `box`, cut to fit; returns where it ends."""
    x0, y0, x1, y1 = box
    while text and draw.textlength(text, font=font) > x1 - x0:
        text = text[:-2] + "…" if len(text) > 2 else ""
    if not text:
        return x0
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    y = y0 + (y1 - y0 - (bottom - top)) // 2 - top
    draw.text((x0 - left, y), text, font=font, fill=fill)
    return x0 + right - left


def _font(size: int):
    """A scalable font where Pillow has one (>= 10.1 ships it); else DejaVu; else the small bitmap font."""
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, AttributeError, OSError, ImportError):
        pass
    try:
        return ImageFont.truetype("DejaVuSans.ttf", size)
    except (OSError, ImportError):
        return ImageFont.load_default()


# ---- command line --------------------------------------------------------------------------------

DESCRIPTION = ("Write a PNG contact sheet of the faces under DIR, read from disk only. By default one row per "
               "status class; --by gender for gender; --by none (or --mosaic, or giving --rows/--cols, or --split "
               "unlabeled) for a plain mosaic. Faces are drawn at random, reproducibly for a --seed.")


def add_options(p: argparse.ArgumentParser) -> None:
    """`kaokore preview`'s flags, `--dir` aside (kaokore.cli declares it for every command)."""
    p.add_argument("--out", required=True, metavar="FILE.png", help="where to write the PNG")
    p.add_argument("--by", choices=BY_CHOICES, default=None,
                   help=f"one labelled row per class of this category, or none for a mosaic (default: {DEFAULT_BY}, "
                        "or none with --rows/--cols or --split unlabeled)")
    p.add_argument("--mosaic", action="store_true", help="same as --by none")
    p.add_argument("--split", choices=SHEET_SPLITS, default="all", help="draw from this split (default: all)")
    p.add_argument("--per-class", dest="per_class", type=int, default=None, metavar="N",
                   help=f"faces per class row (default: {DEFAULT_PER_CLASS})")
    # The other spelling works too, kept out of the help as the download flags' are (kaokore.cli._flag).
    p.add_argument("--per_class", dest="per_class", type=int, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    p.add_argument("--rows", type=int, default=None, metavar="R", help=f"mosaic rows (default: {DEFAULT_ROWS})")
    p.add_argument("--cols", type=int, default=None, metavar="C", help=f"mosaic columns (default: {DEFAULT_COLS})")
    p.add_argument("--tile", type=int, default=DEFAULT_TILE, metavar="PX",
                   help=f"tile side in pixels, {TILE_RANGE[0]}..{TILE_RANGE[1]} (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="which faces are drawn (default: %(default)s); "
                   "the same seed on the same tree gives the same sheet")
    p.add_argument("--names", action="store_true", help="print each face's image number on its tile")


def resolve_by(args: argparse.Namespace) -> str | None:
    """--by wins; --mosaic, --rows/--cols or --split unlabeled without --by mean a mosaic; else rows by status."""
    # Unlabeled images have no class to make rows of, so asking for them alone means a mosaic.
    grid = args.rows is not None or args.cols is not None or (args.split == UNLABELED and args.by is None)
    if args.mosaic and args.by not in (None, "none"):
        raise UsageError(f"--mosaic and --by {args.by} contradict each other")
    by = "none" if args.mosaic else args.by or ("none" if grid else DEFAULT_BY)
    if by != "none" and grid:
        raise UsageError(f"--rows/--cols shape a mosaic; with --by {by} use --per-class")
    if by == "none" and args.per_class is not None:
        raise UsageError("--per-class applies to rows by class; a mosaic takes --rows and --cols")
    return None if by == "none" else by


def run(args: argparse.Namespace) -> int:
    _png_path(args.out)  # before reading the tree: a usage error should not wait on 10,000 files
    by = resolve_by(args)
    per_class = DEFAULT_PER_CLASS if args.per_class is None else args.per_class
    plan = plan_sheet(args.dir, by, split=args.split, per_class=per_class,
                      rows=DEFAULT_ROWS if args.rows is None else args.rows,
                      cols=DEFAULT_COLS if args.cols is None else args.cols, tile=args.tile,
                      seed=args.seed)
    unreadable: list[str] = []
    out = save_png(render(plan, names=args.names, unreadable=unreadable), plan, args.out)
    notes = list(plan.notes)
    if unreadable:
        notes.append(f"{plural(len(unreadable), 'image')} could not be read ({', '.join(unreadable[:5])}"
                     f"{', ...' if len(unreadable) > 5 else ''}); run {hints.command('verify', args.dir)}")
    for note in notes:
        print(f"kaokore: note: {note}", file=sys.stderr)
    width, height = plan.size
    what = f"{len(plan.rows)} rows by {by} x {plan.cols} faces" if by else f"{len(plan.rows)}x{plan.cols} mosaic"
    shown = sum(len(r.picks) for r in plan.rows)
    print(f"wrote {out} ({width}x{height} px): {what}, {shown} faces from "
          f"{'all splits' if plan.split == 'all' else plan.split}, seed {plan.seed}")
    return EXIT_OK


__all__ = ["contact_sheet", "plan_sheet", "render", "save_png", "sheet_size", "SheetPlan", "Row", "Pick"]
