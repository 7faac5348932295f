"""The reference image classifier in torch: EfficientNet-Lite0 from the packaged weights.

Contract: ``image`` (encoded BYTES [N] or UINT8 [N, 224, 224, 3]) -> ``probabilities`` (FP32
[N, 1000], softmax), computed on the configured device and precision (``auto``: FP16 on CUDA,
FP32 on CPU; the answer is FP32 either way). Uploaded images are decoded in ``prepare`` on a small
pool of their own (``decode_off_loop``: never on the event loop, never on the model's thread), so a
corrupt image is refused alone, before it joins a batch. Batches of prepared images run in chunks of
at most ``max_rows``; ``labels`` are the ImageNet class names the classification extension uses.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from cloud_worker.config import ImageModelSpec, RuntimeSettings
from cloud_worker.device import configure_threads, resolve_device, resolve_dtype
from cloud_worker.threads import thread_plan
from edgecloud.errors import FailedPrecondition
from edgecloud.image_model import (IMAGE_INPUT, INPUT_NAME, OUTPUT_NAME, PROBABILITIES, imagenet_labels,
                                   load_torch_classifier, prepared_images)
from edgecloud.types import InferRequest, ModelMetadata, Tensor

log = logging.getLogger(__name__)

PLATFORM = "pytorch_libtorch"


class ImageRuntime:
    batchable = True
    decode_off_loop = True
    """``prepare`` decodes images: ``BatchedModel`` runs it on its decode pool."""

    def __init__(self, spec: ImageModelSpec, settings: RuntimeSettings | None = None, max_rows: int = 32):
        self.spec = spec
        self.settings = settings or RuntimeSettings()
        self.max_rows = max_rows
        self.decode_threads = spec.decode_threads
        self.device = resolve_device(self.settings.device)
        self.threads = thread_plan(self.settings.instances, self.settings.intra_op_threads, self.device.type)
        self.instances = self.threads.instances
        self.dtype, self.variant = resolve_dtype(self.settings.dtype, self.device)
        self.labels = imagenet_labels()
        self.metadata = ModelMetadata(name=spec.name, versions=(spec.version,), platform=PLATFORM,
                                      inputs=(IMAGE_INPUT,), outputs=(PROBABILITIES,))
        self._model = None

    # lifecycle (model thread) ----------------------------------------------------------------

    def load(self) -> None:
        if self.device.type == "cpu":
            configure_threads(self.threads, self.settings.inter_op_threads)
        self._model = load_torch_classifier(str(self.device), self.dtype)
        log.info("loaded %s on %s as %s", self.metadata.name, self.device, self.variant)
        if self.settings.warmup:
            for rows in sorted({1, min(8, self.max_rows)}):
                self.classify(np.zeros((rows, 224, 224, 3), dtype=np.uint8))

    def close(self) -> None:
        self._model = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    # per request (decode pool) ---------------------------------------------------------------

    def prepare(self, request: InferRequest) -> tuple[np.ndarray, int]:
        images = prepared_images(request.input(INPUT_NAME))
        return images, len(images)

    # per batch (model thread) ----------------------------------------------------------------

    def run(self, items: list[np.ndarray]) -> list[list[Tensor]]:
        images = items[0] if len(items) == 1 else np.concatenate(items)
        probabilities = self.classify(images)
        outputs, start = [], 0
        for item in items:
            part = probabilities[start:start + len(item)]
            start += len(item)
            outputs.append([Tensor(OUTPUT_NAME, "FP32", part.shape, part)])
        return outputs

    def classify(self, images: np.ndarray) -> np.ndarray:
        """Probabilities [N, 1000] FP32 for UINT8 [N, 224, 224, 3] (blocking)."""
        if self._model is None:
            raise FailedPrecondition(f"model {self.metadata.name!r} is not loaded")
        out = np.empty((len(images), PROBABILITIES.shape[1]), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(images), self.max_rows):
                chunk = torch.from_numpy(np.array(images[start:start + self.max_rows])).to(self.device)  # wire views are read-only
                out[start:start + len(chunk)] = self._model(chunk).float().cpu().numpy()
        return out


__all__ = ["ImageRuntime", "PLATFORM"]
