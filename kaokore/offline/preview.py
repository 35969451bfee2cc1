"""`kaokore preview`: draws the contact sheet `kaokore.offline.sheet` plans, and writes it as a PNG.

Pillow is imported only here, where a sheet is drawn.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .. import defaults, hints
from ..dataset.layout import UNLABELED
from ..errors import EXIT_OK, DirectoryError, UsageError
from ..storage.store import atomic_write
from .info_report import plural
from .sheet import (
    BY_CHOICES,
    DEFAULT_BY,
    DEFAULT_COLS,
    DEFAULT_PER_CLASS,
    DEFAULT_ROWS,
    DEFAULT_TILE,
    SHEET_SPLITS,
    TILE_RANGE,
    SheetPlan,
    geometry,
    plan_sheet,
)

# Pillow is imported in the functions that draw: kaokore.cli imports this module for every command,
# and loading Pillow would slow `kaokore info` and `versions`.
if TYPE_CHECKING:
    from PIL import Image, ImageDraw

BACKGROUND = (28, 28, 30)
BAND = (44, 44, 48)
EMPTY_TILE = (52, 52, 56)
EMPTY_MARK = (84, 84, 90)
TEXT = (240, 240, 240)
DIM_TEXT = (160, 160, 168)
NAME_PAD = 3  # pixels around an image number on its tag
NAME_MIN_FONT = 8  # smaller than this an image number is not legible: shorten it, or leave it out


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
    where = plan.where
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
    >>> from kaokore.offline.preview import contact_sheet
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
    # The other spelling works too, kept out of the help as the download flags' are (kaokore.flags.flag).
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
          f"{plan.where}, seed {plan.seed}")
    return EXIT_OK


__all__ = ["contact_sheet", "render", "save_png"]
