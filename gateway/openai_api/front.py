"""The OpenAI-compatible API on the gateway's HTTP front: a thin transport over the dataplane's
token streams (everything else — routing on TTFT, hedging, mid-stream failover, the cache — is the
dataplane's, exactly as for ``generate_stream`` and ``ModelStreamInfer``).

Contract:
- ``POST /v1/chat/completions``: the messages are rendered with the model's own chat template (its
  metadata's ``chat_template``); a model without one is refused (use ``/v1/completions``).
  ``POST /v1/completions``: the prompt as given. Bodies are validated by ``gateway.openai_api.schema``.
- ``stream: true``: server-sent events, one ``chat.completion.chunk`` (``text_completion``) per
  chunk the backend produced — the first chat chunk opens with ``role: assistant`` — a last chunk
  with ``finish_reason``, with ``stream_options.include_usage`` a chunk of usage with no choices,
  then ``data: [DONE]``. Without: one ``chat.completion`` (``text_completion``) with ``usage``.
- Where served: headers ``X-Edgecloud-Served-By`` / ``X-Edgecloud-Route-Reason`` (as the first
  chunk was served), and an ``edgecloud`` object on the final chunk or the whole answer
  (``served_by``, ``route_reason``, ``variant``, ``cache_source`` on a hit): extra fields the
  ``openai`` client keeps and does not trip on.
- Errors are OpenAI-shaped, ``{"error": {"message", "type", "param", "code"}}``, with the status of
  the error's kind (400 naming the parameter, 404 for an unknown model, 413, 429, 503 ...); an error
  after the first event is a last ``data: {"error": ...}`` event. A client that hangs up stops the
  generation upstream. Failures outside the handlers (a refused API key, an unknown /v1 path) are
  OpenAI-shaped too. ``GET /v1/models`` lists ``openai.models`` that the backends serve;
  ``GET /v1/models/{model}`` one of them.
"""

from __future__ import annotations

import json
import logging
import math
import time
import uuid
from typing import Any

from aiohttp import hdrs, web

from edgecloud.errors import ErrorKind, InferenceError, InvalidArgument, NotFound
from edgecloud.generation import CHAT_TEMPLATE_PARAMETER, FINAL_PARAMETER, parse_sampling
from edgecloud.http_front import TENANT_KEY, TIMEOUT_HEADER, check_body_headers, deadline_from_header, read_body
from edgecloud.status import http_status
from edgecloud.types import InferRequest, InferResponse
from edgecloud.chat_template import render
from gateway.openai_api.schema import OpenAIRequest, parse_chat, parse_completion
from gateway.where_served import ROUTE_REASON, SERVED_BY, where_served_headers
from gateway.streams.requests import GATEWAY_LIMITS, is_generative, response_text, upstream_request

__all__ = ["OpenAIFront"]

log = logging.getLogger(__name__)

JSON = "application/json"
_WHERE_KEYS = (SERVED_BY, ROUTE_REASON, "variant", "cache_source")
_SAMPLING_FIELD = "inputs[sampling_parameters]."
_ERROR_TYPES = {
    400: "invalid_request_error", 401: "authentication_error", 403: "permission_error", 404: "not_found_error",
    408: "timeout_error", 413: "invalid_request_error", 415: "invalid_request_error", 429: "rate_limit_error",
    499: "cancelled", 503: "service_unavailable_error", 504: "timeout_error",
}


def _error_doc(exc: InferenceError) -> dict[str, Any]:
    status = http_status(exc.kind)
    param = exc.field
    if param and param.startswith(_SAMPLING_FIELD):
        param = param[len(_SAMPLING_FIELD):]  # the OpenAI parameter the client sent
    return {"error": {"message": exc.message, "type": _ERROR_TYPES.get(status, "server_error"), "param": param,
                      "code": exc.kind.value}}


def _error_response(exc: InferenceError) -> web.Response:
    headers = {hdrs.RETRY_AFTER: str(math.ceil(exc.retry_after_s))} if exc.retry_after_s else None
    return web.json_response(_error_doc(exc), status=http_status(exc.kind), headers=headers)


@web.middleware
async def _openai_errors(request: web.Request, handler) -> web.StreamResponse:
    if not request.path.startswith("/v1/"):
        return await handler(request)
    try:
        return await handler(request)
    except InferenceError as exc:
        return _error_response(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        kind = "not_found_error" if exc.status == 404 else "invalid_request_error"
        return web.json_response({"error": {"message": f"{exc.reason.lower()}: {request.method} {request.path}",
                                            "type": kind, "param": None, "code": None}}, status=exc.status)


def _where(response: InferResponse) -> dict[str, Any]:
    return {key: response.parameters[key] for key in _WHERE_KEYS if key in response.parameters}


def _usage(final: InferResponse) -> dict[str, int]:
    prompt = int(final.parameters.get("prompt_tokens", 0))
    completion = int(final.parameters.get("completion_tokens", 0))
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _finish_reason(final: InferResponse) -> str:
    reason = final.parameters.get("finish_reason")
    return "length" if reason == "length" else "stop"


def _sse(doc: Any) -> bytes:
    return b"data: " + json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n\n"


class OpenAIFront:
    def __init__(self, dataplane, *, max_body_bytes: int, body_timeout_s: float):
        self.dataplane = dataplane
        self.max_body_bytes = max_body_bytes
        self.body_timeout_s = body_timeout_s

    def add_routes(self, app: web.Application) -> None:
        # Just inside the shared error translation (the first middleware) and outside authentication:
        # every failure on a /v1 path, a refused API key included, gets the OpenAI error shape.
        app.middlewares.insert(1, _openai_errors)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/v1/models/{model}", self._model)

    @property
    def settings(self):
        return self.dataplane.config.openai  # what a reload installed

    # models ----------------------------------------------------------------------------------

    async def _listed(self, name: str) -> dict[str, Any] | None:
        try:
            meta = await self.dataplane.model_metadata(name)
        except InferenceError:
            return None
        if not is_generative(meta):
            return None
        return {"id": name, "object": "model", "created": 0, "owned_by": "edgecloud"}

    async def _models(self, request: web.Request) -> web.Response:
        listed = [await self._listed(name) for name in self.settings.models]
        return web.json_response({"object": "list", "data": [entry for entry in listed if entry is not None]})

    async def _model(self, request: web.Request) -> web.Response:
        name = request.match_info["model"]
        entry = await self._listed(name)
        if entry is None:
            return _error_response(NotFound(f"no generative model named {name!r}", field="model"))
        return web.json_response(entry)

    # completions -----------------------------------------------------------------------------

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, chat=True)

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, chat=False)

    async def _decode(self, request: web.Request, chat: bool) -> OpenAIRequest:
        check_body_headers(request, frozenset({JSON}), JSON)
        body = await read_body(request, self.max_body_bytes, self.body_timeout_s)
        try:
            doc = json.loads(body.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise InvalidArgument(f"is not valid UTF-8 (byte {exc.start})", field="body") from None
        except json.JSONDecodeError as exc:
            raise InvalidArgument(f"is not JSON ({exc.msg} at character {exc.pos})", field="body") from None
        return parse_chat(doc) if chat else parse_completion(doc)

    async def _upstream(self, request: web.Request, decoded: OpenAIRequest, chat: bool) -> InferRequest:
        meta = await self.dataplane.model_metadata(decoded.model)
        if not is_generative(meta):
            raise InvalidArgument(f"{decoded.model!r} is not a generative model", field="model")
        if chat:
            template = meta.parameters.get(CHAT_TEMPLATE_PARAMETER)
            if not isinstance(template, str) or not template:
                raise InvalidArgument(f"{decoded.model!r} advertises no chat template: use /v1/completions",
                                      field="model")
            prompt = render(template, decoded.messages)
        else:
            prompt = decoded.prompt
        sampling = {"max_tokens": self.settings.default_max_tokens, **decoded.sampling}
        base = InferRequest(model_name=decoded.model, inputs=[], id=uuid.uuid4().hex,
                            parameters=dict(decoded.parameters))
        base.deadline = deadline_from_header(request.headers.get(TIMEOUT_HEADER))
        base.tenant = request.get(TENANT_KEY, "default")
        # Checked here with the protocol's own rules (ranges, types); a refusal names the field as
        # the protocol's JSON input would, and the error shape maps it back to the OpenAI parameter.
        checked = parse_sampling(sampling, GATEWAY_LIMITS, _SAMPLING_FIELD[:-1])
        return upstream_request(base, prompt=prompt, sampling=checked)

    async def _serve(self, request: web.Request, chat: bool) -> web.StreamResponse:
        try:
            decoded = await self._decode(request, chat)
            upstream = await self._upstream(request, decoded, chat)
            responses = self.dataplane.stream(upstream)
            first = await anext(responses, None)  # validation and routing errors surface here
        except InferenceError as exc:
            return _error_response(exc)
        answer = _Answer(chat, decoded.model)
        try:
            if decoded.stream:
                return await self._stream(request, answer, first, responses, decoded.include_usage)
            return await self._whole(answer, first, responses)
        finally:
            await responses.aclose()

    async def _whole(self, answer: _Answer, first: InferResponse | None, responses) -> web.Response:
        parts, final = [], first
        try:
            if first is not None:
                parts.append(response_text(first))
            async for response in responses:
                parts.append(response_text(response))
                final = response
        except InferenceError as exc:
            return _error_response(exc)
        headers = where_served_headers(first)
        return web.json_response(answer.whole("".join(parts), final), headers=headers)

    async def _stream(self, request: web.Request, answer: _Answer, first: InferResponse | None, responses,
                      include_usage: bool) -> web.StreamResponse:
        stream = web.StreamResponse(headers={**where_served_headers(first), hdrs.CACHE_CONTROL: "no-cache"})
        stream.content_type = "text/event-stream"
        stream.charset = "utf-8"
        await stream.prepare(request)
        try:
            response = first
            while response is not None:
                final = response.parameters.get(FINAL_PARAMETER) is True
                for doc in answer.chunks(response, final, include_usage):
                    await stream.write(_sse(doc))
                if final:
                    break
                response = await anext(responses, None)
            await stream.write(b"data: [DONE]\n\n")
        except ConnectionError:  # the client left: closing ``responses`` stops the generation
            return stream
        except InferenceError as exc:
            await stream.write(_sse(_error_doc(exc)))
        except Exception:
            log.exception("unexpected error in an OpenAI stream")
            await stream.write(_sse({"error": {"message": "internal error", "type": "server_error", "param": None,
                                               "code": ErrorKind.INTERNAL.value}}))
        await stream.write_eof()
        return stream


class _Answer:
    """One OpenAI answer being written: ids, timestamps and the chunk shapes."""

    def __init__(self, chat: bool, model: str):
        self.chat = chat
        self.model = model
        self.id = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
        self.created = int(time.time())
        self._opened = False

    def _envelope(self, obj: str) -> dict[str, Any]:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model}

    def whole(self, text: str, final: InferResponse | None) -> dict[str, Any]:
        if self.chat:
            choice = {"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None}
            doc = self._envelope("chat.completion")
        else:
            choice = {"index": 0, "text": text, "logprobs": None}
            doc = self._envelope("text_completion")
        choice["finish_reason"] = _finish_reason(final) if final is not None else "stop"
        doc["choices"] = [choice]
        if final is not None:
            doc["usage"] = _usage(final)
            doc["edgecloud"] = _where(final)
        return doc

    def chunks(self, response: InferResponse, final: bool, include_usage: bool) -> list[dict[str, Any]]:
        text = response_text(response)
        out = []
        if self.chat:
            if not self._opened:
                self._opened = True
                out.append(self._chat_chunk({"role": "assistant", "content": ""}, None))
            if text:
                out.append(self._chat_chunk({"content": text}, None))
            if final:
                last = self._chat_chunk({}, _finish_reason(response))
                last["edgecloud"] = _where(response)
                out.append(last)
        else:
            if text or final:
                doc = self._envelope("text_completion")
                doc["choices"] = [{"index": 0, "text": text, "logprobs": None,
                                   "finish_reason": _finish_reason(response) if final else None}]
                if final:
                    doc["edgecloud"] = _where(response)
                out.append(doc)
        if final and include_usage:
            usage = self._envelope("chat.completion.chunk" if self.chat else "text_completion")
            usage["choices"] = []
            usage["usage"] = _usage(response)
            out.append(usage)
        return out

    def _chat_chunk(self, delta: dict[str, Any], finish_reason: str | None) -> dict[str, Any]:
        doc = self._envelope("chat.completion.chunk")
        doc["choices"] = [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]
        return doc
