"""A backend reached over gRPC: an edge agent, a cloud worker, or any Open Inference Protocol
server (Triton, KServe, MLServer).

Contract (see ``gateway.backend.Backend``): ``infer`` sends the request's serialized form (its
``wire`` bytes unchanged when it came over gRPC) and returns the response, keeping the upstream's
bytes as its ``wire`` (its outputs are decoded only if something reads them: ``codec.WireResponse``).
With ``multiplex``, requests ride one ``ModelStreamInfer`` stream once the backend confirms it
(``gateway.multiplexed``), unary calls before that, for a server that does not, for what a
stopping server's stream left unstarted, and for requests over ``MULTIPLEX_MAX_BYTES``.
A failure is translated once (``edgecloud.rpc_errors``) into the typed error, its retry hint kept;
for failures of the backend itself (unreachable, timed out, internal) grpc's details, which name
addresses, go to the log and the error says only what failed. A response the codec rejects (or
whose outputs then do not decode) is the backend's fault (INTERNAL). Cancelling a call cancels it
upstream (``edgecloud.grpc_calls.unary``). The channel is created at first use, on the running
event loop.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager

import grpc

from edgecloud import codec
from edgecloud.errors import ErrorKind, InferenceError, InternalError, Unavailable, error_for_kind
from edgecloud.generation import FINAL_PARAMETER
from edgecloud.grpc_calls import cancel_in_core, unary
from edgecloud.limits import RequestLimits
from edgecloud.rpc_errors import error_from_rpc
from edgecloud.types import InferRequest, InferResponse, ModelMetadata
from gateway.backend import Backend
from gateway.multiplexed import MULTIPLEXED_METADATA, Multiplexer, NotStarted
from protos import inference_pb2 as pb

__all__ = ["GrpcBackend", "channel_options"]

log = logging.getLogger(__name__)

_SERVICE = "/" + pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
MULTIPLEX_MAX_BYTES = 1 << 20
"""A request larger than this goes as a unary call even when a multiplexed stream is open: on the
stream it would hold back every request behind it, and an oversize message fails a whole stream
(every request on it), a unary call only itself."""
FAULT_MESSAGES = {
    ErrorKind.UNAVAILABLE: "a backend is unavailable",
    ErrorKind.DEADLINE_EXCEEDED: "a backend did not answer in time",
    ErrorKind.INTERNAL: "a backend failed",
}


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


class GrpcBackend(Backend):
    def __init__(self, name: str, role: str, address: str, *, limits: RequestLimits,
                 max_message_bytes: int = 64 * 1024 * 1024, keepalive_time_ms: int = 2000,
                 keepalive_timeout_ms: int = 1000, failures_to_down: int = 2,
                 credentials: grpc.ChannelCredentials | None = None, server_name: str | None = None,
                 multiplex: bool = True):
        super().__init__(name, role, failures_to_down=failures_to_down)
        self.address = address
        self._limits = limits
        self._options = channel_options(max_message_bytes, keepalive_time_ms, keepalive_timeout_ms)
        if server_name:
            self._options.append(("grpc.ssl_target_name_override", server_name))
        self._credentials = credentials
        self._channel: grpc.aio.Channel | None = None
        self._infer_call: Callable | None = None
        self._stream_call: Callable | None = None
        self._metadata_call: Callable | None = None
        self._multiplex = multiplex
        self._mux: Multiplexer | None = None
        self._closed = False

    def _connect(self) -> None:
        if self._closed:  # retired (drained, or the gateway stopping): never open a channel again
            raise Unavailable(f"{self.name} has left the pool")
        if self._credentials is not None:
            channel = grpc.aio.secure_channel(self.address, self._credentials, options=self._options)
        else:
            channel = grpc.aio.insecure_channel(self.address, options=self._options)
        self._channel = channel
        # Serialized messages in and out: the codec decodes each once.
        self._infer_call = channel.unary_unary(f"{_SERVICE}/ModelInfer")
        self._stream_call = channel.stream_stream(f"{_SERVICE}/ModelStreamInfer")
        self._metadata_call = channel.unary_unary(
            f"{_SERVICE}/ModelMetadata", request_serializer=pb.ModelMetadataRequest.SerializeToString,
            response_deserializer=pb.ModelMetadataResponse.FromString)
        if self._multiplex:
            stream_call = self._stream_call
            self._mux = Multiplexer(f"{self.name} ({self.address})", lambda: stream_call(metadata=MULTIPLEXED_METADATA),
                                    self._translate)

    def _translate(self, exc: grpc.aio.AioRpcError) -> InferenceError:
        error = error_from_rpc(exc)
        if error.kind in FAULT_MESSAGES:
            log.debug("%s (%s) failed: %s: %s", self.name, self.address, exc.code().name, exc.details())
            error = error_for_kind(error.kind, FAULT_MESSAGES[error.kind], retry_after_s=error.retry_after_s)
        return error

    @contextmanager
    def _translated(self) -> Iterator[None]:
        try:
            yield
        except grpc.aio.AioRpcError as exc:
            raise self._translate(exc) from exc

    async def infer(self, request: InferRequest, timeout_s: float | None) -> InferResponse:
        """The request's answer: over the multiplexed stream when there is one to use (a request
        the backend ended the stream without starting goes unary), else as a unary call."""
        if self._infer_call is None:
            self._connect()
        wire = codec.request_to_wire(request)
        mux = self._mux
        if mux is not None:
            if not mux.ready():
                mux.open_when_due()
            elif len(wire) <= MULTIPLEX_MAX_BYTES:  # a larger one goes alone: no head-of-line blocking
                try:
                    body, message = await mux.infer(wire, request.id, timeout_s)
                except NotStarted:
                    pass
                else:
                    return self._response(body, message)
        return await self._unary(wire, timeout_s)

    async def _unary(self, wire: bytes, timeout_s: float | None) -> InferResponse:
        try:  # not ``_translated()``: a generator context manager costs microseconds per request
            body = await unary(self._infer_call(wire, timeout=timeout_s))
        except grpc.aio.AioRpcError as exc:
            raise self._translate(exc) from exc
        return self._response(body)

    def _response(self, body: bytes, message: pb.ModelInferResponse | None = None) -> InferResponse:
        try:
            if message is not None:
                return codec.response_from_message(message, body, self._limits)
            return codec.response_from_wire(body, self._limits)
        except InferenceError as exc:
            log.warning("%s (%s) sent a malformed response: %s", self.name, self.address, exc.message)
            raise InternalError("a backend sent a malformed response") from exc

    async def stream(self, request: InferRequest, timeout_s: float | None) -> AsyncIterator[InferResponse]:
        """One request on its own ``ModelStreamInfer`` call (half-closed at once), its responses
        until the final one; the call is cancelled upstream when the iterator is closed early."""
        if self._stream_call is None:
            self._connect()
        call = self._stream_call(timeout=timeout_s)
        try:
            with self._translated():
                await call.write(codec.request_to_wire(request))
                await call.done_writing()
                while True:
                    raw = await call.read()
                    if raw is grpc.aio.EOF:
                        break
                    response = self._stream_message(raw)
                    yield response
                    if response.parameters.get(FINAL_PARAMETER) is True:
                        return
            raise InternalError("a backend ended a stream before its final response")
        finally:
            if not call.done():
                cancel_in_core(call)

    def _stream_message(self, raw: bytes) -> InferResponse:
        """One ``ModelStreamInferResponse``: its response part decoded with the part's own bytes
        kept as the response's ``wire`` (relayed downstream without encoding again), or the error
        it reports."""
        inner = codec.stream_response_part(raw)
        try:
            if inner is not None:
                return codec.decoded_response_from_wire(inner, self._limits)  # a bad chunk fails here
            message = pb.ModelStreamInferResponse.FromString(raw)
            if not message.error_message:
                return codec.response_from_proto(message.infer_response, self._limits)
        except Exception as exc:
            log.warning("%s (%s) sent a malformed stream response: %s", self.name, self.address, exc)
            raise InternalError("a backend sent a malformed response") from exc
        raise codec.stream_error_from_proto(message)

    async def probe(self, request: InferRequest, timeout_s: float) -> None:
        await self.infer(request, timeout_s)

    async def model_metadata(self, name: str, version: str, timeout_s: float) -> ModelMetadata:
        if self._metadata_call is None:
            self._connect()
        with self._translated():
            msg = await unary(self._metadata_call(pb.ModelMetadataRequest(name=name, version=version),
                                                  timeout=timeout_s))
        return codec.model_metadata_from_proto(msg)

    def set_limits(self, limits: RequestLimits) -> None:
        self._limits = limits

    async def close(self) -> None:
        """Close the channel for good: a call that comes later fails UNAVAILABLE (and is retried
        elsewhere) instead of opening a channel nobody would close."""
        self._closed = True
        channel, self._channel = self._channel, None
        self._infer_call = self._stream_call = self._metadata_call = None
        mux, self._mux = self._mux, None
        if mux is not None:
            await mux.close()
        if channel is not None:
            await channel.close()
