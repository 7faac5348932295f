"""The gateway's one core: the shared dataplane contract over cache, routing and dispatch.

Contract for ``GatewayDataplane.infer(request)`` (an ``edgecloud.dataplane.InferenceDataplane``):
- Past ``server.max_concurrent_requests`` in flight, shed at once (``Overloaded``, with a hint).
- The request, decoded once by the front, is validated against the model's metadata as the
  backends advertise it (``gateway.metadata``) before anything is cached or routed: bad input
  never reaches a backend. ``quality`` must be ``auto`` (the default) or ``cloud``.
- The cache answers repeats (``gateway.cache``); a miss is dispatched (``gateway.dispatch``) within
  the client's deadline (or ``routing.default_timeout_ms``).
- The response carries ``served_by`` (edge | cloud | cache) and ``route_reason``; metrics count
  every answer by both, and every error by kind.
``start()`` opens the cache, resolves ``cloud.discovery`` once (when set) and starts the probes and
discovery's refresh loop; ``stop()`` stops them and closes every backend.
``apply_config(config)`` switches to a reloaded config without dropping in-flight requests; the
new request limits apply to every backend too (an embedded edge validates with them).
The cloud pool is ``cloud.workers`` plus the addresses discovery finds (``gateway.discovery``); a
worker that stays (same name and address) is the same ``Backend``, its outlier and latency state
kept. A removed worker (gone from DNS, or from a reloaded config) is drained: no new picks, its
calls in flight finish, then it is closed (after ``cloud.drain_timeout_ms`` at the latest).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

from edgecloud import __version__
from edgecloud.admission import Admission
from edgecloud.clock import Clock, MonotonicClock, Sleep
from edgecloud.dataplane import PROTOCOL_EXTENSIONS
from edgecloud.errors import InferenceError, InvalidArgument
from edgecloud.generation import FINAL_PARAMETER, GenerateRequest
from edgecloud.lifecycle import raise_collected
from edgecloud.loop_lag import LoopLag
from edgecloud.types import InferRequest, InferResponse, ModelMetadata, RequestedOutput, ServerMetadata
from edgecloud.validation import validate_request
from gateway.auth import ApiKeyAuthenticator
from gateway.backend import CLOUD, EDGE, Backend
from gateway.cache import NO_CACHE_PARAMETER, QUALITY_PARAMETER, CacheRequest, Served, build_cache
from gateway.config import GatewayConfig
from gateway.discovery import Resolver, WorkerDiscovery, worker_name
from gateway.dispatch import Dispatcher, DispatchSettings
from gateway.grpc_backend import GrpcBackend
from gateway.latency import LatencyMonitor
from gateway.metadata import MetadataCache
from gateway.metrics import GatewayMetrics
from gateway.pool import CloudPool
from gateway.probes import Prober
from gateway.retry_budget import RetryBudget
from gateway.routing import RouteState, RoutingPolicy
from gateway.where_served import ROUTE_REASON, SERVED_BY
from gateway.streams.dispatch import StreamDispatcher
from gateway.streams.probes import StreamProber
from gateway.streams.requests import as_generative, is_generative
from gateway.streams.requests import parse as parse_generation
from gateway.streams.service import StreamService

__all__ = ["GatewayDataplane", "QUALITIES", "ROUTE_REASON", "SERVED_BY", "SERVER_METADATA"]

log = logging.getLogger(__name__)

QUALITIES = ("auto", "cloud")
"""Values of the ``quality`` request parameter."""
SERVER_METADATA = ServerMetadata("edgecloud-gateway", __version__, PROTOCOL_EXTENSIONS)
DRAIN_POLL_S = 0.05
"""How often a draining backend's calls in flight are counted."""


class GatewayDataplane:
    def __init__(self, config: GatewayConfig, *, clock: Clock | None = None, sleep: Sleep = asyncio.sleep,
                 metrics: GatewayMetrics | None = None, resolver: Resolver | None = None):
        """``resolver`` answers ``cloud.discovery`` (default: the system resolver)."""
        self.config = config
        self.clock = clock or MonotonicClock()
        self._sleep = sleep
        self.metrics = metrics or GatewayMetrics()
        self._resolver = resolver
        self._discovered: list[str] = []
        """Worker addresses discovery found last (``ip:port``)."""
        self.limits = config.limits.to_limits()
        routing = config.routing
        self.monitor = LatencyMonitor(self.clock, window_s=routing.window_ms / 1000.0, ewma_alpha=routing.ewma_alpha,
                                      warmup=routing.warmup_samples)
        self.pool = CloudPool(config.cloud, [self._make_worker(config, name, address)
                                             for name, address in self._worker_specs(config)],
                              self.monitor, self.clock)
        self.policy = RoutingPolicy(routing, self.monitor.stats(EDGE), self.clock,
                                    cloud_statistic=self._cloud_statistic)
        self.retry_budget = RetryBudget(routing.retry_budget.ratio, routing.retry_budget.burst)
        self.lag = LoopLag(self.clock, sleep)
        self.admission = Admission(config.server.max_concurrent_requests,
                                   config.server.overload_retry_after_ms / 1000.0)
        admission = self.admission
        self.metrics.inflight.set_function(lambda: admission.in_flight)  # read at scrape: nothing per request
        self.metrics.backend_rtt.source = self.monitor.snapshot  # computed at scrape, too
        self.auth = ApiKeyAuthenticator(config.auth)
        self.dispatcher = Dispatcher(edge=self._make_edge(config), pool=self.pool, policy=self.policy,
                                     monitor=self.monitor, budget=self.retry_budget,
                                     settings=DispatchSettings.from_config(config), clock=self.clock, sleep=sleep,
                                     metrics=self.metrics, lag=self.lag)
        self.prober = Prober(self.backends, self.monitor, self.policy, routing, clock=self.clock, sleep=sleep,
                             on_round=self._update_gauges, lag=self.lag)
        self.metadata = MetadataCache(self._metadata_sources, self.clock)
        self.cache = build_cache(config.cache, self.metrics.cache)
        # Token streams: the same routing on time to first token, with samples of their own.
        self.ttft = LatencyMonitor(self.clock, window_s=routing.window_ms / 1000.0, ewma_alpha=routing.ewma_alpha,
                                   warmup=0)
        self.inter_token = LatencyMonitor(self.clock, window_s=routing.window_ms / 1000.0,
                                          ewma_alpha=routing.ewma_alpha, warmup=0)
        self.stream_policy = RoutingPolicy(routing, self.ttft.stats(EDGE), self.clock,
                                           cloud_statistic=self._cloud_ttft)
        self.stream_dispatcher = StreamDispatcher(self.dispatcher, policy=self.stream_policy, ttft=self.ttft,
                                                  itl=self.inter_token, settings=routing, clock=self.clock,
                                                  sleep=sleep, metrics=self.metrics)
        self.streams = StreamService(self.stream_dispatcher, self.cache, self.metrics)
        self.stream_prober = StreamProber(lambda: self.edge, self.stream_policy, routing, clock=self.clock,
                                          sleep=sleep, monitor=self.ttft)
        self._stream_probe_task: asyncio.Task | None = None
        self._ready = False
        self._probe_task: asyncio.Task | None = None
        self._lag_task: asyncio.Task | None = None
        self._retired: list[Backend] = []
        """Backends out of service, not closed yet (draining, or waiting for ``stop``)."""
        self._drains: dict[int, asyncio.Task] = {}
        """Drains still waiting for their backend's calls to finish, by ``id(backend)``."""
        self._drain_tasks: set[asyncio.Task] = set()
        self.discovery: WorkerDiscovery | None = self._make_discovery(config)
        self._discovery_task: asyncio.Task | None = None
        self._started = False
        self._count_workers()

    # construction ----------------------------------------------------------------------------

    def _grpc_backend(self, config: GatewayConfig, name: str, role: str, address: str, tls,
                      multiplex: bool) -> GrpcBackend:
        return GrpcBackend(name, role, address, limits=self.limits, max_message_bytes=config.server.max_message_bytes,
                           keepalive_time_ms=config.cloud.keepalive_time_ms,
                           keepalive_timeout_ms=config.cloud.keepalive_timeout_ms,
                           failures_to_down=config.routing.failures_to_down,
                           credentials=tls.grpc_credentials() if tls is not None else None,
                           server_name=tls.server_name if tls is not None else None, multiplex=multiplex)

    def _make_edge(self, config: GatewayConfig) -> Backend | None:
        if config.edge.embedded is not None:
            from gateway.embedded_edge import EmbeddedEdge  # onnxruntime: only a device gateway needs it

            return EmbeddedEdge(EDGE, list(config.edge.embedded.models), config.limits)
        if config.edge.address is None:
            return None
        return self._grpc_backend(config, EDGE, EDGE, config.edge.address, config.edge.tls, config.edge.multiplex)

    def _make_worker(self, config: GatewayConfig, name: str, address: str) -> GrpcBackend:
        return self._grpc_backend(config, name, CLOUD, address, config.cloud.tls, config.cloud.multiplex)

    def _worker_specs(self, config: GatewayConfig) -> list[tuple[str, str]]:
        """(name, address) of every cloud worker: the configured ones, then those discovered at
        addresses not configured already."""
        specs = [(w.name, w.address) for w in config.cloud.named_workers()]
        discovery = config.cloud.discovery
        if discovery is not None:
            configured = {address for _, address in specs}
            specs += [(worker_name(discovery.name_prefix, address), address) for address in self._discovered
                      if address not in configured]
        return specs

    def _make_discovery(self, config: GatewayConfig, known: list[str] | None = None) -> WorkerDiscovery | None:
        if config.cloud.discovery is None:
            return None
        return WorkerDiscovery(config.cloud.discovery, self._on_discovered, clock=self.clock, sleep=self._sleep,
                               resolver=self._resolver, metrics=self.metrics, known=known)

    @property
    def edge(self) -> Backend | None:
        return self.dispatcher.edge

    def backends(self) -> list[Backend]:
        edge = self.edge
        return ([edge] if edge is not None else []) + list(self.pool.workers)

    def _cloud_statistic(self) -> float | None:
        routing = self.config.routing
        return self.pool.statistic(routing.statistic, routing.min_samples)

    def _cloud_ttft(self) -> float | None:
        """The best cloud worker's TTFT statistic (None until some worker has enough samples)."""
        routing = self.config.routing
        values = [self.ttft.stats(w.name).statistic(routing.statistic, min_samples=routing.min_samples)
                  for w in self.pool.workers]
        known = [v for v in values if v is not None]
        return min(known) if known else None

    def _metadata_sources(self) -> list[Backend]:
        """Whoever traffic goes to now first: a slow edge is not asked while the cloud serves."""
        edge = [self.edge] if self.dispatcher.edge_up() else []
        cloud = self.pool.candidates()
        return cloud + edge if self.policy.state is RouteState.CLOUD_FALLBACK else edge + cloud

    # lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        await self.cache.start()
        if self.edge is not None:
            await self.edge.start()
        self._started = True
        if self.discovery is not None:
            await self.discovery.refresh()  # serve from the discovered workers from the start
            self._start_discovery(first_sleep=True)
        self._lag_task = asyncio.create_task(self.lag.run(), name="gateway-loop-lag")
        self._probe_task = asyncio.create_task(self.prober.run(), name="gateway-probes")
        self._stream_probe_task = asyncio.create_task(self.stream_prober.run(), name="gateway-stream-probes")

    async def stop(self) -> None:
        errors: list[Exception] = []
        self._started = False
        tasks = [task for task in (self._probe_task, self._stream_probe_task, self._lag_task, self._discovery_task)
                 if task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._probe_task = self._stream_probe_task = self._lag_task = self._discovery_task = None
        for task in self._drains.values():
            task.cancel()  # still waiting: closed below with the others
        await asyncio.gather(*self._drain_tasks, return_exceptions=True)  # those closing finish
        await self.metadata.close()
        for backend in self.backends() + self._retired:
            try:
                await backend.close()
            except Exception as exc:
                errors.append(exc)
        self._retired.clear()
        try:
            await self.cache.stop()
        except Exception as exc:
            errors.append(exc)
        raise_collected(errors, "stopping the gateway dataplane")

    async def apply_config(self, config: GatewayConfig) -> None:
        """Switch to a new validated config; in-flight requests finish on what they hold."""
        old = self.config
        self.config = config
        self.limits = config.limits.to_limits()
        self.admission.limit = config.server.max_concurrent_requests
        self.admission.retry_after_s = config.server.overload_retry_after_ms / 1000.0
        self.auth = ApiKeyAuthenticator(config.auth)
        routing = config.routing
        self.monitor.reconfigure(routing.window_ms / 1000.0, routing.ewma_alpha, routing.warmup_samples)
        self.ttft.reconfigure(routing.window_ms / 1000.0, routing.ewma_alpha, 0)
        self.inter_token.reconfigure(routing.window_ms / 1000.0, routing.ewma_alpha, 0)
        self.policy.update_settings(routing)
        self.stream_policy.update_settings(routing)
        self.stream_dispatcher.settings = routing
        self.prober.reconfigure(routing)
        self.stream_prober.reconfigure(routing)
        self.retry_budget.reconfigure(routing.retry_budget.ratio, routing.retry_budget.burst)
        self.dispatcher.settings = DispatchSettings.from_config(config)
        if config.edge != old.edge:
            if self.edge is not None:
                self._retire(self.edge)
            self.dispatcher.edge = self._make_edge(config)
            if self.edge is not None:
                await self.edge.start()
        self._reconfigure_discovery(old, config)
        self._set_workers(config, reuse=config.cloud.tls == old.cloud.tls)
        for backend in self.backends():  # those kept hold the old limits
            backend.set_limits(self.limits)
        self.metadata.clear()
        await self.cache.reconfigure(config.cache)

    # the cloud pool's membership ---------------------------------------------------------------

    def _set_workers(self, config: GatewayConfig, *, reuse: bool = True) -> None:
        """Install the workers ``config`` and discovery name: the same ``Backend`` for a worker
        that stays (``reuse``: the connection settings did not change), a new one for a new
        worker, and a drain for each one that left."""
        current = {(w.name, w.address): w for w in self.pool.workers} if reuse else {}
        leaving = [] if reuse else list(self.pool.workers)
        workers = [current.pop(spec, None) or self._make_worker(config, *spec) for spec in self._worker_specs(config)]
        leaving += current.values()
        self.pool.set_workers(config.cloud, workers)
        names = {w.name for w in workers}
        for worker in leaving:
            self._retire(worker)
            if worker.name not in names:
                self.metrics.forget_backend(worker.name)
                self.monitor.forget(worker.name)
        self._count_workers()

    def _on_discovered(self, addresses: list[str]) -> None:
        """Discovery's ``apply``: the addresses the DNS name has now."""
        self._discovered = addresses
        self._set_workers(self.config)

    def _start_discovery(self, *, first_sleep: bool = False) -> None:
        discovery = self.discovery
        if discovery is None:
            return

        async def loop() -> None:
            if first_sleep:
                await self._sleep(discovery.settings.refresh_ms / 1000.0)
            await discovery.run()

        self._discovery_task = asyncio.create_task(loop(), name="gateway-discovery")

    def _reconfigure_discovery(self, old: GatewayConfig, config: GatewayConfig) -> None:
        """A reload that changes ``cloud.discovery`` restarts discovery; one that keeps its name
        keeps the known addresses until the next answer differs."""
        if config.cloud.discovery == old.cloud.discovery:
            if self.discovery is not None:
                self.discovery.settings = config.cloud.discovery
            return
        if self._discovery_task is not None:
            self._discovery_task.cancel()  # ends at its next await; a refresh in flight applies nothing after it
            self._discovery_task = None
        same_name = (old.cloud.discovery is not None and config.cloud.discovery is not None
                     and old.cloud.discovery.dns == config.cloud.discovery.dns)
        if not same_name:
            self._discovered = []
        self.discovery = self._make_discovery(config, known=self._discovered if same_name else None)
        if self._started:
            self._start_discovery()

    def _retire(self, backend: Backend) -> None:
        """Take ``backend`` out of service: it is closed once its calls in flight end (or after
        ``cloud.drain_timeout_ms``), or at ``stop`` if that comes first."""
        self._retired.append(backend)
        try:
            task = asyncio.get_running_loop().create_task(self._drain(backend), name=f"gateway-drain-{backend.name}")
        except RuntimeError:  # no loop (a dataplane reconfigured before it started): stop() closes it
            return
        self._drains[id(backend)] = task
        self._drain_tasks.add(task)
        task.add_done_callback(self._drain_tasks.discard)

    async def _drain(self, backend: Backend) -> None:
        deadline = self.clock.now() + self.config.cloud.drain_timeout_ms / 1000.0
        try:
            while (backend.outstanding > 0 or self.prober.probing(backend)) and self.clock.now() < deadline:
                await self._sleep(DRAIN_POLL_S)
        finally:
            self._drains.pop(id(backend), None)  # from here on, stop() waits for the close
        if backend.outstanding > 0:
            log.warning("%s still had %d calls in flight after %.0f ms of draining; closing it", backend.name,
                        backend.outstanding, self.config.cloud.drain_timeout_ms)
        self._retired.remove(backend)
        self._count_workers()
        try:
            await backend.close()
        except Exception:
            log.exception("closing %s after its drain failed", backend.name)

    def _count_workers(self) -> None:
        configured = len(self.config.cloud.workers)
        gauge = self.metrics.cloud_workers
        gauge.labels("configured").set(configured)
        gauge.labels("discovered").set(len(self.pool.workers) - configured)
        gauge.labels("draining").set(sum(1 for b in self._retired if b.role == CLOUD))

    # the dataplane contract ------------------------------------------------------------------

    def set_ready(self, ready: bool) -> None:
        self._ready = ready

    def live(self) -> bool:
        return True

    def ready(self) -> bool:
        return self._ready and (self.dispatcher.edge_up() or self.pool.available())

    def server_metadata(self) -> ServerMetadata:
        return SERVER_METADATA

    async def model_metadata(self, name: str, version: str = "") -> ModelMetadata:
        return await self.metadata.get(name, version)

    async def model_ready(self, name: str, version: str = "") -> bool:
        await self.metadata.get(name, version)
        return self.ready()

    def precheck(self, request: InferRequest) -> None:
        meta = self.metadata.known(request.model_name, request.model_version)
        if meta is None:
            return
        try:
            validate_request(request, as_generative(meta) if is_generative(meta) else meta, self.limits)
        except InferenceError as exc:
            self.metrics.errors.labels(exc.kind.value).inc()
            raise

    async def infer(self, request: InferRequest) -> InferResponse:
        try:
            with self.admission.admit():
                meta = await self.metadata.get(request.model_name, request.model_version)
                if is_generative(meta):
                    generate, options = self._generation(request, meta)
                    if generate.stream:
                        raise InvalidArgument("true asks for a stream: use ModelStreamInfer or generate_stream",
                                              field="inputs[stream]")
                    return await self._generate_whole(request, generate, options)
                return await self._infer(request, meta)
        except InferenceError as exc:
            self.metrics.errors.labels(exc.kind.value).inc()
            raise

    async def stream(self, request: InferRequest) -> AsyncIterator[InferResponse]:
        """``ModelStreamInfer`` / ``generate_stream`` through the gateway. A generative model's
        request with ``stream: true`` is a token stream (``gateway.streams``: routed on time to
        first token, hedged, failed over mid-answer, cached when deterministic), its chunks
        carrying ``served_by`` / ``route_reason`` on the first and the final one. Any other
        request is served as ``infer`` serves it and answered once, flagged final."""
        try:
            with self.admission.admit():
                meta = await self.metadata.get(request.model_name, request.model_version)
                if not is_generative(meta):
                    response = await self._infer(request, meta)
                    response.parameters[FINAL_PARAMETER] = True
                    yield response
                    return
                generate, options = self._generation(request, meta)
                if not generate.stream:
                    yield await self._generate_whole(request, generate, options)
                    return
                started = time.perf_counter()
                responses = self.streams.stream(request, generate, **options)
                try:
                    async for response in responses:
                        if response.parameters.get(FINAL_PARAMETER) is True:
                            self._count_served(response, started)
                        yield response
                finally:
                    await responses.aclose()
        except InferenceError as exc:
            self.metrics.errors.labels(exc.kind.value).inc()
            raise

    def _generation(self, request: InferRequest, meta: ModelMetadata) -> tuple[GenerateRequest, dict]:
        """A generative request validated (tensors against the metadata, then its prompt and
        sampling) and the options its stream is served with."""
        validate_request(request, as_generative(meta), self.limits)
        generate = parse_generation(request)
        require_cloud = _require_cloud(request)
        deadline = self._deadline(request)
        version = request.model_version or (meta.versions[0] if meta.versions else "")
        self.stream_prober.saw(request.model_name, request.model_version)
        return generate, {"model_version": version, "deadline": deadline, "require_cloud": require_cloud,
                          "bypass_cache": request.parameters.get(NO_CACHE_PARAMETER) is True}

    async def _generate_whole(self, request: InferRequest, generate: GenerateRequest, options: dict) -> InferResponse:
        started = time.perf_counter()
        response = await self.streams.whole(request, generate, **options)
        self._count_served(response, started)
        return response

    def _deadline(self, request: InferRequest) -> float:
        """The client's deadline, or ``routing.default_timeout_ms`` from now when it set none."""
        if request.deadline is not None:
            return request.deadline
        return self.clock.now() + self.config.routing.default_timeout_ms / 1000.0

    def _count_served(self, response: InferResponse, started: float) -> None:
        self.metrics.count_answer(str(response.parameters.get(SERVED_BY, "")),
                                  str(response.parameters.get(ROUTE_REASON, "")), time.perf_counter() - started)

    async def _infer(self, request: InferRequest, meta: ModelMetadata) -> InferResponse:
        started = time.perf_counter()
        validate_request(request, meta, self.limits)
        require_cloud = _require_cloud(request)
        deadline = self._deadline(request)
        if self.cache.serves(request.model_name):
            cache_request = CacheRequest(request, request.model_version or (meta.versions[0] if meta.versions else ""),
                                         _keyed_outputs(request, meta), require_cloud,
                                         request.parameters.get(NO_CACHE_PARAMETER) is True)
            served = await self.cache.serve(cache_request, lambda: self._compute(request, deadline, require_cloud))
        else:
            served = await self._compute(request, deadline, require_cloud)
        response = served.response
        response.parameters[SERVED_BY] = served.served_by
        response.parameters[ROUTE_REASON] = served.reason
        self.dispatcher.after_answer(self.metrics.count_answer, served.served_by, served.reason,
                                     time.perf_counter() - started)
        return response

    def _compute(self, request: InferRequest, deadline: float, require_cloud: bool):
        return self.dispatcher.dispatch(request, deadline, require_cloud=require_cloud)

    # gauges ----------------------------------------------------------------------------------

    def _update_gauges(self) -> None:
        metrics = self.metrics
        for state in RouteState:
            metrics.route_state.labels(state.value).set(1 if self.policy.state is state else 0)
        edge = self.edge
        if edge is not None:
            metrics.backend_up.labels(edge.name).set(1 if edge.up else 0)
            metrics.backend_outstanding.labels(edge.name).set(edge.outstanding)
        for worker in self.pool.workers:
            up = worker.up and not self.pool.detector.is_ejected(worker.name)
            metrics.backend_up.labels(worker.name).set(1 if up else 0)
            metrics.backend_outstanding.labels(worker.name).set(worker.outstanding)


def _require_cloud(request: InferRequest) -> bool:
    quality = request.parameters.get(QUALITY_PARAMETER, "auto")
    if not isinstance(quality, str) or quality not in QUALITIES:
        raise InvalidArgument(f"must be one of {', '.join(QUALITIES)}", field=f"parameters[{QUALITY_PARAMETER}]")
    return quality == "cloud"


def _keyed_outputs(request: InferRequest, meta: ModelMetadata) -> tuple[RequestedOutput, ...]:
    """The requested outputs as they change the answer: naming every output of the model without
    parameters asks for the same answer as naming none."""
    outputs = request.outputs
    if not outputs:
        return ()
    if not any(output.parameters for output in outputs) and \
            {output.name for output in outputs} == {spec.name for spec in meta.outputs}:
        return ()
    return tuple(outputs)
