"""``CloudWorker``: the cloud worker assembled from its configuration.

Contract: ``start()`` loads and warms every model (each with its own batcher and compute thread),
starts the metrics endpoint (when ``server.metrics_port`` is set) and then the gRPC server
(Open Inference Protocol, health, reflection), so health says SERVING only once every model can
answer; ``port`` and ``metrics_port`` are the bound ports (0 in the config picks free ones).
``stop(grace)`` reports NOT_SERVING, stops accepting, drains in-flight requests for ``grace``
seconds (default ``server.grace_s``), then closes the metrics endpoint and unloads the models; it
is idempotent, and every step runs even when an earlier one fails. A failed ``start`` undoes what
it had started. Workers share nothing, so several (processes) can stand behind one gateway.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from prometheus_client import CollectorRegistry

from cloud_worker.config import CloudConfig, GenerativeModelSpec, ImageModelSpec, ProgramModelSpec, ReferenceModelSpec
from cloud_worker.metrics import WorkerMetrics
from cloud_worker.models import BatchedModel, batch_limit
from cloud_worker.runtime import Runtime
from edgecloud import __version__
from edgecloud.config import ConfigError
from edgecloud.admission import Admission
from edgecloud.dataplane import Dataplane
from edgecloud.model import Model, ModelRepository
from edgecloud.server import InferenceServer, Resource
from edgecloud.types import ServerMetadata

log = logging.getLogger(__name__)

SERVER_NAME = "edgecloud-cloud"


def build_runtimes(config: CloudConfig) -> list[Runtime]:
    """The configured tensor runtimes (each goes behind a dynamic batcher), constructed (metadata
    known) but not loaded."""
    from cloud_worker.programs import ProgramRuntime
    from cloud_worker.reference import ReferenceRuntime

    runtimes: list[Runtime] = []
    for spec in config.models:
        if isinstance(spec, ReferenceModelSpec):
            runtimes.append(ReferenceRuntime(spec, config.runtime, max_rows=config.batching.max_batch_size))
        elif isinstance(spec, ImageModelSpec):
            from cloud_worker.image import ImageRuntime

            runtimes.append(ImageRuntime(spec, config.runtime, max_rows=config.batching.max_batch_size))
        elif isinstance(spec, ProgramModelSpec):
            runtimes.append(ProgramRuntime(spec.path, config.runtime))
    return runtimes


def build_generative_models(config: CloudConfig) -> list[Model]:
    """The configured generative models (continuous batching), constructed but not loaded."""
    specs = [spec for spec in config.models if isinstance(spec, GenerativeModelSpec)]
    if not specs:
        return []
    from cloud_worker.device import resolve_device, resolve_dtype
    from cloud_worker.generation.model import TorchGenerativeModel
    from cloud_worker.generation.settings import GenerationSettings

    device = resolve_device(config.runtime.device)
    dtype, variant = resolve_dtype(_generative_dtype(config.runtime.dtype, device), device)
    models: list[Model] = []
    for spec in specs:
        checkpoint, name = _checkpoint_dir(spec)
        settings = GenerationSettings(
            max_batch_size=spec.max_batch_size, max_queue_size=spec.max_queue_size,
            context_length=spec.context_length, max_tokens=min(spec.max_tokens, spec.context_length - 1),
            default_max_tokens=min(spec.default_max_tokens, spec.max_tokens),
            overload_retry_after_s=config.server.overload_retry_after_ms / 1000.0,
            max_prefill_tokens=spec.max_prefill_tokens)
        models.append(TorchGenerativeModel(checkpoint, name=spec.name or name, version=spec.version,
                                           settings=settings, device=device, dtype=dtype, variant=variant))
    return models


def _generative_dtype(setting: str, device) -> str:
    """``auto`` is bf16 on a GPU that has it (fp16 otherwise) and fp32 on CPU."""
    if setting != "auto" or device.type != "cuda":
        return setting
    import torch

    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def _checkpoint_dir(spec: GenerativeModelSpec) -> tuple[Path, str]:
    """(checkpoint directory, default model name) for a model directory or a bare checkpoint."""
    manifest = spec.path / "model.json"
    if manifest.is_file():
        meta = json.loads(manifest.read_text(encoding="utf-8"))
        if meta.get("task") != "text-generation" or "cloud" not in meta:
            raise ConfigError("models", [("models.path", f"{spec.path}: not a text-generation model directory "
                                                         f"with a cloud checkpoint")])
        return spec.path / meta["cloud"], str(meta.get("name", spec.path.name))
    if not (spec.path / "config.json").is_file():
        raise ConfigError("models", [("models.path", f"{spec.path}: neither a model directory (model.json) nor "
                                                     f"a checkpoint (config.json)")])
    return spec.path, spec.path.name


def _check_unique(models: Sequence[Runtime | Model]) -> None:
    seen: set[tuple[str, str]] = set()
    for model in models:
        key = (model.metadata.name, model.metadata.versions[0] if model.metadata.versions else "")
        if key in seen:
            raise ConfigError("models", [("models", f"model {key[0]!r} version {key[1]!r} is served twice")])
        seen.add(key)


class CloudWorker(InferenceServer):
    def __init__(self, config: CloudConfig | None = None, *, runtimes: Sequence[Runtime] | None = None,
                 registry: CollectorRegistry | None = None, clock: Callable[[], float] = time.monotonic):
        """``runtimes`` replaces the configured models (tests inject fakes or wrapped runtimes)."""
        self.config = config or CloudConfig()
        self.metrics = WorkerMetrics(registry)
        chosen = list(runtimes) if runtimes is not None else build_runtimes(self.config)
        generative = build_generative_models(self.config) if runtimes is None else []
        _check_unique([*chosen, *generative])
        self.models: list[Model] = [
            BatchedModel(runtime, self.config.batching, metrics=self.metrics.for_model(runtime.metadata.name),
                         clock=clock)
            for runtime in chosen
        ]
        for model in generative:
            model.attach_metrics(self.metrics)
        self.models += generative
        server = self.config.server
        dataplane = Dataplane(
            ModelRepository(self.models), ServerMetadata(SERVER_NAME, __version__), self.config.limits.to_limits(),
            Admission(server.max_concurrent_requests, server.overload_retry_after_ms / 1000.0),
        )
        resources = [Resource(f"model {m.metadata.name}", m.load, m.unload) for m in self.models]
        super().__init__("cloud worker", dataplane, server, resources=resources, metrics=self.metrics.exposition)

    async def start(self) -> int:
        if self.running:
            return self.port
        port = await super().start()
        batched = [m for m in self.models if isinstance(m, BatchedModel)]
        log.info("cloud worker serving %s on %s:%d (metrics port %s; batching %s, max batch %d)",
                 ", ".join(f"{m.metadata.name} ({m.variant})" for m in self.models), self.settings.host,
                 port, self.metrics_port, "on" if self.config.batching.enabled else "off",
                 max((batch_limit(m.runtime, self.config.batching) for m in batched), default=0))
        return port


__all__ = ["SERVER_NAME", "CloudWorker", "build_generative_models", "build_runtimes"]
