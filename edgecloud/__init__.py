"""edgecloud's shared core: protocol types, codec, validation, errors and the one status table,
config, the dataplane contract, the shared gRPC and REST fronts and the server lifecycle every part
(edge agent, cloud worker, gateway) builds on. It imports nothing from those parts."""

from edgecloud.exports import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    "InferRequest": "edgecloud.types",
    "InferResponse": "edgecloud.types",
    "ModelMetadata": "edgecloud.types",
    "RequestedOutput": "edgecloud.types",
    "ServerMetadata": "edgecloud.types",
    "Tensor": "edgecloud.types",
    "TensorSpec": "edgecloud.types",
    "ErrorKind": "edgecloud.errors",
    "InferenceError": "edgecloud.errors",
    "Dataplane": "edgecloud.dataplane",
    "InferenceDataplane": "edgecloud.dataplane",
    "InferenceServer": "edgecloud.server",
    "Lifecycle": "edgecloud.lifecycle",
    "RequestLimits": "edgecloud.limits",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
