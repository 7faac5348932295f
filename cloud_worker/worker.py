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

import logging
import time
from collections.abc import Callable, Sequence

from prometheus_client import CollectorRegistry

from cloud_worker.config import CloudConfig, ProgramModelSpec, ReferenceModelSpec
from cloud_worker.metrics import WorkerMetrics
from cloud_worker.models import BatchedModel, batch_limit
from cloud_worker.runtime import Runtime
from edgecloud import __version__
from edgecloud.config import ConfigError
from edgecloud.admission import Admission
from edgecloud.dataplane import Dataplane
from edgecloud.model import ModelRepository
from edgecloud.server import InferenceServer, Resource
from edgecloud.types import ServerMetadata

log = logging.getLogger(__name__)

SERVER_NAME = "edgecloud-cloud"


def build_runtimes(config: CloudConfig) -> list[Runtime]:
    """The configured runtimes, constructed (metadata known) but not loaded."""
    from cloud_worker.programs import ProgramRuntime
    from cloud_worker.reference import ReferenceRuntime

    runtimes: list[Runtime] = []
    for spec in config.models:
        if isinstance(spec, ReferenceModelSpec):
            runtimes.append(ReferenceRuntime(spec, config.runtime, max_rows=config.batching.max_batch_size))
        elif isinstance(spec, ProgramModelSpec):
            runtimes.append(ProgramRuntime(spec.path, config.runtime))
        else:  # pragma: no cover - the config union is closed
            raise TypeError(type(spec).__name__)
    return runtimes


def _check_unique(runtimes: Sequence[Runtime]) -> None:
    seen: set[tuple[str, str]] = set()
    for runtime in runtimes:
        key = (runtime.metadata.name, runtime.metadata.versions[0] if runtime.metadata.versions else "")
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
        _check_unique(chosen)
        self.models = [
            BatchedModel(runtime, self.config.batching, metrics=self.metrics.for_model(runtime.metadata.name),
                         clock=clock)
            for runtime in chosen
        ]
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
        log.info("cloud worker serving %s on %s:%d (metrics port %s; batching %s, max batch %d)",
                 ", ".join(f"{m.metadata.name} ({m.runtime.variant})" for m in self.models), self.settings.host,
                 port, self.metrics_port, "on" if self.config.batching.enabled else "off",
                 max((batch_limit(m.runtime, self.config.batching) for m in self.models), default=0))
        return port


__all__ = ["SERVER_NAME", "CloudWorker", "build_runtimes"]
