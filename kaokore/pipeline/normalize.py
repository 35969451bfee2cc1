"""Normalization: whatever the server sent, in; a 256x256 RGB JPEG, out.

A pure function of the bytes, so it is tested without a server. The server's
own bytes are kept when they already are a 256x256 RGB JPEG, because every
re-encode loses a little.
"""
from __future__ import annotations

import io
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL import Image

# Pillow is imported by the functions that use it: a download's first requests go out before any
# body needs decoding, and importing Pillow would add ~10 ms in front of them.

SIZE = (256, 256)
JPEG_QUALITY = 95
# Far above any face crop a IIIF server renders, far below what exhausts memory.
# Checked against the header before decoding, so a decompression bomb costs nothing.
MAX_PIXELS = 16 * 1024 * 1024  # 4096x4096: times 12 threads still fits a laptop's memory
# What a IIIF server may send (jpg, png, gif, tif, webp, jp2). Anything else is
# refused unopened: Pillow would hand an EPS body to Ghostscript, and exotic
# decoders are attack surface a face crop does not need.
FORMATS = ("JPEG", "PNG", "GIF", "TIFF", "WEBP", "JPEG2000")
GRAY_TOLERANCE = 3


class NotAnImage(ValueError):
    """The body does not decode as an image: HTML error pages, iipsrv's garbage 200s, truncations."""


class NotDecodable(NotAnImage):
    """The body opens as an image format but its pixels do not decode (truncated, crafted)."""


class ImageTooLarge(ValueError):
    """The image declares more pixels than we are willing to decode."""


@dataclass(frozen=True)
class Normalized:
    data: bytes
    source_width: int
    source_height: int
    source_mode: str
    converted: bool  # False when `data` is the server's bytes, unchanged


def normalize(body: bytes) -> Normalized:
    return _normalize(_decode(body), body)


def normalize_found(data: bytes) -> Normalized:
    """A file found on disk with no record of how it was made, normalized as if just fetched.

    Upstream's download.py writes an RGB body as the server sent it but re-encodes a
    grayscale one as an RGB JPEG: such a file holds the server's pixels, not its bytes,
    so it is reported as converted (from "L") rather than passed off as the server's.
    """
    image = _decode(data)
    result = _normalize(image, data)
    if not result.converted and _is_gray(image):
        return replace(result, converted=True, source_mode="L")
    return result


def _decode(body: bytes) -> Image.Image:
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(io.BytesIO(body), formats=_formats())
        width, height = image.size
        if width * height > MAX_PIXELS:
            raise ImageTooLarge(f"image declares {width}x{height} pixels")
        # Decode fully even when we keep the bytes: a truncated JPEG opens fine
        # and only fails here.
        image.load()
    except ImageTooLarge:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(str(exc)) from None
    except UnidentifiedImageError:
        # Pillow's own message only names the BytesIO object.
        raise NotAnImage(f"body is not an image ({_describe(body)})") from None
    except Exception as exc:  # noqa: BLE001 - decoders given crafted bytes also raise struct.error, IndexError...
        raise NotDecodable(f"body is not a decodable image ({_describe(body)}): {exc}") from None
    return image


def _normalize(image: Image.Image, body: bytes) -> Normalized:
    width, height = image.size
    mode = image.mode
    if image.format == "JPEG" and image.size == SIZE and mode == "RGB":
        return Normalized(body, width, height, mode, converted=False)
    return Normalized(_to_rgb_jpeg(image), width, height, mode, converted=True)


def _is_gray(image: Image.Image) -> bool:
    from PIL import ImageChops

    r, g, b = image.split()
    # JPEG rounding can leave a grey pixel's channels a level or two apart; colour art is far more.
    return all(ImageChops.difference(x, y).getextrema()[1] <= GRAY_TOLERANCE for x, y in ((r, g), (g, b)))


def _formats() -> list[str]:
    from PIL import Image

    # Image.open raises KeyError for a format this Pillow was built without (WebP, JPEG 2000).
    Image.init()
    return [f for f in FORMATS if f in Image.OPEN]


def _to_rgb_jpeg(image: Image.Image) -> bytes:
    from PIL import Image

    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Transparent pixels become white, as they would show on a page, not black.
        rgba = image.convert("RGBA")
        rgb = Image.new("RGB", rgba.size, (255, 255, 255))
        rgb.paste(rgba, mask=rgba.getchannel("A"))
    else:
        rgb = image.convert("RGB")
    if rgb.size != SIZE:
        rgb = rgb.resize(SIZE, Image.Resampling.LANCZOS)
    out = io.BytesIO()
    rgb.save(out, format="JPEG", quality=JPEG_QUALITY)
    return out.getvalue()


def _describe(body: bytes) -> str:
    head = body[:16]
    if head.lstrip().lower().startswith((b"<!doctype", b"<html")):
        return f"HTML, {len(body)} bytes"
    return f"{len(body)} bytes starting {head[:8]!r}"


def has_normalized_header(data: bytes) -> bool:
    """Whether `data`'s header says 256x256 RGB JPEG; its scan data is not decoded (`is_normalized` does).

    Enough for bytes that were decoded in full once already, when a hash proves they are the same."""
    from PIL import Image

    try:
        image = Image.open(io.BytesIO(data), formats=("JPEG",))
    except Exception:  # noqa: BLE001 - any failure to parse the header means "not normalized"
        return False
    return image.format == "JPEG" and image.size == SIZE and image.mode == "RGB"


def is_normalized(data: bytes) -> bool:
    """Whether `data` decodes as a 256x256 RGB JPEG (what every file on disk must be)."""
    from PIL import Image

    try:
        image = Image.open(io.BytesIO(data))
        if image.format != "JPEG" or image.size != SIZE or image.mode != "RGB":
            return False
        image.load()
    except Exception:  # noqa: BLE001 - any failure to decode means "not normalized"
        return False
    return True

