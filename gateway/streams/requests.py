"""What the gateway needs to know about a generation request, and the requests it sends upstream.

Contract:
- ``is_generative(meta)``: the model takes ``text_input`` and answers ``text_output`` (an edgecloud
  generative model, or Triton's LLM backends standing in as a cloud worker).
- ``as_generative(meta)``: the metadata with ``stream``, ``sampling_parameters`` and
  ``exclude_input_in_output`` optional, as the convention has them.
- ``parse(request)``: the request's prompt, sampling and flags, validated with the gateway's own
  (generous) limits; each backend still applies its own (context, max_tokens).
- ``upstream_request(request, prompt=..., sampling=...)``: the same request as a token stream
  (``stream: true``, the text only, ``exclude_input_in_output``) with ``prompt`` and ``sampling``
  in its inputs; everything else (id, parameters, tenant, deadline) is kept and the sampling keys
  of its parameters are dropped (the JSON input says it all). Used for every stream the gateway
  starts: the first attempt, a hedge, and a continuation after a mid-stream failover (the prompt
  plus the text already sent, with the tokens left).
- ``deterministic(sampling)``: the same request always produces the same text (greedy, or a
  fixed seed): only such answers are cached.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np

from edgecloud.codec import bytes_array
from edgecloud.generation import (
    COMPLETION_TOKENS_PARAMETER,
    EXCLUDE_INPUT,
    SAMPLING_INPUT,
    SAMPLING_KEYS,
    STREAM_INPUT,
    TEXT_INPUT,
    TEXT_OUTPUT,
    GenerateRequest,
    GenerationLimits,
    SamplingParams,
    parse_generate_request,
)
from edgecloud.types import InferRequest, InferResponse, ModelMetadata, Tensor

__all__ = ["GATEWAY_LIMITS", "as_generative", "deterministic", "is_generative", "parse", "response_text", "sampling_json",
           "tokens_so_far", "upstream_request"]

GATEWAY_LIMITS = GenerationLimits(context_length=1 << 20, max_tokens=1 << 20, default_max_tokens=16)
"""Checked by the gateway before routing: the form of the request. Each backend enforces its own
context and ``max_tokens`` (its answer is the request's error)."""


def is_generative(meta: ModelMetadata) -> bool:
    return any(spec.name == TEXT_INPUT for spec in meta.inputs) and \
        any(spec.name == TEXT_OUTPUT for spec in meta.outputs)


OPTIONAL_INPUTS = frozenset({STREAM_INPUT, SAMPLING_INPUT, EXCLUDE_INPUT})


def as_generative(meta: ModelMetadata) -> ModelMetadata:
    """``meta`` with the generation convention's optional inputs marked optional (the protocol's
    metadata cannot say so: a request may leave them out)."""
    inputs = tuple(dataclasses.replace(spec, optional=True) if spec.name in OPTIONAL_INPUTS else spec
                   for spec in meta.inputs)
    return dataclasses.replace(meta, inputs=inputs)


def parse(request: InferRequest) -> GenerateRequest:
    return parse_generate_request(request, GATEWAY_LIMITS)


def deterministic(sampling: SamplingParams) -> bool:
    return sampling.greedy or sampling.seed is not None


def sampling_json(sampling: SamplingParams) -> str:
    doc: dict = {"max_tokens": sampling.max_tokens, "temperature": sampling.temperature, "top_p": sampling.top_p,
                 "top_k": sampling.top_k}
    if sampling.seed is not None:
        doc["seed"] = sampling.seed
    if sampling.stop:
        doc["stop"] = list(sampling.stop)
    return json.dumps(doc, separators=(",", ":"), sort_keys=True)


def _text(name: str, text: str) -> Tensor:
    data = bytes_array([text.encode("utf-8")])
    return Tensor(name, "BYTES", (1,), data)


def _flag(name: str, value: bool) -> Tensor:
    return Tensor(name, "BOOL", (1,), np.array([value], dtype=bool))


def upstream_request(request: InferRequest, *, prompt: str, sampling: SamplingParams) -> InferRequest:
    """``request`` as the stream the gateway sends a backend (see the module's contract)."""
    replaced = {TEXT_INPUT, STREAM_INPUT, SAMPLING_INPUT, EXCLUDE_INPUT}
    inputs = [tensor for tensor in request.inputs if tensor.name not in replaced]
    inputs += [_text(TEXT_INPUT, prompt), _flag(STREAM_INPUT, True), _text(SAMPLING_INPUT, sampling_json(sampling)),
               _flag(EXCLUDE_INPUT, True)]
    parameters = {key: value for key, value in request.parameters.items() if key not in SAMPLING_KEYS}
    return InferRequest(model_name=request.model_name, model_version=request.model_version, inputs=inputs,
                        outputs=list(request.outputs), id=request.id, parameters=parameters,
                        deadline=request.deadline, tenant=request.tenant)


def response_text(response: InferResponse) -> str:
    for tensor in response.outputs:
        if tensor.name == TEXT_OUTPUT:
            return "".join(bytes(item).decode("utf-8", "replace") for item in tensor.data.reshape(-1))
    return ""


def tokens_so_far(response: InferResponse, fallback: int) -> int:
    """Completion tokens the backend generated up to ``response`` (``fallback`` when it does not say)."""
    value = response.parameters.get(COMPLETION_TOKENS_PARAMETER)
    return value if isinstance(value, int) and not isinstance(value, bool) else fallback
