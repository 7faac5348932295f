"""The gateway's one core, called by both fronts: validate, route, hedge, fail over, annotate.

Contract for ``GatewayCore.infer(msg, deadline)``:
- The request is decoded and validated (structure, then against the model's metadata as the
  backends advertise it) before anything is routed; bad input never reaches a backend.
- ``RoutingPolicy`` picks edge or cloud. An edge request not answered within ``hedge_after`` is
  also sent to the cloud; the first answer wins and the loser's RPC is cancelled (which cancels
  it on the upstream server too).
- A retryable failure (UNAVAILABLE, timeouts, overload) moves to another cloud worker or to the
  other side, paid from the retry budget; INVALID_ARGUMENT and the like are returned as they are.
- The client's deadline (or ``default_timeout_ms``) bounds every attempt.
- The response carries ``served_by`` (edge|cloud) and ``route_reason`` parameters; metrics count
  every decision by route and reason.
"""

from __future__ import annotations

import asyncio
import logging
import time

import grpc

from edgecloud import codec
from edgecloud.admission import Admission
from edgecloud.clock import Clock, MonotonicClock
from edgecloud.errors import DeadlineExceeded, InferenceError, NotFound, Overloaded, Unavailable
from edgecloud.types import ModelMetadata
from edgecloud.validation import validate_request
from gateway.auth import ApiKeyAuthenticator
from gateway.cache_api import NO_CACHE_PARAMETER, QUALITY_PARAMETER, CacheRequest, Served, build_cache
from gateway.config import GatewayConfig
from gateway.latency import LatencyMonitor
from gateway.metrics import GatewayMetrics
from gateway.pool import CloudPool
from gateway.retry_budget import RetryBudget
from gateway.routing import Decision, Reason, Route, RouteState, RoutingPolicy
from gateway.upstream import Upstream, UpstreamError
from protos import inference_pb2 as pb

log = logging.getLogger(__name__)

EDGE = "edge"
METADATA_TTL_S = 10.0
SERVED_BY = "served_by"
ROUTE_REASON = "route_reason"


def _remaining(deadline: float) -> float:
    return deadline - time.monotonic()


class GatewayCore:
    def __init__(self, config: GatewayConfig, *, clock: Clock | None = None, metrics: GatewayMetrics | None = None):
        self.config = config
        self.clock = clock or MonotonicClock()
        self.metrics = metrics or GatewayMetrics()
        self.limits = config.limits.to_limits()
        routing = config.routing
        self.monitor = LatencyMonitor(self.clock, window_s=routing.window_ms / 1000.0, ewma_alpha=routing.ewma_alpha)
        self.policy = RoutingPolicy(routing, self.monitor.stats(EDGE), self.clock)
        self.retry_budget = RetryBudget(routing.retry_budget.ratio, routing.retry_budget.burst)
        self.admission = Admission(config.server.max_concurrent_requests,
                                   config.server.overload_retry_after_ms / 1000.0)
        self.auth = ApiKeyAuthenticator(config.auth)
        self.edge: Upstream | None = self._make_edge(config)
        self.pool = CloudPool(config.cloud, [self._make_worker(config, a) for a in config.cloud.workers],
                              self.monitor, self.clock)
        self._metadata: dict[tuple[str, str], tuple[float, ModelMetadata, pb.ModelMetadataResponse]] = {}
        self._metadata_fetches: dict[tuple[str, str], asyncio.Task] = {}
        self._probe_task: asyncio.Task | None = None
        self._probing: dict[str, asyncio.Task] = {}
        self._retired: list[Upstream] = []
        self._probe_msg = self._build_probe(config)
        self.cache = build_cache(config, self.metrics)

    # construction ----------------------------------------------------------------------------

    def _upstream_kwargs(self, config: GatewayConfig, tls) -> dict:
        return dict(max_message_bytes=config.server.max_message_bytes,
                    keepalive_time_ms=config.cloud.keepalive_time_ms,
                    keepalive_timeout_ms=config.cloud.keepalive_timeout_ms,
                    failures_to_down=config.routing.failures_to_down,
                    credentials=tls.grpc_credentials() if tls is not None else None,
                    server_name=tls.server_name if tls is not None else None)

    def _make_edge(self, config: GatewayConfig) -> Upstream | None:
        if config.edge.embedded is not None:
            from gateway.embedded_edge import EmbeddedEdge

            return EmbeddedEdge(EDGE, list(config.edge.embedded.models))  # type: ignore[return-value]
        if config.edge.address is None:
            return None
        return Upstream(EDGE, "edge", config.edge.address, **self._upstream_kwargs(config, config.edge.tls))

    def _make_worker(self, config: GatewayConfig, address: str) -> Upstream:
        return Upstream(f"cloud@{address}", "cloud", address, **self._upstream_kwargs(config, config.cloud.tls))

    @staticmethod
    def _build_probe(config: GatewayConfig) -> pb.ModelInferRequest:
        routing = config.routing
        msg = pb.ModelInferRequest(model_name=routing.probe_model, id="probe")
        msg.inputs.add(name=routing.probe_input, datatype="BYTES", shape=[1])
        msg.raw_input_contents.append(codec.serialize_bytes([routing.probe_text.encode()]))
        return msg

    def upstreams(self) -> list[Upstream]:
        return ([self.edge] if self.edge else []) + list(self.pool.workers)

    # lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        await self.cache.start()
        self._probe_task = asyncio.create_task(self._probe_loop(), name="gateway-probes")

    async def stop(self) -> None:
        if self._probe_task is not None:
            self._probe_task.cancel()
            await asyncio.gather(self._probe_task, return_exceptions=True)
            self._probe_task = None
        for task in [*self._probing.values(), *self._metadata_fetches.values()]:
            task.cancel()
        await asyncio.gather(*self._metadata_fetches.values(), return_exceptions=True)
        await asyncio.gather(*self._probing.values(), return_exceptions=True)
        self._probing.clear()
        for upstream in self.upstreams() + self._retired:
            await upstream.close()
        self._retired.clear()
        await self.cache.stop()

    async def apply_config(self, config: GatewayConfig) -> None:
        """Switch to a new validated config; in-flight requests finish on what they hold."""
        old = self.config
        self.config = config
        self.limits = config.limits.to_limits()
        self.admission.limit = config.server.max_concurrent_requests
        self.admission.retry_after_s = config.server.overload_retry_after_ms / 1000.0
        self.auth = ApiKeyAuthenticator(config.auth)
        routing = config.routing
        self.monitor.reconfigure(routing.window_ms / 1000.0, routing.ewma_alpha)
        self.policy.update_settings(routing)
        self.retry_budget.reconfigure(routing.retry_budget.ratio, routing.retry_budget.burst)
        self._probe_msg = self._build_probe(config)
        if config.edge != old.edge:
            if self.edge is not None:
                self._retired.append(self.edge)
            self.edge = self._make_edge(config)
        current = {w.address: w for w in self.pool.workers} if config.cloud.tls == old.cloud.tls else {}
        workers = [current.pop(a) if a in current else self._make_worker(config, a) for a in config.cloud.workers]
        self._retired.extend(current.values())
        self.pool.set_workers(config.cloud, workers)
        self._metadata.clear()
        await self.cache.reconfigure(config.cache)

    # health ----------------------------------------------------------------------------------

    def edge_up(self) -> bool:
        return self.edge is not None and self.edge.up

    def ready(self) -> bool:
        return self.edge_up() or self.pool.available()

    # metadata --------------------------------------------------------------------------------

    async def model_metadata(self, name: str, version: str = "") -> tuple[ModelMetadata, pb.ModelMetadataResponse]:
        """The model's metadata as the backends advertise it.

        Served from memory; an entry older than ``METADATA_TTL_S`` is refreshed in the background
        while the stale one keeps answering, so no request waits on a (possibly slow) backend for
        it. The first fetch of a model is single-flight: concurrent requests share one.
        """
        key = (name, version)
        cached = self._metadata.get(key)
        if cached is not None:
            if cached[0] <= time.monotonic() and key not in self._metadata_fetches:
                self._metadata_fetches[key] = asyncio.create_task(self._fetch_metadata(key, background=True))
            return cached[1], cached[2]
        task = self._metadata_fetches.get(key)
        if task is None:
            task = self._metadata_fetches[key] = asyncio.create_task(self._fetch_metadata(key, background=False))
        return await asyncio.shield(task)

    async def _fetch_metadata(self, key: tuple[str, str], *, background: bool):
        name, version = key
        try:
            edge = [self.edge] if self.edge_up() else []
            cloud = self.pool.candidates()
            # Ask whoever traffic goes to now: a slow edge is not asked while the cloud serves.
            sources = cloud + edge if self.policy.state is RouteState.CLOUD_FALLBACK else edge + cloud
            last: InferenceError | None = None
            for upstream in sources:
                try:
                    msg = await upstream.model_metadata(name, version, timeout_s=2.0)
                except UpstreamError as exc:
                    if not exc.retryable:
                        raise exc.error from None
                    last = exc.error
                    continue
                meta = codec.model_metadata_from_proto(msg)
                self._metadata[key] = (time.monotonic() + METADATA_TTL_S, meta, msg)
                return meta, msg
            if last is not None or not sources:
                raise Unavailable("no backend is reachable to describe the model")
            raise NotFound(f"unknown model {name!r}", field="model_name")
        except InferenceError:
            if background:
                log.debug("metadata refresh for %s failed; keeping the cached entry", name)
                return None
            raise
        finally:
            self._metadata_fetches.pop(key, None)

    # inference -------------------------------------------------------------------------------

    async def infer(self, msg: pb.ModelInferRequest, deadline: float | None = None,
                    tenant: str = "default") -> pb.ModelInferResponse:
        try:
            with self.admission.admit():
                return await self._infer(msg, deadline, tenant)
        except Overloaded as exc:  # shed by admit(); _infer counts its own errors
            self.metrics.errors.labels(exc.kind.value).inc()
            raise

    async def _infer(self, msg: pb.ModelInferRequest, deadline: float | None, tenant: str) -> pb.ModelInferResponse:
        started = time.perf_counter()
        try:
            request = codec.request_from_proto(msg, self.limits)
            meta, _ = await self.model_metadata(msg.model_name, msg.model_version)
            validate_request(request, meta, self.limits)
            if deadline is None:
                deadline = time.monotonic() + self.config.routing.default_timeout_ms / 1000.0
            params = request.parameters
            require_cloud = params.get(QUALITY_PARAMETER) == "cloud"
            cache_request = CacheRequest(msg, tenant, msg.model_version or (meta.versions[0] if meta.versions else ""),
                                         require_cloud, params.get(NO_CACHE_PARAMETER) is True)
            served = await self.cache.serve(cache_request, lambda: self._route(msg, deadline, require_cloud))
        except InferenceError as exc:
            self.metrics.errors.labels(exc.kind.value).inc()
            raise
        response = served.response
        response.parameters[SERVED_BY].string_param = served.served_by
        response.parameters[ROUTE_REASON].string_param = served.reason
        self.metrics.served.labels(served.served_by, served.reason).inc()
        self.metrics.latency.labels(served.served_by).observe(time.perf_counter() - started)
        return response

    async def _route(self, msg: pb.ModelInferRequest, deadline: float, require_cloud: bool) -> Served:
        """Route one request to a backend (the cache's ``compute``)."""
        self.retry_budget.on_request()
        if require_cloud:
            decision = Decision(Route.CLOUD, Reason.QUALITY_CLOUD, False) if self.pool.available() else \
                Decision(Route.NONE, Reason.NO_BACKEND, False)
        else:
            decision = self.policy.decide(self.edge_up(), self.pool.available())
        self.metrics.decisions.labels(decision.route.value, decision.reason).inc()
        if decision.route is Route.NONE:
            if require_cloud:
                raise Unavailable("a cloud-quality answer was requested and no cloud worker is available")
            raise Unavailable("no backend can serve the request: the edge agent and every cloud worker are "
                              "unavailable")
        if decision.route is Route.EDGE:
            response, served_by, reason = await self._via_edge(msg, deadline, decision)
        elif require_cloud:
            try:
                response, served_by, reason = await self._cloud_attempts(msg, deadline), "cloud", decision.reason
            except UpstreamError as exc:
                raise _as_client_error(exc) from None
        else:
            response, served_by, reason = await self._via_cloud(msg, deadline, decision.reason)
        return Served(response, served_by, reason)

    async def _edge_attempt(self, msg: pb.ModelInferRequest, deadline: float) -> pb.ModelInferResponse:
        edge = self.edge
        assert edge is not None
        timeout = _remaining(deadline)
        if self.config.edge.attempt_timeout_ms is not None:
            timeout = min(timeout, self.config.edge.attempt_timeout_ms / 1000.0)
        if timeout <= 0:
            raise DeadlineExceeded("the request's deadline passed")
        start = time.monotonic()
        try:
            response = await edge.infer(msg, timeout)
        except asyncio.CancelledError:
            # Lost to a hedge (or the client left): the edge took at least this long.
            self._record_edge(time.monotonic() - start)
            raise
        except UpstreamError as exc:
            if exc.code.name == "DEADLINE_EXCEEDED":
                self._record_edge(time.monotonic() - start)
            raise
        self._record_edge(time.monotonic() - start)
        return response

    def _record_edge(self, rtt_s: float) -> None:
        self.monitor.record(EDGE, rtt_s)
        self.policy.observe_edge(rtt_s)

    async def _via_edge(self, msg, deadline: float, decision: Decision):
        loop = asyncio.get_running_loop()
        edge_task = loop.create_task(self._edge_attempt(msg, deadline))
        tasks = {edge_task}
        try:
            if decision.hedge:
                hedge_after = min(self.config.routing.hedge_after_s, max(0.0, _remaining(deadline)))
                done, _ = await asyncio.wait(tasks, timeout=hedge_after)
                if not done:
                    cloud_task = loop.create_task(self._cloud_attempts(msg, deadline))
                    tasks.add(cloud_task)
                    winner = await self._first_success(tasks)
                    tasks.discard(winner)
                    self.metrics.hedges.labels("cloud" if winner is cloud_task else "edge").inc()
                    if winner is cloud_task:
                        return winner.result(), "cloud", Reason.HEDGE_WON
                    return winner.result(), "edge", decision.reason
            try:
                return await edge_task, "edge", decision.reason
            except UpstreamError as exc:
                if not exc.retryable:
                    raise exc.error from None
                if _remaining(deadline) <= 0:
                    raise DeadlineExceeded("the request's deadline passed") from None
                if not self.pool.available() or not self._spend_retry():
                    raise exc.error from None
                return await self._cloud_attempts(msg, deadline), "cloud", Reason.FAILOVER
        finally:
            for task in tasks:
                if not task.done():
                    task.cancel()

    async def _first_success(self, tasks: set[asyncio.Task]) -> asyncio.Task:
        """The first task to succeed; if all fail, the most useful failure is raised."""
        pending = set(tasks)
        errors: list[BaseException] = []
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task.exception() is None:
                    return task
                errors.append(task.exception())
        for error in errors:
            if isinstance(error, UpstreamError) and not error.retryable:
                raise error.error from None
        raise _as_client_error(errors[-1]) from None

    def _spend_retry(self) -> bool:
        allowed = self.retry_budget.try_spend()
        self.metrics.retries.labels("allowed" if allowed else "refused").inc()
        return allowed

    async def _cloud_attempts(self, msg, deadline: float) -> pb.ModelInferResponse:
        """Try cloud workers until one answers; retries go to other workers, from the budget."""
        tried: set[str] = set()
        last: BaseException | None = None
        attempt_timeout = self.config.cloud.attempt_timeout_ms / 1000.0
        while True:
            worker = self.pool.pick(tried)
            if worker is None or (tried and not self._spend_retry()):
                break
            remaining = _remaining(deadline)
            if remaining <= 0:
                raise DeadlineExceeded("the request's deadline passed")
            tried.add(worker.name)
            start = time.monotonic()
            try:
                response = await worker.infer(msg, min(attempt_timeout, remaining))
            except UpstreamError as exc:
                if exc.server_error and self.pool.on_failure(worker):
                    self.metrics.ejections.inc()
                if not exc.retryable:
                    raise
                last = exc
                continue
            self.monitor.record(worker.name, time.monotonic() - start)
            self.pool.on_success(worker)
            return response
        if last is not None:
            raise last
        raise UpstreamError("cloud", _UNAVAILABLE, Unavailable("no cloud worker is available"))

    async def _via_cloud(self, msg, deadline: float, reason: str):
        try:
            return await self._cloud_attempts(msg, deadline), "cloud", reason
        except UpstreamError as exc:
            if not exc.retryable:
                raise exc.error from None
            if _remaining(deadline) <= 0:
                raise DeadlineExceeded("the request's deadline passed") from None
            if not self.edge_up():
                raise Unavailable("the cloud could not serve the request and the edge is unavailable") from None
            if not self._spend_retry():
                raise Unavailable("the cloud could not serve the request and the retry budget is spent") from None
        try:
            return await self._edge_attempt(msg, deadline), "edge", Reason.FAILOVER
        except UpstreamError as exc:
            raise _as_client_error(exc) from None

    # probes ----------------------------------------------------------------------------------

    async def _probe_loop(self) -> None:
        while True:
            for upstream in self.upstreams():
                task = self._probing.get(upstream.name)
                if task is None or task.done():
                    self._probing[upstream.name] = asyncio.create_task(self._probe(upstream))
            self._update_gauges()
            await asyncio.sleep(self.config.routing.probe_interval_ms / 1000.0)

    async def _probe(self, upstream: Upstream) -> None:
        timeout = self.config.routing.probe_timeout_ms / 1000.0
        start = time.monotonic()
        try:
            rtt: float | None = await upstream.probe(self._probe_msg, timeout)
        except UpstreamError as exc:
            if exc.server_error:
                upstream.mark_failure()
                rtt = None
            else:  # it answered (e.g. the probe model is not there): reachable, and this fast
                upstream.mark_success()
                rtt = time.monotonic() - start
        except Exception:
            log.exception("probe of %s failed unexpectedly", upstream.role)
            upstream.mark_failure()
            rtt = None
        if rtt is not None:
            self.monitor.record(upstream.name, rtt, probe=True)
        if upstream is self.edge:
            self.policy.observe_probe(rtt)

    def _update_gauges(self) -> None:
        for name, stats in self.monitor.snapshot().items():
            for key in ("ewma_ms", "p95_ms"):
                if stats[key] is not None:
                    self.metrics.backend_rtt.labels(name, key[:-3]).set(stats[key] / 1000.0)
        for state in ("edge_preferred", "cloud_fallback"):
            self.metrics.route_state.labels(state).set(1 if self.policy.state.value == state else 0)
        if self.edge is not None:
            self.metrics.backend_up.labels(EDGE).set(1 if self.edge.up else 0)
        for worker in self.pool.workers:
            up = worker.up and not self.pool.detector.is_ejected(worker.name)
            self.metrics.backend_up.labels(worker.name).set(1 if up else 0)




_UNAVAILABLE = grpc.StatusCode.UNAVAILABLE


def _as_client_error(error: BaseException) -> InferenceError:
    if isinstance(error, UpstreamError):
        return error.error
    if isinstance(error, InferenceError):
        return error
    return Unavailable("no backend could serve the request")
