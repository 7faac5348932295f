"""The REST front: the Open Inference Protocol's HTTP form over any dataplane, with aiohttp.

Contract:
- Routes: ``GET /v2/health/live`` and ``/v2/health/ready`` (200, or 503 with an empty body),
  ``GET /v2`` (server metadata), ``GET /v2/models/{name}[/versions/{version}]`` (model metadata),
  ``GET .../ready``, ``POST .../infer``, and the generate extension's ``POST .../generate`` and
  ``.../generate_stream`` (server-sent events; ``edgecloud.generate_json``) (metrics are served on an operator port of their own:
  ``edgecloud.metrics_http``). The
  model name and version come from the URL path; any in the body are ignored.
- Infer bodies are JSON (``application/json``) or JSON + binary tensors (Triton's binary tensor
  data extension, ``application/octet-stream`` with ``Inference-Header-Content-Length``); a body
  with no Content-Type is accepted (``tritonclient.http`` sends none); any other type is 415, as
  is a ``Content-Encoding`` other than ``CONTENT_ENCODINGS``. A JSON object with a repeated key is
  400 (never silently last-wins).
  Bodies over ``max_body_bytes`` are 413, however they are framed (Content-Length or chunks).
- A body that has not fully arrived ``body_timeout_s`` after its headers is 408; a body whose
  framing turns out malformed (a bad chunk) is 400 at once. Both close the connection. At most
  ``max_connections`` connections are open at once; more are closed when accepted
  (``edgecloud.http_connections``). A client that goes away mid-body ends its request quietly.
- Infer bodies of ``PRECHECK_FROM_BYTES`` or more are decoded with the dataplane's ``precheck``
  (shapes against the model before any tensor data becomes an array); JSON of ``json_decode_threshold_bytes`` or more is parsed in a
  helper process (``edgecloud.body_decoder``), never on the event loop.
- ``X-Request-Timeout-Ms`` sets ``InferRequest.deadline`` (monotonic) and bounds the call: past it
  the client gets 504. A request's ``timeout`` parameter (microseconds: tritonclient's
  ``timeout=``) does the same, as on gRPC; the earlier of the two wins.
- Every error body is ``{"error": message}``: typed ``InferenceError``s get
  ``edgecloud.status.http_status(kind)`` and their message (which names the field); routing errors
  keep aiohttp's status (404, 405); anything unexpected is 500 ``internal error`` with the
  traceback in the log only.
- ``stop(grace)`` reports not ready, stops accepting, lets in-flight requests finish for ``grace``
  seconds, then cancels what is left and closes every connection.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping

from aiohttp import hdrs, web
from aiohttp.web_protocol import RequestPayloadError

from edgecloud import generate_json, json_codec
from edgecloud.codec import PRECHECK_FROM_BYTES, TIMEOUT_PARAMETER
from edgecloud.errors import (
    Cancelled,
    DeadlineExceeded,
    ErrorKind,
    InferenceError,
    InvalidArgument,
    RequestTimeout,
    ResourceExhausted,
    UnsupportedMediaType,
)
from edgecloud.http_connections import GuardedAppRunner, MalformedBody, close_after_response
from edgecloud.allocator import heap_trimmer
from edgecloud.body_decoder import DEFAULT_THRESHOLD_BYTES, BodyDecoder
from edgecloud.deadlines import with_timeout_parameter
from edgecloud.dataplane import InferenceDataplane
from edgecloud.status import http_status
from edgecloud.types import InferRequest, InferResponse

__all__ = ["RestFront", "TIMEOUT_HEADER", "check_body_headers", "deadline_from_header", "read_body"]

log = logging.getLogger(__name__)

JSON = "application/json"
OCTET_STREAM = "application/octet-stream"
TIMEOUT_HEADER = "X-Request-Timeout-Ms"
"""Request header: how long the client will wait, in milliseconds."""
_INFER_TYPES = frozenset({JSON, OCTET_STREAM})
_GENERATE_TYPES = frozenset({JSON})
CONTENT_ENCODINGS = ("identity", "gzip", "deflate")
"""Body encodings the REST front decodes; any other is 415."""
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


OPEN_PATHS = frozenset({"/v2/health/live", "/v2/health/ready"})
TENANT_KEY = web.RequestKey("tenant", str)
CLOSE_AFTER = web.RequestKey("close_after", bool)
"""Set on a request whose connection must close after its (error) answer: its body was not read."""


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=json_codec.error_to_json(message), content_type=JSON, headers=headers)


@web.middleware
async def _translate_errors(request: web.Request, handler: _Handler) -> web.StreamResponse:
    """Every failure becomes a JSON error body, in one place."""
    try:
        return await handler(request)
    except InferenceError as exc:
        headers = {hdrs.RETRY_AFTER: str(math.ceil(exc.retry_after_s))} if exc.retry_after_s else None
        response = _error(http_status(exc.kind), exc.message, headers)
        if request.get(CLOSE_AFTER):
            response.force_close()
            close_after_response(request)
        return response
    except web.HTTPException as exc:  # routing: unknown path, wrong method
        if exc.status < 400:
            raise
        message = "no such route" if isinstance(exc, web.HTTPNotFound) else exc.reason.lower()
        return _error(exc.status, f"{message}: {request.method} {request.path}", _allow(exc))
    except Exception:
        log.exception("unexpected error serving %s %s", request.method, request.path)
        return _error(http_status(ErrorKind.INTERNAL), "internal error")


def _unsupported_encoding(encoding: str) -> UnsupportedMediaType:
    return UnsupportedMediaType(f"{encoding[:32]!r} is not accepted; send one of {', '.join(CONTENT_ENCODINGS)}",
                                field=hdrs.CONTENT_ENCODING)


def _encoding_error_response(encoding: str) -> web.Response:
    error = _unsupported_encoding(encoding)
    return _error(http_status(error.kind), error.message, {"Accept-Encoding": ", ".join(CONTENT_ENCODINGS)})


def check_body_headers(request: web.Request, types: frozenset[str], accepted: str) -> None:
    """415 for a Content-Type outside ``types`` (none at all is accepted: tritonclient sends none)
    or a Content-Encoding this front does not decode."""
    headers = request.headers
    mimetype = headers.get(hdrs.CONTENT_TYPE, "").partition(";")[0].strip().lower()
    if hdrs.CONTENT_TYPE in headers and mimetype not in types:
        raise UnsupportedMediaType(f"{request.content_type!r} is not accepted; send {accepted}",
                                   field=hdrs.CONTENT_TYPE)
    encoding = headers.get(hdrs.CONTENT_ENCODING, "identity").strip().lower()
    if encoding not in CONTENT_ENCODINGS:
        raise _unsupported_encoding(encoding)


def _allow(exc: web.HTTPException) -> dict[str, str] | None:
    allow = exc.headers.get(hdrs.ALLOW)
    return {hdrs.ALLOW: allow} if allow else None


def _header_length(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise InvalidArgument("must be an integer", field=json_codec.HEADER_LENGTH) from None


def deadline_from_header(value: str | None) -> float | None:
    """The monotonic time after which the client stops waiting, from ``X-Request-Timeout-Ms``."""
    if value is None:
        return None
    try:
        milliseconds = float(value)
    except ValueError:
        milliseconds = math.nan
    if not 0 < milliseconds < math.inf:
        raise InvalidArgument("must be a positive number of milliseconds", field=TIMEOUT_HEADER)
    return time.monotonic() + min(milliseconds, 86_400_000) / 1000  # a day is forever; grpc overflows past ~200 years


def _flag(ok: bool) -> web.Response:
    return web.Response() if ok else web.Response(status=http_status(ErrorKind.UNAVAILABLE))


class RestFront:
    """Serves one dataplane over HTTP; holds no logic of its own.

    ``response_headers(response)`` adds headers to each infer answer (where it was served);
    ``extra_routes(app)`` may add routes before the app is frozen.
    """

    def __init__(
        self,
        dataplane: InferenceDataplane,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        max_body_bytes: int = 64 * 1024 * 1024,
        body_timeout_s: float = 5.0,
        max_connections: int | None = 1024,
        json_decode_threshold_bytes: int = DEFAULT_THRESHOLD_BYTES,
        json_decode_processes: int = 1,
        response_headers: Callable[[InferResponse], dict[str, str]] | None = None,
        extra_routes: Callable[[web.Application], None] | None = None,
        ssl_context=None,
        authenticate: Callable[[Mapping[str, str]], str] | None = None,
        reuse_port: bool = False,
    ):
        self.dataplane = dataplane
        self._reuse_port = reuse_port
        self.host = host
        self.port: int | None = None
        self._requested_port = port
        self._max_body_bytes = max_body_bytes
        self._body_timeout_s = body_timeout_s
        self._max_connections = max_connections
        self._decoder_settings = (json_decode_threshold_bytes, json_decode_processes)
        self._decoder = BodyDecoder(*self._decoder_settings)
        self._response_headers = response_headers
        self._extra_routes = extra_routes
        self._ssl_context = ssl_context
        self._authenticate = authenticate
        self._runner: web.AppRunner | None = None
        self._stopping = False

    # lifecycle -------------------------------------------------------------------------------

    def make_app(self) -> web.Application:
        middlewares = [_translate_errors]
        if self._authenticate is not None:
            middlewares.append(self._auth_middleware)
        app = web.Application(client_max_size=self._max_body_bytes, middlewares=middlewares)
        add = app.router.add_route
        add("GET", "/v2/health/live", self._live)
        add("GET", "/v2/health/ready", self._ready)
        add("GET", "/v2", self._server_metadata)
        for model in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
            add("GET", model, self._model_metadata)
            add("GET", model + "/ready", self._model_ready)
            add("POST", model + "/infer", self._infer)
            add("POST", model + "/generate", self._generate)
            add("POST", model + "/generate_stream", self._generate_stream)
        if self._extra_routes is not None:
            self._extra_routes(app)
        return app

    async def start(self) -> int:
        """Listen; returns the bound port (also ``self.port``)."""
        if self._runner is not None:
            raise RuntimeError("already started")
        runner = GuardedAppRunner(self.make_app(), access_log=None, max_connections=self._max_connections,
                                  encoding_error=_encoding_error_response)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self._requested_port, ssl_context=self._ssl_context,
                           reuse_port=self._reuse_port or None)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner, self._stopping = runner, False
        self._decoder = BodyDecoder(*self._decoder_settings)  # a restarted front gets live helpers
        self.port = site.port
        return self.port

    def set_stopping(self) -> None:
        """Report not ready from now on (the server is about to stop)."""
        self._stopping = True

    async def stop(self, grace: float = 5.0) -> None:
        """Not ready, stop accepting, drain in-flight requests for ``grace`` seconds, close."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        self._stopping = True
        # aiohttp takes the drain timeout when the runner is built; the caller decides it only now.
        runner._shutdown_timeout = grace
        await runner.cleanup()
        await self._decoder.close()

    @web.middleware
    async def _auth_middleware(self, request: web.Request, handler: _Handler) -> web.StreamResponse:
        """Health stays open; every other route needs credentials, which name the tenant."""
        if request.path not in OPEN_PATHS:
            request[TENANT_KEY] = self._authenticate(request.headers)
        return await handler(request)

    async def __aenter__(self) -> RestFront:
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.stop(0)

    # handlers --------------------------------------------------------------------------------

    async def _live(self, request: web.Request) -> web.Response:
        return _flag(self.dataplane.live())

    async def _ready(self, request: web.Request) -> web.Response:
        return _flag(not self._stopping and self.dataplane.ready())

    async def _model_ready(self, request: web.Request) -> web.Response:
        match = request.match_info
        ready = await self.dataplane.model_ready(match["name"], match.get("version", ""))
        return _flag(not self._stopping and ready)

    async def _server_metadata(self, request: web.Request) -> web.Response:
        return web.Response(body=json_codec.server_metadata_to_json(self.dataplane.server_metadata()),
                            content_type=JSON)

    async def _model_metadata(self, request: web.Request) -> web.Response:
        match = request.match_info
        meta = await self.dataplane.model_metadata(match["name"], match.get("version", ""))
        return web.Response(body=json_codec.model_metadata_to_json(meta), content_type=JSON)

    async def _infer(self, request: web.Request) -> web.Response:
        headers = request.headers
        check_body_headers(request, _INFER_TYPES, f"{JSON} or {OCTET_STREAM}")
        header_length = _header_length(headers.get(json_codec.HEADER_LENGTH))
        deadline = deadline_from_header(headers.get(TIMEOUT_HEADER))
        match = request.match_info
        body = await self._body(request)
        precheck = self.dataplane.precheck if len(body) >= PRECHECK_FROM_BYTES else None
        decoded = await self._decoder.decode(body, header_length, self.dataplane.limits, model_name=match["name"],
                                             model_version=match.get("version", ""), precheck=precheck)
        decoded.deadline = with_timeout_parameter(deadline, decoded)
        decoded.tenant = request.get(TENANT_KEY, "default")
        if decoded.deadline is None:
            response = await self.dataplane.infer(decoded)
        else:
            scope = asyncio.timeout(decoded.deadline - time.monotonic())
            try:
                async with scope:
                    response = await self.dataplane.infer(decoded)
            except TimeoutError:
                if not scope.expired():
                    raise
                if decoded.deadline == deadline:
                    raise DeadlineExceeded(f"no answer within {headers[TIMEOUT_HEADER]} ms",
                                           field=TIMEOUT_HEADER) from None
                raise DeadlineExceeded(f"no answer within {decoded.parameters[TIMEOUT_PARAMETER]} us",
                                       field=f"parameters[{TIMEOUT_PARAMETER}]") from None
        body, length = json_codec.response_to_json(response, json_codec.requested_binary(decoded))
        out = dict(self._response_headers(response)) if self._response_headers is not None else {}
        if length is None:
            return web.Response(body=body, content_type=JSON, headers=out)
        out[json_codec.HEADER_LENGTH] = str(length)
        return web.Response(body=body, content_type=OCTET_STREAM, headers=out)

    async def _generate_request(self, request: web.Request) -> InferRequest:
        """A generate body as an ``InferRequest``: keys of ``parameters`` that name one of the
        model's inputs become that input (Triton's rule), the rest stay request parameters."""
        headers = request.headers
        check_body_headers(request, _GENERATE_TYPES, JSON)
        match = request.match_info
        name, version = match["name"], match.get("version", "")
        meta = await self.dataplane.model_metadata(name, version)
        decoded = generate_json.generate_request_from_json(await self._body(request), self.dataplane.limits,
                                                           model_name=name, model_version=version)
        inputs = {spec.name: spec for spec in meta.inputs}
        given = {tensor.name for tensor in decoded.inputs}
        for key in [key for key in decoded.parameters if key in inputs and key not in given]:
            decoded.inputs.append(generate_json.input_from_value(key, decoded.parameters.pop(key),
                                                                 self.dataplane.limits))
        decoded.deadline = with_timeout_parameter(deadline_from_header(headers.get(TIMEOUT_HEADER)), decoded)
        decoded.tenant = request.get(TENANT_KEY, "default")
        return decoded

    async def _generate(self, request: web.Request) -> web.Response:
        """The whole answer as one JSON object (``stream: true`` is refused: use generate_stream)."""
        decoded = await self._generate_request(request)
        response = await self.dataplane.infer(decoded)
        out = dict(self._response_headers(response)) if self._response_headers is not None else {}
        return web.Response(body=generate_json.generate_response_to_json(response), content_type=JSON,
                            headers=out)

    async def _generate_stream(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events, one per response. An error before the first response is an ordinary
        error status; one after it is a last ``data: {"error": ...}`` event. A client that goes away
        stops the generation at its next chunk."""
        decoded = await self._generate_request(request)
        responses = self.dataplane.stream(decoded)
        try:
            first = await anext(responses, None)  # validation errors surface here, before any byte
            out = dict(self._response_headers(first)) if self._response_headers and first is not None else {}
            stream = web.StreamResponse(headers={**out, hdrs.CACHE_CONTROL: "no-cache"})
            stream.content_type = "text/event-stream"
            stream.charset = "utf-8"
            await stream.prepare(request)
            try:
                if first is not None:
                    await stream.write(generate_json.sse_event(first))
                async for response in responses:
                    await stream.write(generate_json.sse_event(response))
            except ConnectionError:  # the client left: closing ``responses`` below stops the generation
                return stream
            except InferenceError as exc:
                await stream.write(generate_json.sse_error(exc.message))
            except Exception:
                log.exception("unexpected error in generate_stream")
                await stream.write(generate_json.sse_error("internal error"))
            await stream.write_eof()
            return stream
        finally:
            await responses.aclose()

    async def _body(self, request: web.Request) -> bytes | bytearray:
        body = await read_body(request, self._max_body_bytes, self._body_timeout_s)
        heap_trimmer.after(len(body))
        return body


async def _read_declared(request: web.Request, declared: int) -> bytearray:
    """A plain body of a declared length, copied once into one buffer of that size as it arrives
    (aiohttp's ``read()`` grows a buffer chunk by chunk and copies it again at the end: for a body
    of megabytes that is the larger part of what reading costs the event loop)."""
    buffer = bytearray(declared)
    view = memoryview(buffer)
    got = 0
    while got < declared:
        chunk = await request.content.readany()
        if not chunk:
            break
        end = got + len(chunk)
        if end > declared:  # aiohttp frames by Content-Length: never, but never overrun either
            raise InvalidArgument(f"is longer than its Content-Length of {declared}", field="body")
        view[got:end] = chunk
        got = end
    if got != declared:
        raise ConnectionResetError(f"the body ended after {got} of {declared} bytes")
    return buffer


async def read_body(request: web.Request, limit: int, timeout_s: float) -> bytes | bytearray:
    """The whole body, never buffering more than ``limit`` bytes (plus one read); 413 past it, 408
    when it has not arrived ``timeout_s`` after the headers, 400 when it is malformed."""
    declared = request.content_length
    if declared is not None and declared > limit:
        raise ResourceExhausted(f"{declared} bytes exceed the limit of {limit}", field="body")
    try:
        async with asyncio.timeout(timeout_s):
            if declared is None or request.headers.get(hdrs.CONTENT_ENCODING, "identity").lower() != "identity":
                return await request.read()
            return await _read_declared(request, declared)
    except web.HTTPRequestEntityTooLarge:
        raise ResourceExhausted(f"exceeds the limit of {limit} bytes", field="body") from None
    except RequestPayloadError:
        request[CLOSE_AFTER] = True  # the rest of it would not decode either: do not linger over it
        raise InvalidArgument("could not be read as sent (check Content-Encoding)", field="body") from None
    except MalformedBody as exc:
        request[CLOSE_AFTER] = True
        raise InvalidArgument(f"is not well-formed HTTP: {exc}", field="body") from None
    except TimeoutError:
        request[CLOSE_AFTER] = True
        raise RequestTimeout(f"did not arrive within {timeout_s:g} s of its headers", field="body") from None
    except ConnectionError:  # the client went away mid-body: nobody is left to answer
        raise Cancelled("the client closed the connection", field="body") from None
