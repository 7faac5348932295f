"""The edge agent: INT8 ONNX Runtime inference, embeddable in-process (``EdgeAgent``) or served
over gRPC and HTTP (``EdgeServer``). Needs onnxruntime, never torch."""

from edgecloud.exports import lazy_exports

_EXPORTS = {
    "EdgeAgent": "edge_agent.agent",
    "EdgeConfig": "edge_agent.config",
    "EdgeServer": "edge_agent.server",
    "ModelSettings": "edge_agent.config",
    "load_edge_config": "edge_agent.config",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
