"""Photographs for calibrating and checking the image model, from a package that ships them.

Contract: ``source_photos()`` reads the photographs scikit-image ships inside its wheel (its
``data`` folder: the cat, the coffee, the astronaut, the rocket, the motorcycles, the camera man
and the rest; nothing downloads) as RGB Pillow images, in a fixed order. ``augmented(n, seed)``
returns ``n`` UINT8 [224, 224, 3] model inputs made from them by random crops (8-100% of the area,
aspect 3:4 to 4:3), horizontal flips, scales, small rotations and brightness / contrast /
saturation shifts, each then prepared exactly as the servers prepare an upload (``decode_image``
after a PNG round trip). The same ``(n, seed)`` gives the same images on every machine; different
seeds give different crops of the same photographs (the split between calibration and held-out
images is by seed). scikit-image is needed only here (the ``build`` extra), never to serve.
"""

from __future__ import annotations

import io
from functools import lru_cache
from importlib.util import find_spec
from pathlib import Path

import numpy as np

from edgecloud.images import decode_image

__all__ = ["CALIBRATION_SEED", "HELDOUT_SEED", "OBJECT_PHOTOS", "SOURCE_FILES", "augmented", "encoded", "source_photos"]

CALIBRATION_SEED = 20261205
HELDOUT_SEED = 7
SOURCE_FILES = (
    "chelsea.png", "coffee.png", "astronaut.png", "rocket.jpg", "motorcycle_left.png", "motorcycle_right.png",
    "camera.png", "clock_motion.png", "coins.png", "horse.png", "moon.png", "page.png", "text.png", "brick.png",
    "grass.png", "gravel.png", "retina.jpg", "hubble_deep_field.jpg", "ihc.png", "color.png", "logo.png",
    "chessboard_RGB.png", "cell.png", "microaneurysms.png",
)
"""scikit-image's shipped photographs (and a few textures and charts, which give the classifier
the unsure answers escalation is for)."""
OBJECT_PHOTOS = ("chelsea.png", "coffee.png", "astronaut.png", "rocket.jpg", "motorcycle_left.png",
                 "motorcycle_right.png", "camera.png", "horse.png", "coins.png", "clock_motion.png")
"""The photographs of things ImageNet has classes for (a cat, a cup, a person, a rocket, motorcycles,
a camera, a horse, coins, a clock): what a camera-driven assistant mostly sees."""


def _data_dir() -> Path:
    spec = find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the image corpus reads scikit-image's bundled photos: install edgecloud[build]")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


@lru_cache(maxsize=4)
def source_photos(names: tuple[str, ...] = SOURCE_FILES) -> tuple:
    """The bundled photographs ``names`` as RGB Pillow images (those present in this scikit-image)."""
    from PIL import Image

    folder = _data_dir()
    photos = []
    for name in names:
        path = folder / name
        if path.is_file():
            with Image.open(path) as image:
                photos.append(image.convert("RGB"))
    if len(photos) < min(6, len(names)):
        raise RuntimeError(f"{folder}: found {len(photos)} of the bundled photographs; scikit-image is incomplete")
    return tuple(photos)


def encoded(image: np.ndarray, fmt: str = "PNG", quality: int = 90) -> bytes:
    """``image`` (UINT8 [H, W, 3]) encoded as ``fmt`` bytes."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=fmt, **({"quality": quality} if fmt in ("JPEG", "WEBP") else {}))
    return buffer.getvalue()


def _augment(photo, rng: np.random.Generator):
    from PIL import Image, ImageEnhance

    width, height = photo.size
    for _ in range(10):
        area = width * height * rng.uniform(0.08, 1.0)
        aspect = float(np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3))))
        w, h = int(round((area * aspect) ** 0.5)), int(round((area / aspect) ** 0.5))
        if 16 <= w <= width and 16 <= h <= height:
            break
    else:
        w, h = width, height
    left, top = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
    image = photo.crop((left, top, left + w, top + h))
    if rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if rng.random() < 0.25:
        image = image.rotate(float(rng.uniform(-15, 15)), resample=Image.Resampling.BILINEAR, expand=False)
    for enhancer in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        image = enhancer(image).enhance(float(rng.uniform(0.7, 1.3)))
    scale = rng.uniform(0.6, 1.6)  # uploads arrive at many sizes
    return image.resize((max(16, int(w * scale)), max(16, int(h * scale))), Image.Resampling.BILINEAR)


def augmented(n: int, seed: int, sources: tuple[str, ...] = SOURCE_FILES) -> np.ndarray:
    """``n`` prepared model inputs, UINT8 [n, 224, 224, 3], from the photographs ``sources`` (see the
    module's contract)."""
    photos = source_photos(sources)
    rng = np.random.default_rng(seed)
    out = np.empty((n, 224, 224, 3), dtype=np.uint8)
    for index in range(n):
        photo = photos[index % len(photos)] if index < len(photos) else photos[int(rng.integers(len(photos)))]
        image = _augment(photo, rng)
        out[index] = decode_image(encoded(np.asarray(image)), "image")
    return out
