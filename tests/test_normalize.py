"""Normalization is a pure function of bytes: tested here without any server."""
import io

import pytest
from PIL import Image

from helpers import encode

from kaokore.pipeline.normalize import ImageTooLarge, NotAnImage, is_normalized, normalize


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


def patterned(size: tuple[int, int]) -> Image.Image:
    """Detail at every scale (a gradient, noise, a fine checkerboard): what a filter, a crop or a pad changes shows."""
    w, h = size
    checker = Image.new("L", size)
    checker.putdata([255 * ((x // 7 + y // 5) % 2) for y in range(h) for x in range(w)])
    return Image.merge("RGB", (Image.linear_gradient("L").resize(size), Image.effect_noise(size, 60), checker))


def mean_difference(a: Image.Image, b: Image.Image) -> float:
    from PIL import ImageChops, ImageStat

    return sum(ImageStat.Stat(ImageChops.difference(a.convert("RGB"), b.convert("RGB"))).mean) / 3


@pytest.mark.parametrize("size, fmt", [((400, 380), "PNG"), ((200, 200), "JPEG")], ids=["400x380-png", "200x200-jpeg"])
def test_another_size_is_resized_with_lanczos_and_saved_at_quality_95(size, fmt):
    """README: 'resized with Lanczos, and saved at JPEG quality 95'. The reference is Pillow's own
    LANCZOS resize and quality-95 encode of the decoded source; a crop, a pad or another filter is
    several levels away on average, the reference within a fraction of one."""
    from PIL import ImageOps

    body = encode(patterned(size), fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    source = decoded(body).convert("RGB")
    out = decoded(normalize(body).data)

    def saved(image: Image.Image, quality: int = 95) -> Image.Image:
        return decoded(encode(image, quality=quality))

    lanczos = source.resize((256, 256), Image.Resampling.LANCZOS)
    assert mean_difference(out, saved(lanczos)) <= 0.5
    wrong = {
        "nearest": saved(source.resize((256, 256), Image.Resampling.NEAREST)),
        "bilinear": saved(source.resize((256, 256), Image.Resampling.BILINEAR)),
        "quality 90": saved(lanczos, 90),
    }
    if size[0] > 256:
        wrong["crop"] = saved(ImageOps.fit(source, (256, 256), method=Image.Resampling.LANCZOS))  # aspect kept
        wrong["centre crop"] = saved(source.crop(((size[0] - 256) // 2, (size[1] - 256) // 2,
                                                  (size[0] + 256) // 2, (size[1] + 256) // 2)))
        wrong["pad"] = saved(ImageOps.pad(source, (256, 256), method=Image.Resampling.LANCZOS))  # letterboxed
    else:
        canvas = Image.new("RGB", (256, 256), (255, 255, 255))
        canvas.paste(source, ((256 - size[0]) // 2, (256 - size[1]) // 2))
        wrong["pad"] = saved(canvas)  # not enlarged, framed
    for name, image in wrong.items():
        assert mean_difference(out, image) > 2.0, name
    # The quantization tables are the encoder's quality setting itself.
    assert out.quantization == saved(lanczos).quantization
    assert out.quantization != saved(lanczos, 90).quantization
