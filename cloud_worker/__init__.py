"""The cloud worker: PyTorch model server with dynamic batching over the Open Inference Protocol."""

from __future__ import annotations

from edgecloud.exports import lazy_exports

# Exports resolve lazily, so ``from cloud_worker.config import CloudConfig`` (config checks, the CLI)
# does not import torch.
_EXPORTS = {
    "CloudConfig": "cloud_worker.config",
    "load_cloud_config": "cloud_worker.config",
    "DynamicBatcher": "cloud_worker.batcher",
    "BatchedModel": "cloud_worker.models",
    "ReferenceRuntime": "cloud_worker.reference",
    "ProgramRuntime": "cloud_worker.programs",
    "Runtime": "cloud_worker.runtime",
    "WorkerMetrics": "cloud_worker.metrics",
    "CloudWorker": "cloud_worker.worker",
    "serve": "cloud_worker.main",
    "run": "cloud_worker.main",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
