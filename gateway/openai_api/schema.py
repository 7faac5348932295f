"""OpenAI request bodies (``/v1/chat/completions``, ``/v1/completions``), validated.

Contract: ``parse_chat(doc)`` / ``parse_completion(doc)`` turn a decoded JSON body into an
``OpenAIRequest`` or raise ``InvalidArgument`` naming the field (OpenAI's ``param``):
- ``model`` (a string) is required; so are ``messages`` (chat: a non-empty list of
  ``{"role": system|user|assistant|developer, "content": string or [{"type": "text", "text"}]}``;
  ``developer`` is read as ``system``) and ``prompt`` (completions: a string, or a list of one).
- Sampling: ``max_tokens`` / ``max_completion_tokens``, ``temperature`` (0..2), ``top_p``, ``seed``,
  ``stop`` (a string or a list), and ``top_k`` (an extension vLLM has too); ``n`` and ``best_of``
  must be 1, ``presence_penalty`` / ``frequency_penalty`` 0, ``logprobs`` false / null, ``echo``
  false, ``response_format`` text. Whatever the models cannot do is refused, never ignored.
- ``stream`` (bool) and ``stream_options.include_usage``.
- ``user``, ``metadata``, ``store``, ``service_tier`` and ``parallel_tool_calls`` are accepted and do
  not change the answer; ``tools`` / ``tool_choice`` / ``functions`` are refused (no tool calling);
  any other key is refused by name.
- edgecloud's own: ``quality`` (``auto`` | ``cloud``) and ``no_cache``, as for every request.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from edgecloud.errors import InvalidArgument

__all__ = ["OpenAIRequest", "parse_chat", "parse_completion"]

_SAMPLING = ("temperature", "top_p", "top_k", "seed", "stop")
_IGNORED = frozenset({"user", "metadata", "store", "service_tier", "parallel_tool_calls"})
_EDGECLOUD = ("quality", "no_cache")
_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


@dataclass(slots=True)
class OpenAIRequest:
    model: str
    messages: list[dict[str, str]] | None = None
    prompt: str | None = None
    sampling: dict[str, Any] = field(default_factory=dict)
    """Keys of edgecloud's ``sampling_parameters`` (checked again, with their ranges, downstream)."""
    stream: bool = False
    include_usage: bool = False
    parameters: dict[str, Any] = field(default_factory=dict)
    """edgecloud request parameters (``quality``, ``no_cache``)."""


def _require(doc: dict, key: str, kind: type, what: str):
    if key not in doc:
        raise InvalidArgument("is required", field=key)
    value = doc[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise InvalidArgument(f"must be {what}", field=key)
    return value


def _must_be(doc: dict, key: str, allowed: tuple, why: str) -> None:
    if key in doc and doc[key] not in allowed:
        raise InvalidArgument(f"is not supported: {why}", field=key)


def _common(doc: dict, known: frozenset[str]) -> OpenAIRequest:
    if not isinstance(doc, dict):
        raise InvalidArgument("must be a JSON object", field="body")
    for key in doc:
        if key in ("tools", "tool_choice", "functions", "function_call"):
            raise InvalidArgument("is not supported: these models do not call tools", field=key)
        if key not in known and key not in _IGNORED:
            raise InvalidArgument("is not a supported parameter", field=key)
    model = _require(doc, "model", str, "a string")
    if not model:
        raise InvalidArgument("is empty", field="model")
    _must_be(doc, "n", (1, None), "only one choice is generated (n: 1)")
    _must_be(doc, "best_of", (1, None), "only one choice is generated (best_of: 1)")
    _must_be(doc, "presence_penalty", (0, 0.0, None), "penalties are not implemented (0 only)")
    _must_be(doc, "frequency_penalty", (0, 0.0, None), "penalties are not implemented (0 only)")
    _must_be(doc, "logprobs", (False, None), "log probabilities are not returned")
    _must_be(doc, "echo", (False, None), "the prompt is not echoed")
    request = OpenAIRequest(model=model)
    limit = doc.get("max_completion_tokens", doc.get("max_tokens"))
    if limit is not None:
        request.sampling["max_tokens"] = limit
    for key in _SAMPLING:
        if doc.get(key) is not None:
            request.sampling[key] = doc[key]
    stream = doc.get("stream", False)
    if stream is not None and not isinstance(stream, bool):
        raise InvalidArgument("must be true or false", field="stream")
    request.stream = bool(stream)
    options = doc.get("stream_options")
    if options is not None:
        if not isinstance(options, dict) or set(options) - {"include_usage"}:
            raise InvalidArgument("must be an object with include_usage", field="stream_options")
        if not request.stream:
            raise InvalidArgument("is only allowed with stream: true", field="stream_options")
        request.include_usage = options.get("include_usage") is True
    for key in _EDGECLOUD:
        if key in doc:
            request.parameters[key] = doc[key]
    return request


_COMMON_KEYS = frozenset({"model", "max_tokens", "n", "best_of", "presence_penalty", "frequency_penalty",
                          "logprobs", "echo", "stream", "stream_options", *_SAMPLING, *_EDGECLOUD})
_CHAT_KEYS = _COMMON_KEYS | {"messages", "max_completion_tokens", "response_format", "top_logprobs"}
_COMPLETION_KEYS = _COMMON_KEYS | {"prompt"}


def _content(value: Any, where: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        parts = []
        for index, part in enumerate(value):
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise InvalidArgument("only text parts ({\"type\": \"text\", \"text\": ...}) are supported",
                                      field=f"{where}[{index}]")
            parts.append(part["text"])
        return "".join(parts)
    raise InvalidArgument("must be a string or a list of text parts", field=where)


def parse_chat(doc: Any) -> OpenAIRequest:
    request = _common(doc, _CHAT_KEYS)
    fmt = doc.get("response_format")
    if fmt is not None and (not isinstance(fmt, dict) or fmt.get("type") != "text"):
        raise InvalidArgument("is not supported: only {\"type\": \"text\"}", field="response_format")
    _must_be(doc, "top_logprobs", (None, 0), "log probabilities are not returned")
    messages = _require(doc, "messages", list, "a list of messages")
    if not messages:
        raise InvalidArgument("is empty", field="messages")
    rendered = []
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            raise InvalidArgument("must be an object with role and content", field=where)
        role = _ROLES.get(message.get("role"))
        if role is None:
            raise InvalidArgument("must be one of system, developer, user, assistant", field=f"{where}.role")
        if "content" not in message or message["content"] is None:
            raise InvalidArgument("is required", field=f"{where}.content")
        rendered.append({"role": role, "content": _content(message["content"], f"{where}.content")})
    request.messages = rendered
    return request


def parse_completion(doc: Any) -> OpenAIRequest:
    request = _common(doc, _COMPLETION_KEYS)
    prompt = doc.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise InvalidArgument("must be a string (or a list of one string)", field="prompt")
    if not prompt:
        raise InvalidArgument("is empty", field="prompt")
    request.prompt = prompt
    return request
