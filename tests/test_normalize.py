"""Normalization is a pure function of bytes: tested here without any server."""
import io

import pytest
from PIL import Image

from helpers import encode

from kaokore.normalize import ImageTooLarge, NotAnImage, is_normalized, normalize


def decoded(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    im.load()
    return im


def test_256_rgb_jpeg_is_kept_byte_for_byte():
    body = encode(Image.new("RGB", (256, 256), (200, 30, 40)), quality=80)
    out = normalize(body)
    assert out.data == body
    assert out.converted is False
    assert (out.source_width, out.source_height, out.source_mode) == (256, 256, "RGB")


@pytest.mark.parametrize("mode,size,fmt", [
    ("L", (256, 256), "JPEG"),  # grayscale from a server
    ("RGB", (200, 200), "JPEG"),  # Keio's !200,200 in v1.3
    ("CMYK", (256, 256), "JPEG"),
    ("RGBA", (256, 256), "PNG"),
    ("P", (64, 64), "PNG"),
    ("RGB", (1024, 1024), "JPEG"),
    ("RGB", (256, 300), "JPEG"),  # a `256,` request on a non-square crop
])
def test_everything_else_becomes_a_256_rgb_jpeg(mode, size, fmt):
    body = encode(Image.new(mode, size), fmt)
    out = normalize(body)
    assert out.converted is True
    assert (out.source_width, out.source_height, out.source_mode) == (*size, mode)
    im = decoded(out.data)
    assert (im.format, im.size, im.mode) == ("JPEG", (256, 256), "RGB")


def test_transparent_pixels_become_white_not_black():
    out = normalize(encode(Image.new("RGBA", (256, 256), (0, 0, 0, 0)), "PNG"))
    r, g, b = decoded(out.data).getpixel((128, 128))
    assert min(r, g, b) > 245


def test_grayscale_content_survives_conversion():
    out = normalize(encode(Image.new("L", (256, 256), 77)))
    r, g, b = decoded(out.data).getpixel((10, 10))
    assert abs(r - 77) <= 3 and abs(g - 77) <= 3 and abs(b - 77) <= 3


@pytest.mark.parametrize("body", [
    b"",
    b"<html><body>Internal error</body></html>",
    b"Error: region outside image",  # iipsrv's 200 image/jpeg that is not a JPEG
    b"\xff\xd8\xff\xe0" + b"\x00" * 100,  # a JPEG header and nothing after
])
def test_bodies_that_are_not_images_are_refused(body):
    with pytest.raises(NotAnImage):
        normalize(body)


def test_truncated_jpeg_is_refused_even_though_it_opens():
    body = encode(Image.effect_noise((256, 256), 64).convert("RGB"))
    with pytest.raises(NotAnImage):
        normalize(body[: len(body) // 2])


def test_decompression_bomb_is_refused_before_decoding():
    body = encode(Image.new("1", (20000, 20000)), "PNG")
    with pytest.raises(ImageTooLarge):
        normalize(body)


def test_is_normalized():
    assert is_normalized(encode(Image.new("RGB", (256, 256))))
    assert not is_normalized(encode(Image.new("RGB", (200, 200))))
    assert not is_normalized(encode(Image.new("L", (256, 256))))
    assert not is_normalized(encode(Image.new("RGB", (256, 256)), "PNG"))
    assert not is_normalized(b"junk")
