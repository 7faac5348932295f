"""Text generation on the cloud worker: a plain-torch Llama decoder with a slot KV cache
(``llama``), per-request sampling (``sampling``), continuous batching on one thread
(``scheduler``) and the ``GenerativeModel`` that serves it (``model``)."""

from __future__ import annotations

from edgecloud.exports import lazy_exports

# Lazy, so reading ``GenerationSettings`` (config checks) does not import torch.
_EXPORTS = {
    "GenerationSettings": "cloud_worker.generation.settings",
    "LlamaModel": "cloud_worker.generation.llama",
    "LlamaSpec": "cloud_worker.generation.llama",
    "CheckpointError": "cloud_worker.generation.llama",
    "sample": "cloud_worker.generation.sampling",
    "BatcherStatus": "cloud_worker.generation.scheduler",
    "ContinuousBatcher": "cloud_worker.generation.scheduler",
    "Generation": "cloud_worker.generation.scheduler",
    "TorchGenerativeModel": "cloud_worker.generation.model",
    "eos_token_ids": "cloud_worker.generation.model",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
