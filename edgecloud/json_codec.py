"""The Open Inference Protocol's REST (JSON) form <-> edgecloud types, with Triton's binary tensor
data extension. Pure functions; no web framework.

Contract:
- ``request_from_json(body, header_length, limits)`` decodes an infer body. ``data`` may be flat or
  nested row-major lists (nesting must match ``shape`` exactly); BYTES data are strings (UTF-8
  encoded), BOOL data are ``true``/``false``, numeric types take JSON numbers (integers only for
  integer types; FP16 and BF16 included). With ``header_length`` (the
  ``Inference-Header-Content-Length`` header) the first ``header_length`` bytes are the JSON header
  and the rest are raw tensors, in input order, for the inputs whose ``parameters.binary_data_size``
  is set; sizes must account for every byte. Everything is checked before allocation, with the
  gRPC codec's own checks (``edgecloud.codec``), and any fault raises ``InvalidArgument`` or
  ``ResourceExhausted`` naming the field (``inputs[text].data``). Nothing else is ever raised.
- ``binary_data_size`` is framing and is removed from the decoded input parameters; the output
  wishes ``binary_data`` / ``binary_data_output`` stay in the request (``requested_binary`` reads
  them). All three are listed in ``TRANSPORT_PARAMETERS`` for anything (a cache key) that must
  treat a REST request like the same gRPC one.
- ``response_to_json(response, requested_binary)`` writes outputs as flat JSON ``data``, or as raw
  bytes after the JSON header for the outputs asked for in binary (and for BYTES outputs that are
  not UTF-8, which JSON cannot carry), and returns the header length to send as
  ``Inference-Header-Content-Length`` (None when nothing is binary).
- ``request_to_json`` / ``response_from_json`` are the client side of the same forms.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from edgecloud.codec import (
    DEFAULT_LIMITS,
    NO_DATA,
    Precheck,
    advertised_parameters,
    array_from_raw,
    datatype_info,
    bytes_array,
    check_shape,
    tensor_raw_bytes,
)
from edgecloud.datatypes import DatatypeInfo
from edgecloud.errors import InvalidArgument, ResourceExhausted
from edgecloud.limits import RequestLimits
from edgecloud.types import (
    InferRequest,
    InferResponse,
    ModelMetadata,
    ParameterValue,
    RequestedOutput,
    ServerMetadata,
    Tensor,
)

__all__ = [
    "BINARY_DATA",
    "BINARY_DATA_OUTPUT",
    "BINARY_DATA_SIZE",
    "HEADER_LENGTH",
    "TRANSPORT_PARAMETERS",
    "error_to_json",
    "model_metadata_to_json",
    "request_from_json",
    "request_to_json",
    "requested_binary",
    "response_from_json",
    "response_to_json",
    "server_metadata_to_json",
]

HEADER_LENGTH = "Inference-Header-Content-Length"
BINARY_DATA_SIZE = "binary_data_size"
BINARY_DATA = "binary_data"
BINARY_DATA_OUTPUT = "binary_data_output"
TRANSPORT_PARAMETERS = frozenset({BINARY_DATA_SIZE, BINARY_DATA, BINARY_DATA_OUTPUT})
"""Parameters that choose how tensors travel over REST, never what the answer is."""

_INT_MIN = -(2**63)
_UINT_END = 2**64
_FLOAT_TYPES = frozenset({"FP16", "BF16", "FP32", "FP64"})
_INTEGER: frozenset[type] = frozenset({int})
_NUMBER: frozenset[type] = frozenset({int, float})
_JSON_NAMES = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "an integer",
               float: "a number", type(None): "null"}
_dumps = json.JSONEncoder(separators=(",", ":")).encode

# ---------------------------------------------------------------------------------------------
# JSON text


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


class _DuplicateKey(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object whose keys are unique: a repeated key is refused rather than silently last-wins
    (two parsers could otherwise read one request two ways)."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(f"key {key[:64]!r} appears more than once in one object")
            seen.add(key)
    return obj


def _load(text: bytes | memoryview, field: str) -> Any:
    try:
        decoded = bytes(text).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidArgument(f"is not valid UTF-8 (byte {exc.start})", field=field) from None
    try:
        return json.loads(decoded, parse_constant=_reject_constant, object_pairs_hook=_unique_keys)
    except _DuplicateKey as exc:
        raise InvalidArgument(str(exc), field=field) from None
    except RecursionError:
        raise InvalidArgument("is not valid JSON: nested too deeply", field=field) from None
    except ValueError as exc:  # JSONDecodeError, over-long integers, NaN/Infinity
        raise InvalidArgument(f"is not valid JSON: {exc}", field=field) from None


def _type_name(value: Any) -> str:
    return _JSON_NAMES.get(type(value), type(value).__name__)


def _text(value: Any, field: str, *, empty_ok: bool = False) -> str:
    """A JSON string that protobuf can carry too (no lone surrogates from ``\\ud800`` escapes)."""
    if not isinstance(value, str):
        raise InvalidArgument(f"must be a string, got {_type_name(value)}", field=field)
    if not value and not empty_ok:
        raise InvalidArgument("is empty", field=field)
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidArgument("is not valid Unicode (lone surrogate)", field=field) from None
    return value


def _object(value: Any, field: str) -> dict:
    if not isinstance(value, dict):
        raise InvalidArgument(f"must be a JSON object, got {_type_name(value)}", field=field)
    return value


def _list(value: Any, field: str) -> list:
    if not isinstance(value, list):
        raise InvalidArgument(f"must be a list, got {_type_name(value)}", field=field)
    return value


def _parameters(value: Any, field: str, limits: RequestLimits) -> dict[str, ParameterValue]:
    """The parameters object as it came (no copy), each value checked to be one protobuf can carry."""
    if value is None:
        return {}
    params = _object(value, field)
    if len(params) > limits.max_parameters:
        raise ResourceExhausted(f"{len(params)} parameters exceed the limit of {limits.max_parameters}", field=field)
    for key, item in params.items():
        where = f"{field}[{_text(key, field, empty_ok=True)}]"
        kind = type(item)
        if kind is str:
            _text(item, where, empty_ok=True)
        elif kind is int:
            if not _INT_MIN <= item < _UINT_END:
                raise InvalidArgument("integer does not fit 64 bits", field=where)
        elif kind is not bool and kind is not float:
            raise InvalidArgument(f"must be a boolean, number or string, got {_type_name(item)}", field=where)
    return params


# ---------------------------------------------------------------------------------------------
# tensor data


def _flatten(data: Any, dims: tuple[int, ...], count: int, field: str) -> list:
    """The row-major elements of flat or fully nested ``data`` (element types are not checked)."""
    if not isinstance(data, list):
        if not dims:
            return [data]  # the nested form of a rank-0 tensor is the bare value
        raise InvalidArgument(f"must be a list, got {_type_name(data)}", field=field)
    if len(data) == count and (count == 0 or not isinstance(data[0], list)):
        return data
    if len(dims) <= 1:
        raise InvalidArgument(f"{len(data)} elements but shape {list(dims)} needs {count}", field=field)
    level: list = [data]
    for axis, dim in enumerate(dims):
        below: list = []
        for node in level:
            if not isinstance(node, list) or len(node) != dim:
                size = len(node) if isinstance(node, list) else _type_name(node)
                raise InvalidArgument(
                    f"neither flat ({count} elements) nor nested as shape {list(dims)}: dimension {axis} "
                    f"has {size} where the shape says {dim}", field=field)
            below.extend(node)
        level = below
    return level


def _check_types(flat: list, allowed: frozenset[type], what: str, field: str) -> None:
    kinds = set(map(type, flat))
    if not kinds <= allowed:
        bad = next(iter(kinds - allowed))
        raise InvalidArgument(f"elements must be {what}, found {_JSON_NAMES.get(bad, bad.__name__)}", field=field)


def _bf16_bits(values: np.ndarray) -> np.ndarray:
    """FP32 values to BF16 bit patterns, rounding to nearest even."""
    bits = values.astype("<f4").view("<u4")
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype("<u2")


def _array_from_json(data: Any, info: DatatypeInfo, dims: tuple[int, ...], count: int, field: str,
                     limits: RequestLimits) -> np.ndarray:
    flat = _flatten(data, dims, count, field)
    name = info.name
    if name == "BYTES":
        _check_types(flat, frozenset({str}), "strings", field)
        try:
            array = bytes_array(flat)
        except UnicodeEncodeError as exc:
            raise InvalidArgument(f"a string is not valid Unicode ({exc.reason})", field=field) from None
        if count and max(map(len, array)) > limits.max_bytes_element:
            for index, item in enumerate(array):
                if len(item) > limits.max_bytes_element:
                    raise ResourceExhausted(
                        f"element {index} is {len(item)} bytes, over the limit of {limits.max_bytes_element}",
                        field=field)
        return array.reshape(dims)
    if name == "BOOL":
        _check_types(flat, frozenset({bool}), "true or false", field)
    elif name in _FLOAT_TYPES:
        _check_types(flat, _NUMBER, "numbers", field)
    else:
        _check_types(flat, _INTEGER, "integers", field)
    try:
        with np.errstate(over="raise", invalid="raise"):
            if name == "BF16":
                array = _bf16_bits(np.array(flat, dtype="<f4"))
            else:
                array = np.array(flat, dtype=info.numpy_dtype)
    except (OverflowError, FloatingPointError, ValueError):
        raise InvalidArgument(f"a value does not fit {name}", field=field) from None
    return array.reshape(dims)


Materialise = Callable[[], np.ndarray]


def _tensor_from_json(item: Any, index: int, kind: str, binary: memoryview | None, offset: int,
                      seen: set[str], limits: RequestLimits) -> tuple[Tensor, Materialise, int]:
    """One ``inputs`` / ``outputs`` entry's header (its data ``NO_DATA``), what decodes its data,
    and the offset past its binary data."""
    entry = _object(item, f"{kind}[{index}]")
    name = _text(entry.get("name"), f"{kind}[{index}].name")
    field = f"{kind}[{name}]"
    if name in seen:
        raise InvalidArgument(f"{kind[:-1]} appears more than once", field=field)
    seen.add(name)
    info = datatype_info(_text(entry.get("datatype"), f"{field}.datatype"), f"{field}.datatype")
    shape = _list(entry.get("shape"), f"{field}.shape")
    for dim in shape:
        if type(dim) is not int:
            raise InvalidArgument(f"dimensions must be integers, found {_type_name(dim)}", field=f"{field}.shape")
    dims, count = check_shape(shape, f"{field}.shape", limits)
    params = _parameters(entry.get("parameters"), f"{field}.parameters", limits)
    size = params.get(BINARY_DATA_SIZE)
    if size is None:
        if "data" not in entry:
            raise InvalidArgument("missing (no data and no parameters.binary_data_size)", field=f"{field}.data")
        data = entry["data"]
        return (Tensor(name, info.name, dims, NO_DATA, params),
                lambda: _array_from_json(data, info, dims, count, f"{field}.data", limits), offset)
    size_field = f"{field}.parameters.{BINARY_DATA_SIZE}"
    if binary is None:
        raise InvalidArgument(f"is set but the body has no binary section ({HEADER_LENGTH} header missing)",
                              field=size_field)
    if type(size) is not int or size < 0:
        raise InvalidArgument("must be a non-negative integer", field=size_field)
    if "data" in entry:
        raise InvalidArgument("has both data and parameters.binary_data_size", field=field)
    if size > len(binary) - offset:
        raise InvalidArgument(f"is {size} but only {len(binary) - offset} bytes of binary data remain",
                              field=size_field)
    raw = binary[offset : offset + size]

    def materialise() -> np.ndarray:
        array = array_from_raw(raw, info, dims, count, field, limits)
        # a slice at an odd offset; numeric runtimes want aligned arrays
        return array if array.flags.aligned else array.copy()

    params = {key: value for key, value in params.items() if key != BINARY_DATA_SIZE}
    return Tensor(name, info.name, dims, NO_DATA, params), materialise, offset + size


def _split(body: bytes, header_length: int | None) -> tuple[Any, memoryview | None]:
    """The parsed JSON header and the binary section (None without the extension)."""
    if header_length is None:
        return _load(body, "body"), None
    if not 0 <= header_length <= len(body):
        raise InvalidArgument(f"{header_length} is outside the {len(body)}-byte body", field=HEADER_LENGTH)
    view = memoryview(body)
    return _load(view[:header_length], "body"), view[header_length:]


def _tensors(items: Any, kind: str, binary: memoryview | None, limit: int, limits: RequestLimits,
             *, required: bool = True) -> list[tuple[Tensor, Materialise]]:
    entries = [] if items is None and not required else _list(items, kind)
    if not entries and required:
        raise InvalidArgument(f"the message has no {kind}", field=kind)
    if len(entries) > limit:
        raise ResourceExhausted(f"{len(entries)} {kind} exceed the limit of {limit}", field=kind)
    tensors: list[tuple[Tensor, Materialise]] = []
    seen: set[str] = set()
    offset = 0
    for index, item in enumerate(entries):
        tensor, materialise, offset = _tensor_from_json(item, index, kind, binary, offset, seen, limits)
        tensors.append((tensor, materialise))
    if binary is not None and offset != len(binary):
        raise InvalidArgument(f"{len(binary) - offset} bytes of binary data follow the last binary tensor",
                              field="body")
    return tensors


# ---------------------------------------------------------------------------------------------
# requests


def request_from_json(body: bytes, header_length: int | None = None, limits: RequestLimits = DEFAULT_LIMITS,
                      *, model_name: str = "", model_version: str = "",
                      precheck: Precheck | None = None) -> InferRequest:
    """Decode and structurally validate a REST infer body.

    The model name and version come from the URL (the caller passes them); any in the body are
    ignored. ``precheck`` runs on the header (names, datatypes, shapes, outputs) before any
    tensor's data becomes an array (``edgecloud.codec.Precheck``).
    """
    doc, binary = _split(body, header_length)
    doc = _object(doc, "body")
    request_id = doc.get("id", "")
    inputs = _tensors(doc.get("inputs"), "inputs", binary, limits.max_inputs, limits)
    outputs: list[RequestedOutput] = []
    requested = doc.get("outputs")
    if requested is not None:
        entries = _list(requested, "outputs")
        if len(entries) > limits.max_outputs:
            raise ResourceExhausted(f"{len(entries)} outputs exceed the limit of {limits.max_outputs}",
                                    field="outputs")
        seen: set[str] = set()
        for index, item in enumerate(entries):
            entry = _object(item, f"outputs[{index}]")
            name = _text(entry.get("name"), f"outputs[{index}].name")
            if name in seen:
                raise InvalidArgument("output requested more than once", field=f"outputs[{name}]")
            seen.add(name)
            outputs.append(RequestedOutput(name, _parameters(entry.get("parameters"), f"outputs[{name}].parameters",
                                                             limits)))
    request = InferRequest(
        model_name=model_name,
        model_version=model_version,
        id=_text(request_id, "id", empty_ok=True),
        parameters=_parameters(doc.get("parameters"), "parameters", limits),
        inputs=[tensor for tensor, _ in inputs],
        outputs=outputs,
    )
    if precheck is not None:
        precheck(request)
    for tensor, materialise in inputs:
        tensor.data = materialise()
    return request


def requested_binary(request: InferRequest) -> set[str] | bool:
    """Which outputs the client wants as binary data: per output ``parameters.binary_data``, with
    the request's ``binary_data_output`` as the default (a bool when no outputs are named)."""
    default = request.parameters.get(BINARY_DATA_OUTPUT) is True
    if not request.outputs:
        return default
    return {output.name for output in request.outputs if output.parameters.get(BINARY_DATA, default) is True}


def _tensor_entry(tensor: Tensor, binary: bool, blobs: list[bytes]) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": tensor.name, "datatype": tensor.datatype,
                             "shape": [int(dim) for dim in tensor.shape]}
    params = tensor.parameters
    data = None if binary else _json_data(tensor)
    if data is None:
        raw = tensor_raw_bytes(tensor)
        blobs.append(raw)
        params = {**params, BINARY_DATA_SIZE: len(raw)}
    else:
        entry["data"] = data
    if params:
        entry["parameters"] = params
    return entry


def _join(doc: dict[str, Any], blobs: list[bytes]) -> tuple[bytes, int | None]:
    header = _dumps(doc).encode("ascii")
    if not blobs:
        return header, None
    return b"".join((header, *blobs)), len(header)


def request_to_json(request: InferRequest, binary_inputs: bool = True) -> tuple[bytes, int | None]:
    """Encode a request's body (model name and version go in the URL); with ``binary_inputs`` the
    inputs travel raw after the JSON header. Returns the body and the header length, if any."""
    blobs: list[bytes] = []
    doc: dict[str, Any] = {}
    if request.id:
        doc["id"] = request.id
    if request.parameters:
        doc["parameters"] = request.parameters
    doc["inputs"] = [_tensor_entry(tensor, binary_inputs, blobs) for tensor in request.inputs]
    if request.outputs:
        doc["outputs"] = [{"name": o.name, "parameters": o.parameters} if o.parameters else {"name": o.name}
                          for o in request.outputs]
    return _join(doc, blobs)


# ---------------------------------------------------------------------------------------------
# responses


def _json_data(tensor: Tensor) -> list | None:
    """Flat JSON-ready elements, or None when JSON cannot carry them (BYTES that are not UTF-8)."""
    flat = tensor.data.reshape(-1)
    if tensor.datatype == "BYTES":
        try:
            return [item.decode("utf-8") for item in flat]
        except UnicodeDecodeError:
            return None
    values = (flat.astype("<u4") << 16).view("<f4") if tensor.datatype == "BF16" else flat
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        return None  # JSON has no NaN or Infinity: such a tensor travels in the binary section
    return values.tolist()


def response_to_json(response: InferResponse, requested_binary: set[str] | bool = False) -> tuple[bytes, int | None]:
    """Encode a response; returns the body and the ``Inference-Header-Content-Length`` value (None
    when every output went as JSON data)."""
    blobs: list[bytes] = []
    if isinstance(requested_binary, bool):
        outputs = [_tensor_entry(tensor, requested_binary, blobs) for tensor in response.outputs]
    else:
        outputs = [_tensor_entry(tensor, tensor.name in requested_binary, blobs) for tensor in response.outputs]
    doc: dict[str, Any] = {"model_name": response.model_name, "model_version": response.model_version}
    if response.id:
        doc["id"] = response.id
    if response.parameters:
        doc["parameters"] = response.parameters
    doc["outputs"] = outputs
    return _join(doc, blobs)


def response_from_json(body: bytes, header_length: int | None = None,
                       limits: RequestLimits = DEFAULT_LIMITS) -> InferResponse:
    """Decode a REST infer response (JSON data or binary outputs), validated like a request."""
    doc, binary = _split(body, header_length)
    doc = _object(doc, "body")
    outputs = _tensors(doc.get("outputs"), "outputs", binary, limits.max_outputs, limits, required=False)
    for tensor, materialise in outputs:
        tensor.data = materialise()
    return InferResponse(
        model_name=_text(doc.get("model_name", ""), "model_name", empty_ok=True),
        model_version=_text(doc.get("model_version", ""), "model_version", empty_ok=True),
        id=_text(doc.get("id", ""), "id", empty_ok=True),
        parameters=_parameters(doc.get("parameters"), "parameters", limits),
        outputs=[tensor for tensor, _ in outputs],
    )


# ---------------------------------------------------------------------------------------------
# metadata and errors


def _specs(specs: Iterable) -> list[dict[str, Any]]:
    return [{"name": s.name, "datatype": s.datatype, "shape": list(s.shape)} for s in specs]


def model_metadata_to_json(meta: ModelMetadata) -> bytes:
    doc = {"name": meta.name, "versions": list(meta.versions), "platform": meta.platform,
           "inputs": _specs(meta.inputs), "outputs": _specs(meta.outputs)}
    parameters = advertised_parameters(meta)
    if parameters:
        doc["parameters"] = parameters
    return _dumps(doc).encode("ascii")


def server_metadata_to_json(meta: ServerMetadata) -> bytes:
    return _dumps({"name": meta.name, "version": meta.version, "extensions": list(meta.extensions)}).encode("ascii")


def error_to_json(message: str) -> bytes:
    """The protocol's error body: ``{"error": message}``."""
    return _dumps({"error": message}).encode("ascii")
