"""The gateway's REST front: the shared ``RestFront`` over an adapter of ``GatewayCore``.

Contract: REST requests are encoded to the same ``ModelInferRequest`` the gRPC front receives and
run through ``GatewayCore.infer``; the where-served information goes into the response parameters
and into the ``X-Edgecloud-Served-By`` / ``X-Edgecloud-Route-Reason`` headers. ``/metrics`` serves
the gateway's Prometheus registry.
"""

from __future__ import annotations

from aiohttp import web

from edgecloud import codec
from edgecloud.http_front import RestFront
from edgecloud.types import InferRequest, InferResponse, ModelMetadata, ServerMetadata
from gateway.core import ROUTE_REASON, SERVED_BY, GatewayCore
from gateway.grpc_front import SERVER_METADATA

SERVED_BY_HEADER = "X-Edgecloud-Served-By"
ROUTE_REASON_HEADER = "X-Edgecloud-Route-Reason"


class GatewayRestDataplane:
    """``GatewayCore`` seen through the dataplane interface the REST front expects."""

    def __init__(self, core: GatewayCore):
        self.core = core

    @property
    def limits(self):
        return self.core.limits

    def live(self) -> bool:
        return True

    def ready(self) -> bool:
        return self.core.ready()

    def server_metadata(self) -> ServerMetadata:
        return SERVER_METADATA

    async def model_metadata(self, name: str, version: str = "") -> ModelMetadata:
        meta, _ = await self.core.model_metadata(name, version)
        return meta

    async def model_ready(self, name: str, version: str = "") -> bool:
        await self.core.model_metadata(name, version)
        return self.core.ready()

    async def infer(self, request: InferRequest) -> InferResponse:
        response = await self.core.infer(codec.request_to_proto(request), request.deadline, request.tenant)
        return codec.response_from_proto(response, self.core.limits)


def where_served_headers(response: InferResponse) -> dict[str, str]:
    headers = {}
    if SERVED_BY in response.parameters:
        headers[SERVED_BY_HEADER] = str(response.parameters[SERVED_BY])
    if ROUTE_REASON in response.parameters:
        headers[ROUTE_REASON_HEADER] = str(response.parameters[ROUTE_REASON])
    return headers


def _latency_trace_route(core: GatewayCore):
    async def handler(request: web.Request) -> web.Response:
        """``GET /v2/debug/latency-trace?since=T``: per-backend RTT samples (``edgecloud tune record``)."""
        try:
            since = float(request.query.get("since", "-inf"))
        except ValueError:
            return web.json_response({"error": "since: must be a number"}, status=400)
        samples = [{"t": t, "backend": "edge" if backend == "edge" else "cloud", "rtt_ms": rtt * 1000.0,
                    "probe": probe} for t, backend, rtt, probe in core.monitor.trace.since(since)]
        return web.json_response({"now": core.monitor.clock.now(),
                                  "threshold_ms": core.config.routing.threshold_ms, "samples": samples})

    def add(app: web.Application) -> None:
        app.router.add_get("/v2/debug/latency-trace", handler)

    return add


def gateway_rest_front(core: GatewayCore, *, host: str, port: int, max_body_bytes: int,
                       ssl_context=None) -> RestFront:
    return RestFront(GatewayRestDataplane(core), host=host, port=port, max_body_bytes=max_body_bytes,
                     metrics_text=core.metrics.exposition, response_headers=where_served_headers,
                     extra_routes=_latency_trace_route(core), ssl_context=ssl_context,
                     authenticate=lambda headers: core.auth.tenant_for(headers))
