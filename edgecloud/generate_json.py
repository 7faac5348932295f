"""The HTTP generate extension's JSON (``POST /v2/models/{name}/generate`` and ``generate_stream``).

Contract: a request body is one JSON object; each top-level key but ``id`` and ``parameters`` is
an input of shape [1]: a string is BYTES, a boolean BOOL, an integer INT64, a number FP64, and an
object or list is sent on as its JSON text (BYTES), so ``"sampling_parameters": {"max_tokens": 8}``
and ``"sampling_parameters": "{\\"max_tokens\\": 8}"`` mean the same. ``parameters`` become the
request's parameters (scalars). A response is one object: ``model_name``, ``model_version``, ``id``
when the request had one, each output by name (a one-element BYTES output as its text), and the
response's parameters as top-level keys (``variant``, ``triton_final_response``, and on the last
``finish_reason``, ``prompt_tokens``, ``completion_tokens``). Streams frame each response as a
server-sent event ``data: {...}`` and a failure mid-stream as ``data: {"error": message}``.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from edgecloud.codec import bytes_array
from edgecloud.errors import InvalidArgument, ResourceExhausted
from edgecloud.json_codec import _load, _parameters, _text
from edgecloud.limits import RequestLimits
from edgecloud.types import InferRequest, InferResponse, Tensor

__all__ = ["generate_request_from_json", "input_from_value", "generate_response_to_json", "sse_error", "sse_event"]

_RESERVED = ("model_name", "model_version", "id", "parameters")


def input_from_value(name: str, value: Any, limits: RequestLimits) -> Tensor:
    """One JSON value as an input of shape [1] (see the module's contract)."""
    field = name
    kind = type(value)
    if kind is str:
        data = _text(value, field, empty_ok=True).encode("utf-8")
    elif kind is dict or kind is list:
        data = json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    elif kind is bool:
        return Tensor(name, "BOOL", (1,), np.array([value], dtype=bool))
    elif kind is int:
        if not -(2**63) <= value < 2**63:
            raise InvalidArgument("integer does not fit 64 bits", field=field)
        return Tensor(name, "INT64", (1,), np.array([value], dtype=np.int64))
    elif kind is float:
        return Tensor(name, "FP64", (1,), np.array([value], dtype=np.float64))
    else:
        raise InvalidArgument("must be a string, boolean, number, object or list", field=field)
    if len(data) > limits.max_bytes_element:
        raise ResourceExhausted(f"{len(data)} bytes exceed the limit of {limits.max_bytes_element}", field=field)
    return Tensor(name, "BYTES", (1,), bytes_array([data]))


def generate_request_from_json(body: bytes, limits: RequestLimits, *, model_name: str,
                               model_version: str = "") -> InferRequest:
    """Decode a generate body; raises ``InvalidArgument`` / ``ResourceExhausted`` naming the field."""
    doc = _load(body, "body")
    if not isinstance(doc, dict):
        raise InvalidArgument("must be a JSON object", field="body")
    inputs = [input_from_value(key, value, limits) for key, value in doc.items() if key not in _RESERVED]
    if len(inputs) > limits.max_inputs:
        raise ResourceExhausted(f"{len(inputs)} inputs exceed the limit of {limits.max_inputs}", field="body")
    ident = doc.get("id", "")
    return InferRequest(
        model_name=model_name,
        model_version=model_version,
        inputs=inputs,
        id=_text(ident, "id", empty_ok=True),
        parameters=dict(_parameters(doc.get("parameters"), "parameters", limits)),
    )


def _output_value(tensor: Tensor) -> Any:
    flat = tensor.data.reshape(-1)
    if tensor.datatype == "BYTES":
        items = [bytes(item).decode("utf-8", "replace") for item in flat]
    else:
        items = flat.tolist()
    return items[0] if len(items) == 1 else items


def _response_doc(response: InferResponse) -> dict[str, Any]:
    doc: dict[str, Any] = {"model_name": response.model_name, "model_version": response.model_version}
    if response.id:
        doc["id"] = response.id
    for tensor in response.outputs:
        doc[tensor.name] = _output_value(tensor)
    for key, value in response.parameters.items():
        doc.setdefault(key, value)
    return doc


def generate_response_to_json(response: InferResponse) -> bytes:
    return json.dumps(_response_doc(response), ensure_ascii=False).encode("utf-8")


def sse_event(response: InferResponse) -> bytes:
    return b"data: " + generate_response_to_json(response) + b"\n\n"


def sse_error(message: str) -> bytes:
    return b"data: " + json.dumps({"error": message}).encode("utf-8") + b"\n\n"
