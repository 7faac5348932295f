"""The gateway: one dataplane over a result cache, latency-aware routing and a dispatcher that
hedges and fails over between the edge and a pool of cloud workers. The client SDK is
``gateway.client``; offline tuning is ``gateway.tuning``."""

from edgecloud.exports import lazy_exports

_EXPORTS = {
    "Backend": "gateway.backend",
    "Dispatcher": "gateway.dispatch",
    "GatewayConfig": "gateway.config",
    "GatewayDataplane": "gateway.dataplane",
    "GatewayServer": "gateway.server",
    "GrpcBackend": "gateway.grpc_backend",
    "RoutingPolicy": "gateway.routing",
    "load_gateway_config": "gateway.config",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
