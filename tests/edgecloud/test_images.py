"""Image decoding: what is accepted and converted, and what is refused (by field, before decoding
when the header tells)."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from edgecloud.errors import InvalidArgument, ResourceExhausted
from edgecloud.images import decode_image

FIELD = "inputs[image][0]"


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def gradient(width: int, height: int) -> Image.Image:
    x = np.linspace(0, 255, width, dtype=np.uint8)[None, :].repeat(height, 0)
    y = np.linspace(0, 255, height, dtype=np.uint8)[:, None].repeat(width, 1)
    return Image.fromarray(np.stack([x, y, 255 - x], axis=-1), "RGB")


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_each_format_decodes_to_224_rgb(fmt):
    array = decode_image(encode(gradient(640, 480), fmt), FIELD)
    assert array.shape == (224, 224, 3) and array.dtype == np.uint8
    # centre crop of a left-to-right ramp: red rises across the crop
    assert array[112, 10, 0] < array[112, 213, 0]


def test_the_shorter_side_is_resized_then_the_centre_cropped():
    image = Image.new("RGB", (1000, 256), (0, 0, 0))
    image.paste((255, 255, 255), (450, 0, 550, 256))  # a white band in the middle
    array = decode_image(encode(image, "PNG"), FIELD)
    assert array[:, 112].min() > 200 and array[:, 0].max() < 30


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P", "CMYK", "I;16"])
def test_other_modes_are_converted_to_rgb(mode):
    if mode == "I;16":
        image = Image.fromarray(np.full((300, 300), 65535, dtype=np.uint16))
        assert image.mode.startswith("I;16")
        data = encode(image, "PNG")
    elif mode == "CMYK":
        data = encode(gradient(300, 300).convert("CMYK"), "JPEG")
    elif mode == "P":
        data = encode(gradient(300, 300).convert("P"), "PNG")
    else:
        data = encode(gradient(300, 300).convert(mode), "PNG")
    array = decode_image(data, FIELD)
    assert array.shape == (224, 224, 3)
    if mode == "I;16":
        assert array.min() == 255  # 16-bit white stays white
    if mode in ("LA", "RGBA"):
        assert array.max() > 0


def test_transparency_is_composited_on_white():
    image = Image.new("RGBA", (300, 300), (0, 0, 0, 0))
    assert decode_image(encode(image, "PNG"), FIELD).min() == 255


def test_an_animated_image_gives_its_first_frame():
    frames = [Image.new("RGB", (300, 300), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    data = encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], lossless=True)
    array = decode_image(data, FIELD)
    assert array[..., 0].mean() > 200 and array[..., 2].mean() < 50


@pytest.mark.parametrize("data, words", [
    (b"", "empty"),
    (b"not an image at all", "not a JPEG, PNG or WebP"),
    (b"GIF89a" + b"\x00" * 40, "not a JPEG, PNG or WebP"),
])
def test_what_is_not_an_image_is_refused_by_field(data, words):
    with pytest.raises(InvalidArgument) as caught:
        decode_image(data, FIELD)
    assert caught.value.field == FIELD and words in caught.value.message


def test_a_truncated_file_is_refused():
    data = encode(gradient(640, 480), "JPEG")
    with pytest.raises(InvalidArgument) as caught:
        decode_image(data[: len(data) // 2], FIELD)
    assert "truncated or corrupt" in caught.value.message


def _png_declaring(width: int, height: int) -> bytes:
    """A tiny valid PNG whose header declares ``width`` x ``height``."""
    small = encode(Image.new("RGB", (1, 1)), "PNG")
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return small[:8] + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk)) + small[33:]


@pytest.mark.parametrize("side", [10_000, 100_000])  # over our limit; over Pillow's own guard too
def test_a_decompression_bomb_is_refused_from_its_header(side):
    with pytest.raises(ResourceExhausted) as caught:
        decode_image(_png_declaring(side, side), FIELD)
    assert caught.value.field == FIELD and "limit" in caught.value.message


def test_declared_dimensions_within_the_limit_but_no_pixels_are_corrupt():
    with pytest.raises(InvalidArgument):
        decode_image(_png_declaring(4000, 4000), FIELD)
