"""The edgecloud client SDK: call the gateway (or any Open Inference Protocol server) over gRPC.

``Client`` (blocking) and ``AsyncClient`` (asyncio) share one API: ``infer``, ``embed``,
``generate`` / ``chat`` (token streams: iterators of ``GenerationChunk``),
``server_live``, ``server_ready``, ``model_ready``, ``server_metadata``, ``model_metadata``.
Failures are ``edgecloud.errors.InferenceError`` subclasses (re-exported here). Needs only grpcio,
protobuf, numpy and the edgecloud core — never torch or onnxruntime.

    with Client("127.0.0.1:8001") as client:
        result = client.embed(["hello", "world"])
        print(result.embeddings.shape, result.served_by)
"""

from edgecloud.errors import (
    Cancelled,
    DeadlineExceeded,
    ErrorKind,
    FailedPrecondition,
    InferenceError,
    InternalError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    Unimplemented,
    UnsupportedMediaType,
)
from edgecloud.types import ModelMetadata, ServerMetadata, TensorSpec
from gateway.client.async_client import AsyncClient
from gateway.client.generation import GenerationChunk
from gateway.client.results import Classification, ClassifyResult, EmbedResult, InferResult
from gateway.client.retry import Jitter, RetryPolicy
from gateway.client.sync_client import Client
from gateway.client.tls import TlsOptions

__all__ = [
    "AsyncClient",
    "Cancelled",
    "Classification",
    "ClassifyResult",
    "Client",
    "DeadlineExceeded",
    "EmbedResult",
    "ErrorKind",
    "FailedPrecondition",
    "GenerationChunk",
    "InferResult",
    "InferenceError",
    "InternalError",
    "InvalidArgument",
    "Jitter",
    "ModelMetadata",
    "NotFound",
    "PermissionDenied",
    "ResourceExhausted",
    "RetryPolicy",
    "ServerMetadata",
    "TensorSpec",
    "TlsOptions",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "UnsupportedMediaType",
]
