"""Encoded images to model input, refusing anything unsafe or unreadable before it costs memory.

Contract: ``decode_image(data, field, size=224)`` takes one encoded image (JPEG, PNG or WebP bytes)
and returns it as UINT8 [size, size, 3] RGB: the shorter side resized to ``size * 256 / 224``
(bilinear, the usual ImageNet evaluation), then the centre ``size`` × ``size`` cropped. Refusals
are ``InvalidArgument`` naming ``field``, raised before anything is decoded when the header already
tells (``ResourceExhausted`` for declared dimensions over ``max_pixels``, the decompression-bomb
guard):
- not an image, or a format other than JPEG / PNG / WebP; a zero-size image;
- a truncated or corrupt file (the decoder's own error, summarised; the server keeps serving).
Accepted and converted, as documented: grayscale (L, LA, I, I;16 — 16-bit scaled to 8), palette
(P), RGBA / LA (composited on white), CMYK and YCbCr to RGB; an animated image's first frame.
The decoder is Pillow; nothing here keeps state between calls.
"""

from __future__ import annotations

import io
import warnings

import numpy as np

from edgecloud.errors import InvalidArgument, ResourceExhausted

__all__ = ["ACCEPTED_FORMATS", "MAX_PIXELS", "decode_image"]

ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP")
MAX_PIXELS = 40_000_000
"""Declared width × height over this is refused before decoding (a 40 MP photo decodes to 120 MB)."""


def _open(data: bytes, field: str, max_pixels: int):
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise InvalidArgument("is empty, not an image", field=field)
    try:
        with warnings.catch_warnings():  # Pillow's own warning zone: our limit below is what decides
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
    except UnidentifiedImageError:
        raise InvalidArgument(f"is not a JPEG, PNG or WebP image ({len(data)} bytes)", field=field) from None
    except Image.DecompressionBombError:
        raise ResourceExhausted(f"declares more pixels than the limit of {max_pixels}", field=field) from None
    except Exception as exc:  # noqa: BLE001 - a broken header is the client's
        raise InvalidArgument(f"is not a readable image: {type(exc).__name__}", field=field) from None
    width, height = image.size
    if width <= 0 or height <= 0:
        raise InvalidArgument(f"has zero size ({width}x{height})", field=field)
    if width * height > max_pixels:
        raise ResourceExhausted(f"declares {width}x{height} pixels, over the limit of {max_pixels}", field=field)
    return image


def _to_rgb(image, field: str):
    from PIL import Image

    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if mode.startswith("I;16") or array.max(initial=0) > 255 else 255.0
        image = Image.fromarray(np.clip(array * (255.0 / peak), 0, 255).astype(np.uint8), "L")
        mode = "L"
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        mode = image.mode
    if mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode != "RGB":
        try:
            return image.convert("RGB")
        except (ValueError, OSError):
            raise InvalidArgument(f"has an image mode that cannot be read as RGB ({mode})", field=field) from None
    return image


def decode_image(data: bytes, field: str, *, size: int = 224, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """UINT8 [size, size, 3] RGB from encoded image bytes (see the module's contract)."""
    from PIL import Image

    image = _open(bytes(data), field, max_pixels)
    try:
        image.seek(0)  # an animated image: its first frame
        image.load()
        image = _to_rgb(image, field)
        width, height = image.size
        short = size * 256 / 224
        scale = short / min(width, height)
        resized = image.resize((max(size, round(width * scale)), max(size, round(height * scale))),
                               Image.Resampling.BILINEAR)
        left = (resized.width - size) // 2
        top = (resized.height - size) // 2
        cropped = resized.crop((left, top, left + size, top + size))
    except InvalidArgument:
        raise
    except Image.DecompressionBombError:
        raise ResourceExhausted("decompresses past the pixel limit", field=field) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InvalidArgument(f"is truncated or corrupt ({type(exc).__name__}: {str(exc)[:80]})",
                              field=field) from None
    return np.asarray(cropped, dtype=np.uint8)
