"""The gRPC front: a thin Open Inference Protocol servicer over a ``Dataplane``, and a server
with health, reflection, message-size limits and graceful stop.

Contract: every handler decodes with ``edgecloud.codec``, calls the dataplane, encodes; typed
errors become the status from ``edgecloud.status`` and unexpected exceptions become INTERNAL with
a generic message (details go to the log, not the client). ``GrpcServer.stop(grace)`` marks health
NOT_SERVING, lets the inference calls in flight finish and their answers reach the clients
(``InFlightCalls``; calls arriving meanwhile are served too), then stops accepting and closes, all
within ``grace`` seconds.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Mapping

import grpc
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from edgecloud import codec
from edgecloud.allocator import heap_trimmer
from edgecloud.codec import MULTIPLEXED_KEY
from edgecloud.dataplane import InferenceDataplane
from edgecloud.deadlines import MAX_DEADLINE_S, with_timeout_parameter
from edgecloud.errors import InferenceError, InvalidArgument
from edgecloud.rpc_errors import RETRY_AFTER_KEY
from edgecloud.status import grpc_code
from protos import inference_pb2 as pb
from protos import inference_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

DEFAULT_TENANT = "default"
INFERENCE_SERVICE = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name


class Undecodable:
    """Stands in for a request whose bytes are not a valid message, so the handler can answer
    INVALID_ARGUMENT instead of grpc answering UNKNOWN with a Python class name."""


UNDECODABLE = Undecodable()
RAW_METHODS = frozenset({"ModelInfer"})
"""Methods whose handlers take and return serialized messages (decoded once, by the codec)."""
RAW_STREAM_METHODS = frozenset({"ModelStreamInfer"})
"""Bidirectional streams whose handlers take and yield serialized messages."""
STREAM_OUTBOX = 64
"""Responses one stream holds for a client that reads slower than the models answer; then the
requests behind them wait (backpressure reaches generation, nothing piles up)."""


def _safe_deserializer(message_class) -> Callable[[bytes], object]:
    def deserialize(data: bytes):
        try:
            return message_class.FromString(data)
        except DecodeError:
            return UNDECODABLE

    return deserialize


def add_inference_servicer(servicer: pb_grpc.GRPCInferenceServiceServicer, server: grpc.aio.Server) -> None:
    """Register the Open Inference Protocol methods of ``servicer`` (what the generated
    ``add_GRPCInferenceServiceServicer_to_server`` does, with decoding kept in our hands: the
    ``RAW_METHODS`` handlers get the request's bytes and return the response's bytes)."""
    service = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    handlers = {}
    for method in service.methods:
        handler = getattr(servicer, method.name)
        if method.name in RAW_METHODS:
            handlers[method.name] = grpc.unary_unary_rpc_method_handler(handler)
            continue
        if method.name in RAW_STREAM_METHODS:
            handlers[method.name] = grpc.stream_stream_rpc_method_handler(handler)
            continue
        handlers[method.name] = grpc.unary_unary_rpc_method_handler(
            handler,
            request_deserializer=_safe_deserializer(getattr(pb, method.input_type.name)),
            response_serializer=getattr(pb, method.output_type.name).SerializeToString,
        )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, handlers),))


async def abort_with(context: grpc.aio.ServicerContext, exc: InferenceError) -> None:
    """End the call with ``exc``'s status, message and retry hint (trailer ``retry-after``)."""
    metadata = ((RETRY_AFTER_KEY, f"{exc.retry_after_s:.3f}"),) if exc.retry_after_s else ()
    await context.abort(grpc_code(exc.kind), exc.message, trailing_metadata=metadata)


def translate_errors(method: Callable) -> Callable:
    """Map ``InferenceError`` (and anything unexpected) to a gRPC status, in one place."""

    @functools.wraps(method)
    async def wrapper(self, request, context: grpc.aio.ServicerContext):
        try:
            if request is UNDECODABLE:
                raise InvalidArgument("is not a valid Open Inference Protocol message", field="request")
            return await method(self, request, context)
        except InferenceError as exc:
            # The abort is raised from here: drop what would keep the request (megabytes, maybe) alive
            # through the exception's frames until the next full garbage collection.
            exc.__traceback__ = None
            request = None  # noqa: F841
            await abort_with(context, exc)
        except grpc.aio.AbortError:
            raise
        except Exception:
            log.exception("unexpected error in %s", method.__name__)
            await context.abort(grpc.StatusCode.INTERNAL, "internal error")

    return wrapper


def request_deadline(context: grpc.aio.ServicerContext) -> float | None:
    """The client's deadline as a monotonic time, or None when it set none."""
    remaining = context.time_remaining()
    # A day is forever here; larger deadlines (``grpc-timeout: 99999999H``) overflow downstream.
    return None if remaining is None else time.monotonic() + min(remaining, MAX_DEADLINE_S)


Authenticate = Callable[[Mapping[str, str]], str]
"""Credentials (request headers / gRPC metadata) -> tenant; raises ``Unauthenticated``. One with a
``required`` attribute that is False (the gateway's, while its reloadable config has auth off) is
not called over gRPC: the default tenant is used and no metadata is read."""


QUIET_BEFORE_CLOSE_S = 0.1
"""How long a stopping server keeps its connections open after its last inference call answered.
grpc closes a connection as soon as its last call is done once shutdown began; a client still
acknowledging the answer's frames then gets a reset, and Linux drops what it had received and not
yet read: the answer is lost (a 196 KiB answer once in CI; 2-4 of 300 stops with 2 MB answers on a
loaded machine, 0 of 300 with this drain)."""

STOP_RESERVE_S = 1.0
"""What a drain leaves of the grace (at most half of it) for grpc's own stop: the calls still in
flight then finish within it (or are cancelled), as under grpc's stop alone."""


class InFlightCalls:
    """The inference calls a server is answering, counted so a graceful stop can wait for them
    before grpc's own ``stop(grace)``, which sends GOAWAY and closes each connection the moment its
    last call completes and can lose that call's answer (``QUIET_BEFORE_CLOSE_S``).

    Contract: ``enter`` before a call's work, ``leave`` once it is answered, exactly once per
    ``enter``. ``drain(timeout_s)`` returns when no call is in flight and none answered in the last
    ``quiet_s``, or once only the reserve is left of ``timeout_s`` (``STOP_RESERVE_S``, at most
    half); it returns what is left. Calls keep being served meanwhile: one sent before the stop but
    not yet started (grpc's queue, a busy loop) is answered, as is one sent while health already
    says NOT_SERVING and the client's balancer has not moved yet (Kubernetes takes a moment)."""

    __slots__ = ("count", "last_answered", "draining", "_idle", "_on_drain")

    def __init__(self) -> None:
        self.count = 0
        self.last_answered = -math.inf
        self.draining = False
        self._idle: asyncio.Event | None = None
        self._on_drain: set[Callable[[], None]] = set()

    def on_drain(self, stop_reading: Callable[[], None]) -> Callable[[], None]:
        """Call ``stop_reading`` when a drain begins (at once if one has): a multiplexed stream
        stops taking requests so that it can end. Returns what forgets it."""
        if self.draining:
            stop_reading()
            return _nothing
        self._on_drain.add(stop_reading)
        return functools.partial(self._on_drain.discard, stop_reading)

    def enter(self) -> None:
        self.count += 1

    def leave(self) -> None:
        self.count -= 1
        self.last_answered = time.monotonic()
        if not self.count and self._idle is not None:
            self._idle.set()

    async def drain(self, timeout_s: float, quiet_s: float = QUIET_BEFORE_CLOSE_S,
                    reserve_s: float = STOP_RESERVE_S) -> float:
        """Wait as the contract says; returns what is left of ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        self.draining = True
        for stop_reading in list(self._on_drain):
            stop_reading()
        self._on_drain.clear()
        until = deadline - min(reserve_s, timeout_s / 2)
        while (now := time.monotonic()) < until:
            if self.count:
                self._idle = asyncio.Event()
                try:
                    async with asyncio.timeout(until - now):
                        await self._idle.wait()
                except TimeoutError:
                    break
                finally:
                    self._idle = None
                continue
            quiet = self.last_answered + quiet_s - now
            if quiet <= 0:
                break
            await asyncio.sleep(min(quiet, until - now))
        return max(0.0, deadline - time.monotonic())


def _nothing() -> None:
    return None


MULTIPLEXED_CONFIRMATION = ((MULTIPLEXED_KEY, "1"),)


def _multiplexed(context: grpc.aio.ServicerContext) -> bool:
    return any(key == MULTIPLEXED_KEY for key, _ in context.invocation_metadata() or ())


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    """Open Inference Protocol over gRPC for any ``InferenceDataplane``; holds no logic of its own.

    With ``authenticate``, every method but the two server health checks needs credentials, and
    the tenant they name travels with each request. ``calls`` counts the inference calls
    (``ModelInfer``, ``ModelStreamInfer``) for a graceful stop."""

    def __init__(self, dataplane: InferenceDataplane, authenticate: Authenticate | None = None):
        self.dataplane = dataplane
        self._authenticate = authenticate
        self.calls = InFlightCalls()

    def _tenant(self, context: grpc.aio.ServicerContext) -> str:
        authenticate = self._authenticate
        if authenticate is None or not getattr(authenticate, "required", True):
            return DEFAULT_TENANT  # (reading the call's metadata costs a request more than the rest of this)
        return authenticate(dict(context.invocation_metadata() or ()))

    @translate_errors
    async def ServerLive(self, request, context):
        return pb.ServerLiveResponse(live=self.dataplane.live())

    @translate_errors
    async def ServerReady(self, request, context):
        return pb.ServerReadyResponse(ready=self.dataplane.ready())

    @translate_errors
    async def ModelReady(self, request, context):
        self._tenant(context)
        return pb.ModelReadyResponse(ready=await self.dataplane.model_ready(request.name, request.version))

    @translate_errors
    async def ServerMetadata(self, request, context):
        self._tenant(context)
        return codec.server_metadata_to_proto(self.dataplane.server_metadata())

    @translate_errors
    async def ModelMetadata(self, request, context):
        self._tenant(context)
        return codec.model_metadata_to_proto(await self.dataplane.model_metadata(request.name, request.version))

    def _precheck_for(self, message: bytes) -> codec.Precheck | None:
        return self.dataplane.precheck if len(message) >= codec.PRECHECK_FROM_BYTES else None

    @translate_errors
    async def ModelInfer(self, request: bytes, context):
        calls = self.calls
        calls.enter()
        try:
            heap_trimmer.after(len(request))
            tenant = self._tenant(context)
            decoded = codec.request_from_wire(request, self.dataplane.limits, self._precheck_for(request))
            decoded.deadline = with_timeout_parameter(request_deadline(context), decoded)
            decoded.tenant = tenant
            return codec.response_to_wire(await self.dataplane.infer(decoded))
        finally:
            calls.leave()

    async def ModelStreamInfer(self, requests: AsyncIterator[bytes], context):
        """Serve each request on the stream as it arrives, concurrently; answer in
        ``ModelStreamInferResponse``s (a failed request gets an ``error_message`` and the stream
        goes on). When the client half-closes, the stream ends once every request has answered;
        when it cancels, every generation it started stops. On a multiplexed stream
        (``MULTIPLEXED_KEY``) every request is served as ``ModelInfer`` serves it, its one answer
        not flagged final, and a cancel message (``codec.cancel_wire``) drops the work of the
        request it names (read before it, started or not), which then answers nothing; the stream
        stops reading when a drain begins and ends once the requests it started have answered:
        its client resends the rest."""
        calls = self.calls
        calls.enter()
        try:
            tenant = self._tenant(context)
        except InferenceError as exc:
            calls.leave()
            await abort_with(context, exc)
        deadline = request_deadline(context)
        multiplexed = _multiplexed(context)
        outbox: asyncio.Queue[bytes | None] = asyncio.Queue(STREAM_OUTBOX)
        running: set[asyncio.Task] = set()
        by_id: dict[str, asyncio.Task] = {}
        """A multiplexed stream's requests being served, by id (for their cancel messages)."""
        unstarted = 0
        """Requests read whose task has not run yet: their ids are not in ``by_id``."""
        early_cancels: set[str] = set()
        """Cancels read while requests were unstarted: one of those may be what they name."""

        async def serve(raw: bytes) -> None:
            nonlocal unstarted
            unstarted -= 1
            decoded = None
            try:
                decoded = codec.request_from_wire(raw, self.dataplane.limits, self._precheck_for(raw))
                decoded.deadline, decoded.tenant = with_timeout_parameter(deadline, decoded), tenant
                if multiplexed:  # single-answer requests: served as ModelInfer serves them, unflagged
                    ident = decoded.id
                    if early_cancels:
                        dropped = ident in early_cancels
                        early_cancels.discard(ident)
                        if not unstarted:  # every request read has started: the rest named none of them
                            early_cancels.clear()
                        if dropped:  # cancelled before it started: its client expects no answer
                            return
                    by_id[ident] = asyncio.current_task()
                    try:
                        response = await self.dataplane.infer(decoded)
                    finally:
                        by_id.pop(ident, None)
                    await outbox.put(codec.stream_response_to_wire(response))
                    return
                responses = self.dataplane.stream(decoded)
                try:
                    async for response in responses:
                        await outbox.put(codec.stream_response_to_wire(response))
                finally:
                    await responses.aclose()
            except Exception as exc:  # noqa: BLE001 - every failure is answered on the stream, the stream goes on
                named = decoded if decoded is not None else codec.request_naming(raw)
                if isinstance(exc, InferenceError):
                    await outbox.put(codec.stream_error_to_wire(exc.message, named, exc.kind, exc.retry_after_s))
                else:
                    log.exception("unexpected error in ModelStreamInfer")
                    await outbox.put(codec.stream_error_to_wire("internal error", named))

        reading = False
        reading_stopped = False

        async def read() -> None:
            """Start each request as it arrives; once the client half-closes (or its side of the
            stream breaks, or a drain stops a multiplexed stream's reading) and every started
            request has answered, end the stream."""
            nonlocal reading, unstarted
            reading = not reading_stopped
            try:
                if reading:
                    async for raw in requests:
                        if multiplexed and (cancelled := codec.cancelled_id(raw)) is not None:
                            if (task := by_id.get(cancelled)) is not None:
                                task.cancel()
                            elif unstarted:  # its request may be read and not started yet
                                early_cancels.add(cancelled)
                            continue
                        unstarted += 1
                        task = asyncio.create_task(serve(raw))
                        running.add(task)
                        task.add_done_callback(running.discard)
            except asyncio.CancelledError:
                if not reading_stopped:
                    raise
                asyncio.current_task().uncancel()
            except Exception:  # noqa: BLE001 - a broken request stream still lets started requests answer
                log.debug("ModelStreamInfer: the request stream ended with an error", exc_info=True)
            reading = False
            while running:
                await asyncio.wait(set(running))
            await outbox.put(None)

        reader = asyncio.create_task(read())

        def stop_reading() -> None:
            nonlocal reading_stopped
            if not reading_stopped:
                reading_stopped = True
                if reading:  # a read in progress is interrupted; a reader yet to start reads nothing
                    reader.cancel()

        forget = _nothing
        try:
            if multiplexed:
                forget = calls.on_drain(stop_reading)
                if not reading_stopped:  # opened while draining: end at once, unconfirmed (sent later)
                    await context.send_initial_metadata(MULTIPLEXED_CONFIRMATION)
            while (message := await outbox.get()) is not None:
                yield message
            await reader
        finally:
            try:
                for task in (reader, *running):
                    task.cancel()
                await asyncio.gather(reader, *running, return_exceptions=True)
            finally:
                forget()
                calls.leave()


def server_options(max_message_bytes: int, reuse_port: bool = False) -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        # Let clients (the gateway) send keepalive pings so a frozen peer is noticed.
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 1000),
        ("grpc.http2.max_ping_strikes", 0),
        ("grpc.so_reuseport", 1 if reuse_port else 0),
    ]


class GrpcServer:
    """A grpc.aio server for one servicer set, with health and reflection.

    ``register`` is called with the ``grpc.aio.Server`` to add the servicers; ``service_names``
    are the services health and reflection announce; ``calls``, where the servicers count theirs,
    lets ``stop`` drain them before grpc closes the connections (``InFlightCalls``).
    """

    def __init__(
        self,
        register: Callable[[grpc.aio.Server], None],
        service_names: list[str],
        host: str = "127.0.0.1",
        port: int = 0,
        max_message_bytes: int = 64 * 1024 * 1024,
        credentials: grpc.ServerCredentials | None = None,
        reuse_port: bool = False,
        calls: InFlightCalls | None = None,
    ):
        self._register = register
        self._calls = calls
        self._reuse_port = reuse_port
        self._service_names = service_names
        self._address = f"{host}:{port}"
        self._max_message_bytes = max_message_bytes
        self._credentials = credentials
        self._server: grpc.aio.Server | None = None
        self._health = health.aio.HealthServicer()
        self.port: int | None = None

    async def start(self) -> int:
        server = grpc.aio.server(options=server_options(self._max_message_bytes, self._reuse_port))
        self._register(server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection(
            [*self._service_names, health.SERVICE_NAME, reflection.SERVICE_NAME], server
        )
        if self._credentials is not None:
            self.port = server.add_secure_port(self._address, self._credentials)
        else:
            self.port = server.add_insecure_port(self._address)
        if not self.port:
            raise OSError(f"could not bind {self._address}")
        await server.start()
        self._server = server
        await self.set_serving(True)
        return self.port

    async def set_serving(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", *self._service_names):
            await self._health.set(name, status)

    async def stop(self, grace: float | None = 5.0) -> None:
        """Health NOT_SERVING; then, with a grace, the counted calls drained within it
        (``InFlightCalls.drain``); then grpc's stop with what is left of it (calls still in flight
        finish or are cancelled)."""
        if self._server is None:
            return
        await self._health.enter_graceful_shutdown()
        if self._calls is not None and grace:
            grace = await self._calls.drain(grace)
        await self._server.stop(grace)
        self._server = None

    async def wait_for_termination(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()


def inference_server(dataplane: InferenceDataplane, *, authenticate: Authenticate | None = None,
                     **kwargs) -> GrpcServer:
    """A ``GrpcServer`` serving the Open Inference Protocol over ``dataplane``."""
    servicer = InferenceServicer(dataplane, authenticate)
    return GrpcServer(
        lambda server: add_inference_servicer(servicer, server),
        [INFERENCE_SERVICE],
        calls=servicer.calls,
        **kwargs,
    )
