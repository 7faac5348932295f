"""One server's lifecycle, shared by the edge agent, the cloud worker and the gateway.

Contract for ``InferenceServer(name, dataplane, settings, resources=...)``:
- ``start()`` starts the metrics endpoint on ``settings.metrics_port`` (when set and the server has
  ``metrics``), each ``Resource`` in order (models load, caches open, probes start), then the
  gRPC front on ``settings.port`` and, when ``settings.http_port`` is set, the REST front, then
  marks the dataplane ready (health SERVING). A failure undoes what had started and propagates
  (a port in use: ``OSError`` naming it). ``port`` / ``http_port`` / ``metrics_port`` are the
  bound ports.
- ``stop(grace)`` (default ``settings.grace_s``): not ready (health NOT_SERVING, REST ready 503),
  then both fronts stop accepting and drain in-flight requests for ``grace`` seconds, then the
  resources stop in reverse order (clients closed, models unloaded). Every step runs even when an
  earlier one fails; the failures are raised together at the end. Idempotent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from edgecloud.config import ServerSettings
from edgecloud.dataplane import InferenceDataplane
from edgecloud.grpc_server import Authenticate, GrpcServer, inference_server
from edgecloud.lifecycle import Lifecycle, raise_collected
from edgecloud.types import InferResponse

__all__ = ["InferenceServer", "Resource", "RestOptions"]


class Resource(NamedTuple):
    """Something a server holds while it serves: started before the fronts, stopped after them."""

    name: str
    start: Callable[[], Awaitable[object]]
    stop: Callable[[], Awaitable[object]]


@dataclass(frozen=True)
class RestOptions:
    """What a server adds to the shared REST front (see ``edgecloud.http_front.RestFront``)."""

    response_headers: Callable[[InferResponse], Mapping[str, str]] | None = None
    extra_routes: Callable[[object], None] | None = None


class InferenceServer:
    def __init__(self, name: str, dataplane: InferenceDataplane, settings: ServerSettings, *,
                 resources: Sequence[Resource] = (), authenticate: Authenticate | None = None,
                 rest: RestOptions = RestOptions(), metrics: Callable[[], tuple[bytes, str]] | None = None):
        """``metrics()`` is the Prometheus exposition (``(body, content_type)``) the operator port serves."""
        self.name = name
        self.dataplane = dataplane
        self.settings = settings
        self._resources = list(resources)
        self.metrics_port: int | None = None
        if metrics is not None and settings.metrics_port is not None:
            from edgecloud.metrics_http import MetricsServer  # aiohttp: only servers with metrics need it

            metrics_server = MetricsServer(metrics, settings.host, settings.metrics_port)

            async def start_metrics() -> None:
                self.metrics_port = await metrics_server.start()

            # First: a port already taken fails the start before models spend time loading.
            self._resources.insert(0, Resource("metrics endpoint", start_metrics, metrics_server.stop))
        self._authenticate = authenticate
        self._rest_options = rest
        self._lifecycle = Lifecycle(name)
        self._grpc: GrpcServer | None = None
        self._rest = None
        self.port: int | None = None
        self.http_port: int | None = None

    @property
    def running(self) -> bool:
        return self._lifecycle.started

    async def start(self) -> int:
        if self.running:
            return self.port
        life = self._lifecycle
        for resource in self._resources:
            await life.start(resource.name, resource.start, _ignore_grace(resource.stop))
        await life.start("fronts", self._start_fronts, self._stop_fronts)
        await life.start("readiness", self._set_ready, self._set_not_ready)
        return self.port

    async def stop(self, grace: float | None = None) -> None:
        await self._lifecycle.stop(self.settings.grace_s if grace is None else grace)

    async def _start_fronts(self) -> None:
        settings = self.settings
        tls = settings.tls
        self._grpc = inference_server(self.dataplane, authenticate=self._authenticate, host=settings.host,
                                      port=settings.port, max_message_bytes=settings.max_message_bytes,
                                      credentials=tls.grpc_credentials() if tls else None,
                                      reuse_port=settings.reuse_port)
        self.port = await self._grpc.start()
        await self._grpc.set_serving(False)
        if settings.http_port is not None:
            from edgecloud.http_front import RestFront  # aiohttp: not every install serves HTTP

            options = self._rest_options
            self._rest = RestFront(self.dataplane, host=settings.host, port=settings.http_port,
                                   max_body_bytes=settings.max_message_bytes,
                                   body_timeout_s=settings.body_read_timeout_ms / 1000.0,
                                   max_connections=settings.max_http_connections,
                                   json_decode_threshold_bytes=settings.json_decode_process_bytes,
                                   json_decode_processes=settings.json_decode_processes,
                                   response_headers=options.response_headers, extra_routes=options.extra_routes,
                                   ssl_context=tls.ssl_context() if tls else None, authenticate=self._authenticate,
                                   reuse_port=settings.reuse_port)
            try:
                self.http_port = await self._rest.start()
            except BaseException:
                await self._grpc.stop(0)
                raise

    async def _stop_fronts(self, grace: float) -> None:
        """Both fronts drain at once; gRPC stops accepting in this very step (health NOT_SERVING
        first), so no call slips in while the other front's task gets going."""
        grpc_front, rest_front = self._grpc, self._rest
        self._grpc = self._rest = None
        rest_stop = asyncio.ensure_future(rest_front.stop(grace)) if rest_front is not None else None
        errors: list[Exception] = []
        try:
            await grpc_front.stop(grace)
        except Exception as exc:
            errors.append(exc)
        if rest_stop is not None:
            try:
                await rest_stop
            except Exception as exc:
                errors.append(exc)
        raise_collected(errors, "stopping the fronts")

    async def _set_ready(self) -> None:
        self.dataplane.set_ready(True)
        if self._grpc is not None:
            await self._grpc.set_serving(True)

    async def _set_not_ready(self, grace: float) -> None:
        # gRPC health goes NOT_SERVING as its front stops (``GrpcServer.stop``), in the same step.
        self.dataplane.set_ready(False)
        if self._rest is not None:
            self._rest.set_stopping()

    async def __aenter__(self) -> InferenceServer:
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.stop()


def _ignore_grace(stop: Callable[[], object]):
    async def stop_step(grace: float) -> None:
        await stop()

    return stop_step
