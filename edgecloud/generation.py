"""Text generation over the Open Inference Protocol: the request and chunk types, sampling
parameters, incremental detokenization with stop strings, and the ``GenerativeModel`` contract.

Wire convention (Triton's LLM backends, decoupled): inputs ``text_input`` (BYTES [1], the prompt
as given: chat templates are rendered by whoever builds the prompt), optional ``stream`` (BOOL [1]),
``sampling_parameters`` (BYTES [1], a JSON object) and ``exclude_input_in_output`` (BOOL [1]);
output ``text_output`` (BYTES [1]) per chunk. Request parameters may carry sampling keys too
(the HTTP generate extension puts its ``parameters`` object there); the JSON input wins.

Contract of a ``GenerativeModel``: ``generate(request)`` yields ``Chunk``s, each the text produced
since the last one; exactly one chunk, the last, is ``final`` and carries the ``Usage`` (token
counts and finish reason). Closing the iterator early (a client that leaves, a cancelled task)
stops the generation at the next token and frees what it held. ``infer`` (unary ``ModelInfer``)
answers the whole text at once and refuses ``stream: true``; ``stream`` (``ModelStreamInfer``,
``generate_stream``) answers one response per chunk, the last flagged ``triton_final_response``.
Bad input raises ``InvalidArgument`` naming the field before anything is generated.
"""

from __future__ import annotations

import abc
import json
import math
from contextlib import aclosing
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgecloud.errors import InvalidArgument
from edgecloud.model import Model
from edgecloud.types import InferRequest, InferResponse, ModelMetadata, ParameterValue, Tensor, TensorSpec

__all__ = [
    "CHAT_TEMPLATE_PARAMETER",
    "COMPLETION_TOKENS_PARAMETER",
    "Chunk",
    "FINAL_PARAMETER",
    "EMPTY_FINAL_PARAMETER",
    "GenerateRequest",
    "GenerativeModel",
    "GenerationLimits",
    "SamplingParams",
    "TextStream",
    "chat_template_of",
    "Usage",
    "generation_inputs",
    "generation_outputs",
    "parse_generate_request",
]

TEXT_INPUT = "text_input"
STREAM_INPUT = "stream"
SAMPLING_INPUT = "sampling_parameters"
EXCLUDE_INPUT = "exclude_input_in_output"
TEXT_OUTPUT = "text_output"
FINAL_PARAMETER = "triton_final_response"
COMPLETION_TOKENS_PARAMETER = "completion_tokens"
CHAT_TEMPLATE_PARAMETER = "chat_template"
"""Model metadata parameter: the model's chat template (Jinja, as in its tokenizer config)."""
EMPTY_FINAL_PARAMETER = "triton_enable_empty_final_response"
PLATFORM = "edgecloud_generate"

FINISH_REASONS = ("stop", "length", "cancelled")


def generation_inputs() -> tuple[TensorSpec, ...]:
    return (
        TensorSpec(TEXT_INPUT, "BYTES", (1,)),
        TensorSpec(STREAM_INPUT, "BOOL", (1,), optional=True),
        TensorSpec(SAMPLING_INPUT, "BYTES", (1,), optional=True),
        TensorSpec(EXCLUDE_INPUT, "BOOL", (1,), optional=True),
    )


def generation_outputs() -> tuple[TensorSpec, ...]:
    return (TensorSpec(TEXT_OUTPUT, "BYTES", (-1,)),)


@dataclass(frozen=True, slots=True)
class GenerationLimits:
    """What one server accepts: tokens of prompt plus completion, and completion tokens."""

    context_length: int = 2048
    max_tokens: int = 512
    default_max_tokens: int = 16
    max_stop_strings: int = 8
    max_stop_length: int = 64


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """How to pick tokens. ``temperature`` 0 is greedy (then ``top_p``/``top_k``/``seed`` do not
    matter); ``top_k`` 0 means no limit; ``stop`` strings end the text before them."""

    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop: tuple[str, ...] = ()

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0 or self.top_k == 1


def _number(key: str, value, kind: type, where: str):
    """A JSON number, or a string holding one (Triton's examples send ``"temperature": "0.1"``)."""
    if isinstance(value, bool):
        raise InvalidArgument(f"must be a number, not {json.dumps(value)}", field=f"{where}.{key}")
    if isinstance(value, str):
        try:
            value = float(value) if kind is float else int(value)
        except ValueError:
            raise InvalidArgument(f"must be a {'number' if kind is float else 'whole number'}, got {value!r}",
                                  field=f"{where}.{key}") from None
    if kind is int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int):
            raise InvalidArgument(f"must be a whole number, got {json.dumps(value)}", field=f"{where}.{key}")
        return value
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidArgument(f"must be a finite number, got {json.dumps(value)}", field=f"{where}.{key}")
    return float(value)


def parse_sampling(raw: dict, limits: GenerationLimits, where: str) -> SamplingParams:
    """Validate a sampling-parameters object (unknown keys are refused, by name)."""
    params: dict = {"max_tokens": limits.default_max_tokens}
    for key, value in raw.items():
        if key == "max_tokens":
            n = _number(key, value, int, where)
            if n < 1 or n > limits.max_tokens:
                raise InvalidArgument(f"must be 1..{limits.max_tokens}, got {n}", field=f"{where}.{key}")
            params[key] = n
        elif key == "temperature":
            t = _number(key, value, float, where)
            if not 0.0 <= t <= 2.0:
                raise InvalidArgument(f"must be 0..2, got {t:g}", field=f"{where}.{key}")
            params[key] = t
        elif key == "top_p":
            p = _number(key, value, float, where)
            if not 0.0 < p <= 1.0:
                raise InvalidArgument(f"must be in (0, 1], got {p:g}", field=f"{where}.{key}")
            params[key] = p
        elif key == "top_k":
            k = _number(key, value, int, where)
            if k < 0:
                raise InvalidArgument(f"must be >= 0 (0: no limit), got {k}", field=f"{where}.{key}")
            params[key] = k
        elif key == "seed":
            s = _number(key, value, int, where)
            if not 0 <= s < 2**63:
                raise InvalidArgument(f"must be 0..2^63-1, got {s}", field=f"{where}.{key}")
            params[key] = s
        elif key == "stop":
            stops = [value] if isinstance(value, str) else value
            if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
                raise InvalidArgument("must be a non-empty string or a list of them", field=f"{where}.{key}")
            if len(stops) > limits.max_stop_strings or any(len(s) > limits.max_stop_length for s in stops):
                raise InvalidArgument(f"at most {limits.max_stop_strings} strings of at most "
                                      f"{limits.max_stop_length} characters", field=f"{where}.{key}")
            params[key] = tuple(stops)
        else:
            known = "max_tokens, temperature, top_p, top_k, seed, stop"
            raise InvalidArgument(f"unknown sampling parameter; known: {known}", field=f"{where}.{key}")
    return SamplingParams(**params)


@dataclass(slots=True)
class GenerateRequest:
    """One generation, decoded and validated (the prompt is not tokenized yet)."""

    prompt: str
    sampling: SamplingParams = field(default_factory=SamplingParams)
    stream: bool = False
    exclude_input_in_output: bool = False
    empty_final_response: bool = False
    id: str = ""
    deadline: float | None = None
    model_name: str = ""
    model_version: str = ""


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    """``stop`` (end of sequence or a stop string), ``length`` (max_tokens or the context) or
    ``cancelled``."""


@dataclass(frozen=True, slots=True)
class Chunk:
    text: str
    usage: Usage | None = None
    """Set on the final chunk only."""
    tokens: int = 0
    """Completion tokens generated up to and including this chunk (a chunk may hold several: text
    held back for an incomplete character or a possible stop string comes out with a later one)."""

    @property
    def final(self) -> bool:
        return self.usage is not None


def _one(tensor: Tensor, field_name: str):
    if tensor.data.size != 1:
        raise InvalidArgument(f"must hold exactly one element, got {tensor.data.size}", field=f"{field_name}.shape")
    return tensor.data.reshape(-1)[0]


def _utf8(value: bytes, field_name: str) -> str:
    try:
        return bytes(value).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidArgument(f"is not valid UTF-8 (byte {exc.start})", field=field_name) from None


SAMPLING_KEYS = frozenset({"max_tokens", "temperature", "top_p", "top_k", "seed", "stop"})


def parse_generate_request(request: InferRequest, limits: GenerationLimits) -> GenerateRequest:
    """Decode the protocol's generation inputs (already checked against the metadata's datatypes
    and shapes) into a ``GenerateRequest``; raises ``InvalidArgument`` naming the field."""
    by_name = {tensor.name: tensor for tensor in request.inputs}
    prompt = _utf8(_one(by_name[TEXT_INPUT], f"inputs[{TEXT_INPUT}]"), f"inputs[{TEXT_INPUT}]")
    if not prompt:
        raise InvalidArgument("is empty", field=f"inputs[{TEXT_INPUT}]")
    raw: dict = {key: value for key, value in request.parameters.items() if key in SAMPLING_KEYS}
    where = "parameters"
    if SAMPLING_INPUT in by_name:
        where = f"inputs[{SAMPLING_INPUT}]"
        text = _utf8(_one(by_name[SAMPLING_INPUT], where), where)
        try:
            loaded = json.loads(text) if text.strip() else {}
        except json.JSONDecodeError as exc:
            raise InvalidArgument(f"is not JSON ({exc.msg} at character {exc.pos})", field=where) from None
        if not isinstance(loaded, dict):
            raise InvalidArgument("must be a JSON object", field=where)
        raw.update(loaded)
    flags = {}
    for name in (STREAM_INPUT, EXCLUDE_INPUT):
        flags[name] = bool(_one(by_name[name], f"inputs[{name}]")) if name in by_name else False
    empty_final = request.parameters.get(EMPTY_FINAL_PARAMETER, False)
    if not isinstance(empty_final, bool):
        raise InvalidArgument("must be a bool", field=f"parameters.{EMPTY_FINAL_PARAMETER}")
    return GenerateRequest(
        prompt=prompt,
        sampling=parse_sampling(raw, limits, where),
        stream=flags[STREAM_INPUT],
        exclude_input_in_output=flags[EXCLUDE_INPUT],
        empty_final_response=empty_final,
        id=request.id,
        deadline=request.deadline,
        model_name=request.model_name,
        model_version=request.model_version,
    )


class TextStream:
    """Turns generated token ids into text deltas: holds back an incomplete UTF-8 sequence and any
    tail that may be the start of a stop string, and reports when a stop string completed (the text
    before it is the last delta; the stop string itself is never emitted)."""

    def __init__(self, decode: Callable[[Sequence[int]], str], stop: Sequence[str] = ()):
        self._decode = decode
        self._stop = tuple(stop)
        self._longest_stop = max((len(s) for s in self._stop), default=0)
        self.tokens: list[int] = []
        self.text = ""
        """The text emitted so far."""
        self.stopped = False
        self._decoded = ""  # the text of tokens[:_read], settled (no incomplete character)
        self._prefix = 0  # tokens[_prefix:_read] are decoded again as context for the next ones
        self._read = 0

    def _full_text(self) -> str:
        """The text of every token so far, decoding only the newest ones (with one settled step of
        context, as a tokenizer may write a token differently at the start of a text): a token
        costs the same at the end of a long answer as at its start."""
        settled = self._decode(self.tokens[self._prefix:self._read])
        fresh = self._decode(self.tokens[self._prefix:])
        full = self._decoded + fresh[len(settled):]
        if not full.endswith("\ufffd"):
            self._decoded, self._prefix, self._read = full, self._read, len(self.tokens)
        return full

    def push(self, token: int) -> str:
        """Add one token; the text that can be emitted now (maybe "")."""
        self.tokens.append(token)
        full = self._full_text()
        if full.endswith("\ufffd"):
            return ""  # an incomplete multi-byte character: wait for its next byte
        if self._stop:
            start = max(0, len(self.text) - self._longest_stop)
            hits = [i for i in (full.find(s, start) for s in self._stop) if i >= 0]
            if hits:
                self.stopped = True
                return self._emit(full[: min(hits)])
            return self._emit(full[: len(full) - self._partial_stop(full)])
        return self._emit(full)

    def finish(self) -> str:
        """The held-back tail once generation ended without a stop string."""
        if self.stopped or not self.tokens:
            return ""
        return self._emit(self._full_text())

    def _emit(self, upto: str) -> str:
        if len(upto) <= len(self.text):
            return ""
        delta = upto[len(self.text):]
        self.text = upto
        return delta

    def _partial_stop(self, full: str) -> int:
        """Length of the longest tail of ``full`` that is a proper prefix of a stop string."""
        best = 0
        for stop in self._stop:
            for n in range(min(len(stop) - 1, len(full)), best, -1):
                if full.endswith(stop[:n]):
                    best = n
                    break
        return best


def chat_template_of(model_dir: Path) -> str | None:
    """The chat template a model directory ships: ``chat_template.jinja``, else the
    ``chat_template`` of its ``tokenizer_config.json``; None when it has neither."""
    jinja = model_dir / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    config = model_dir / "tokenizer_config.json"
    if config.is_file():
        template = json.loads(config.read_text(encoding="utf-8")).get("chat_template")
        if isinstance(template, str) and template:
            return template
    return None


def text_tensor(text: str) -> Tensor:
    data = np.empty(1, dtype=object)
    data[0] = text.encode("utf-8")
    return Tensor(TEXT_OUTPUT, "BYTES", (1,), data)


class GenerativeModel(Model):
    """A model that generates text: ``generate`` is the one thing a runtime implements."""

    limits: GenerationLimits
    variant: str

    @staticmethod
    def describe(name: str, version: str, chat_template: str | None = None) -> ModelMetadata:
        """The metadata every generative model advertises (with its chat template when it has one,
        so a gateway can render chat requests the way the model was trained)."""
        parameters = {CHAT_TEMPLATE_PARAMETER: chat_template} if chat_template else {}
        return ModelMetadata(name, (version,), PLATFORM, generation_inputs(), generation_outputs(),
                             parameters=parameters)

    @abc.abstractmethod
    def generate(self, request: GenerateRequest) -> AsyncIterator[Chunk]:
        """Chunks of generated text; the last is final. Closing the iterator stops generation."""

    def parse(self, request: InferRequest) -> GenerateRequest:
        return parse_generate_request(request, self.limits)

    def _response(self, request: GenerateRequest, text: str, final: bool, usage: Usage | None,
                  tokens: int = 0) -> InferResponse:
        """One response; every chunk says how many completion tokens were generated so far
        (``completion_tokens``), which is what a gateway needs to continue a broken stream elsewhere."""
        parameters: dict[str, ParameterValue] = {"variant": self.variant, FINAL_PARAMETER: final,
                                                 COMPLETION_TOKENS_PARAMETER: tokens}
        if usage is not None:
            parameters.update(prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens,
                              finish_reason=usage.finish_reason)
        return InferResponse(self.metadata.name, [text_tensor(text)], model_version=self.version,
                             id=request.id, parameters=parameters)

    async def infer(self, request: InferRequest) -> InferResponse:
        """The whole text at once (unary ``ModelInfer`` / ``generate``)."""
        generate = self.parse(request)
        if generate.stream:
            raise InvalidArgument("true asks for a stream: use ModelStreamInfer or generate_stream",
                                  field=f"inputs[{STREAM_INPUT}]")
        parts = [] if generate.exclude_input_in_output else [generate.prompt]
        usage = None
        async with aclosing(self.generate(generate)) as chunks:
            async for chunk in chunks:
                parts.append(chunk.text)
                usage = chunk.usage
        return self._response(generate, "".join(parts), True, usage)

    async def stream(self, request: InferRequest) -> AsyncIterator[InferResponse]:
        """One response per chunk (``stream: false``: one response with everything), the last one
        flagged final; with ``triton_enable_empty_final_response`` the flag rides on an extra
        empty response instead. As with Triton's vLLM backend, streamed text never repeats the
        prompt (``exclude_input_in_output`` applies to whole-text answers)."""
        generate = self.parse(request)
        if not generate.stream:
            yield await self.infer(request)
            return
        # Closed explicitly: a consumer that stops early (aclose, a cancelled task) stops the generation
        # now, not whenever the abandoned generator happens to be collected.
        async with aclosing(self.generate(generate)) as chunks:
            async for chunk in chunks:
                text = chunk.text
                if not chunk.final:
                    if text:
                        yield self._response(generate, text, False, None, chunk.tokens)
                elif generate.empty_final_response:
                    if text:
                        yield self._response(generate, text, False, None, chunk.usage.completion_tokens)
                    yield self._response(generate, "", True, chunk.usage)
                else:
                    yield self._response(generate, text, True, chunk.usage)
