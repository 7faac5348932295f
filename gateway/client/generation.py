"""Token streams for the SDK: ``generate()`` / ``chat()`` requests and the chunks they yield.

Contract: ``generation_request(model, prompt, sampling, parameters)`` is the protocol's decoupled
request (``text_input``, ``stream: true``, ``sampling_parameters`` JSON, the text only);
``chunk_from_message(message)`` turns one ``ModelStreamInferResponse`` into a ``GenerationChunk``
or raises the typed error it reports. ``chat_prompt(meta, messages)`` renders chat messages with
the model's chat template from its metadata (needs jinja2, which the gateway install has).
Sampling keys left as None are not sent (the server's defaults apply).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from edgecloud import codec
from edgecloud.errors import InvalidArgument
from edgecloud.generation import CHAT_TEMPLATE_PARAMETER, FINAL_PARAMETER
from edgecloud.types import ModelMetadata, ParameterValue
from protos import inference_pb2 as pb

__all__ = ["GenerationChunk", "chat_prompt", "chunk_from_message", "generation_request"]


@dataclass(frozen=True, slots=True)
class GenerationChunk:
    text: str
    """The text generated since the previous chunk."""
    final: bool
    served_by: str | None = None
    """Where this part was served (on the first chunk, the first chunk of a continuation after a
    mid-stream failover, and the final chunk: ``edge``, ``cloud``, ``cache``, ``edge+cloud``)."""
    route_reason: str | None = None
    finish_reason: str | None = None
    """On the final chunk: ``stop`` or ``length``."""
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    variant: str | None = None


def generation_request(model: str, prompt: str, sampling: Mapping[str, Any],
                       parameters: Mapping[str, ParameterValue] | None = None, version: str = "",
                       request_id: str = "") -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=model, model_version=version, id=request_id)
    text = request.inputs.add(name="text_input", datatype="BYTES", shape=[1])
    text.contents.bytes_contents.append(prompt.encode("utf-8"))
    stream = request.inputs.add(name="stream", datatype="BOOL", shape=[1])
    stream.contents.bool_contents.append(True)
    chosen = {key: value for key, value in sampling.items() if value is not None}
    if isinstance(chosen.get("stop"), (list, tuple)):
        chosen["stop"] = list(chosen["stop"])
    params = request.inputs.add(name="sampling_parameters", datatype="BYTES", shape=[1])
    params.contents.bytes_contents.append(json.dumps(chosen).encode("utf-8"))
    exclude = request.inputs.add(name="exclude_input_in_output", datatype="BOOL", shape=[1])
    exclude.contents.bool_contents.append(True)
    if parameters:
        codec.parameters_to_proto(parameters, request.parameters)
    return request


def chunk_from_message(message: pb.ModelStreamInferResponse) -> GenerationChunk:
    if message.error_message:
        raise codec.stream_error_from_proto(message)
    response = codec.response_from_proto(message.infer_response)
    params = response.parameters
    text = ""
    for tensor in response.outputs:
        if tensor.name == "text_output":
            text = "".join(bytes(item).decode("utf-8", "replace") for item in tensor.data.reshape(-1))
    final = params.get(FINAL_PARAMETER) is True

    def get(key: str, kind: type):
        value = params.get(key)
        return value if isinstance(value, kind) and not isinstance(value, bool) else None

    return GenerationChunk(text=text, final=final, served_by=get("served_by", str),
                           route_reason=get("route_reason", str),
                           finish_reason=get("finish_reason", str) if final else None,
                           prompt_tokens=get("prompt_tokens", int) if final else None,
                           completion_tokens=get("completion_tokens", int), variant=get("variant", str))


def chat_prompt(meta: ModelMetadata, messages: Sequence[Mapping[str, str]]) -> str:
    template = meta.parameters.get(CHAT_TEMPLATE_PARAMETER)
    if not isinstance(template, str) or not template:
        raise InvalidArgument(f"model {meta.name!r} advertises no chat template: use generate()", field="model")
    from edgecloud.chat_template import render  # jinja2: installed with the gateway (or on its own)

    return render(template, [dict(message) for message in messages])
