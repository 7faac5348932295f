"""A connection to one upstream Open Inference Protocol server (edge agent or cloud worker).

Contract: ``infer`` forwards a ``ModelInferRequest`` unchanged and returns the upstream's
response; a gRPC failure is translated once into ``UpstreamError`` carrying the typed error for
the client, whether another backend may be tried (``retryable``) and whether it counts as a
server-side failure for outlier ejection (``server_error``). Messages never name the upstream's
address. ``outstanding`` counts in-flight calls; ``up`` turns False after ``failures_to_down``
consecutive connection failures and True again on any success.
"""

from __future__ import annotations

import contextlib
import logging
import time

import grpc

from edgecloud.errors import InferenceError, error_for_kind
from edgecloud.grpc_calls import unary
from edgecloud.status import kind_from_grpc
from protos import inference_pb2 as pb
from protos import inference_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED,
             grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.CANCELLED,
             grpc.StatusCode.ABORTED}
SERVER_ERRORS = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.INTERNAL,
                 grpc.StatusCode.UNKNOWN, grpc.StatusCode.ABORTED}


class UpstreamError(Exception):
    def __init__(self, backend: str, code: grpc.StatusCode, error: InferenceError):
        super().__init__(f"{backend}: {code.name}: {error.message}")
        self.backend = backend
        self.code = code
        self.error = error
        self.retryable = code in RETRYABLE
        self.server_error = code in SERVER_ERRORS


def channel_options(max_message_bytes: int, keepalive_time_ms: int, keepalive_timeout_ms: int) -> list[tuple]:
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.keepalive_time_ms", keepalive_time_ms),
        ("grpc.keepalive_timeout_ms", keepalive_timeout_ms),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 1000),
        ("grpc.enable_retries", 0),
    ]


class Upstream:
    def __init__(self, name: str, role: str, address: str, *, max_message_bytes: int = 64 * 1024 * 1024,
                 keepalive_time_ms: int = 2000, keepalive_timeout_ms: int = 1000, failures_to_down: int = 2,
                 credentials: grpc.ChannelCredentials | None = None, server_name: str | None = None):
        self.name = name
        self.role = role
        self.address = address
        self.failures_to_down = failures_to_down
        self._options = channel_options(max_message_bytes, keepalive_time_ms, keepalive_timeout_ms)
        if server_name:
            self._options.append(("grpc.ssl_target_name_override", server_name))
        self._credentials = credentials
        self._channel: grpc.aio.Channel | None = None
        self._stub: pb_grpc.GRPCInferenceServiceStub | None = None
        self.outstanding = 0
        self.up = True
        self._connect_failures = 0

    @property
    def stub(self) -> pb_grpc.GRPCInferenceServiceStub:
        """The stub, on a channel created at first use (grpc.aio channels belong to the running loop)."""
        if self._stub is None:
            if self._credentials is not None:
                self._channel = grpc.aio.secure_channel(self.address, self._credentials, options=self._options)
            else:
                self._channel = grpc.aio.insecure_channel(self.address, options=self._options)
            self._stub = pb_grpc.GRPCInferenceServiceStub(self._channel)
        return self._stub

    @contextlib.asynccontextmanager
    async def _call(self, counted: bool = True):
        """Translate failures once; ``counted`` calls are load (``outstanding``), probes are not."""
        if counted:
            self.outstanding += 1
        try:
            yield
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            if code == grpc.StatusCode.UNAVAILABLE:
                self._connect_failures += 1
                if self._connect_failures >= self.failures_to_down:
                    self.up = False
            kind = kind_from_grpc(code)
            if code in SERVER_ERRORS:
                # grpc's details name addresses and internals: log them, tell the client only what failed.
                log.info("%s (%s) failed: %s: %s", self.role, self.address, code.name, exc.details())
                message = f"{self.role}: {code.name.lower()}"
            else:
                message = f"{self.role}: {exc.details() or code.name}"
            raise UpstreamError(self.name, code, error_for_kind(kind, message)) from exc
        else:
            self.mark_success()
        finally:
            if counted:
                self.outstanding -= 1

    def mark_success(self) -> None:
        self._connect_failures = 0
        self.up = True

    def mark_failure(self) -> None:
        self._connect_failures += 1
        if self._connect_failures >= self.failures_to_down:
            self.up = False

    async def infer(self, msg: pb.ModelInferRequest, timeout_s: float | None) -> pb.ModelInferResponse:
        async with self._call():
            return await unary(self.stub.ModelInfer(msg, timeout=timeout_s))

    async def probe(self, msg: pb.ModelInferRequest, timeout_s: float) -> float:
        """Round-trip seconds of one small real inference (not counted as load)."""
        start = time.monotonic()
        async with self._call(counted=False):
            await unary(self.stub.ModelInfer(msg, timeout=timeout_s))
        return time.monotonic() - start

    async def model_metadata(self, name: str, version: str, timeout_s: float) -> pb.ModelMetadataResponse:
        async with self._call(counted=False):
            return await unary(self.stub.ModelMetadata(pb.ModelMetadataRequest(name=name, version=version),
                                                       timeout=timeout_s))

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
            self._stub = None
