"""Protobuf <-> edgecloud types, the one place that touches ``inference_pb2`` messages' tensors.

Contract:
- ``request_from_proto`` accepts typed ``contents`` and ``raw_input_contents`` (all inputs raw,
  or none), checks datatype, shape, element count against byte size and ``RequestLimits`` before
  allocating, and raises ``InvalidArgument`` / ``ResourceExhausted`` naming the field.
- ``response_to_proto`` writes outputs as ``raw_output_contents`` (what Triton does, and what
  ``tritonclient`` reads fastest).
- BYTES elements travel raw as a 4-byte little-endian length followed by the bytes.
- The ``*_wire`` functions work on serialized messages: ``request_from_wire`` / ``response_from_wire``
  keep the bytes they decoded on the result (``wire``), and ``request_to_wire`` / ``response_to_wire``
  reuse them (see ``InferRequest.wire`` / ``InferResponse.wire``), so a message that passes through
  unchanged is never encoded again. Bytes that are not a valid message are ``InvalidArgument``.
  ``response_from_wire`` decodes the outputs only when they are read (``WireResponse``): a relayed
  response's tensors are never turned into arrays; ``decoded_response_from_wire`` decodes them at
  once (a stream's chunks, all of which are read).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np
from google.protobuf.message import DecodeError

from edgecloud.datatypes import DATATYPES, DatatypeInfo
from edgecloud.errors import (ErrorKind, InferenceError, InternalError, InvalidArgument, ResourceExhausted,
                              error_for_kind)
from edgecloud.limits import RequestLimits
from edgecloud.types import (
    InferRequest,
    InferResponse,
    ModelMetadata,
    ParameterValue,
    RequestedOutput,
    ServerMetadata,
    Tensor,
    TensorSpec,
)
from protos import inference_pb2 as pb

log = logging.getLogger(__name__)

_LEN = struct.Struct("<I")
DEFAULT_LIMITS = RequestLimits()

# ---------------------------------------------------------------------------------------------
# parameters


def parameters_from_proto(params: Mapping[str, pb.InferParameter], field: str) -> dict[str, ParameterValue]:
    out: dict[str, ParameterValue] = {}
    if not params:
        return out
    for key, value in params.items():
        choice = value.WhichOneof("parameter_choice")
        if choice is None:
            raise InvalidArgument("parameter has no value", field=f"{field}[{key}]")
        out[key] = getattr(value, choice)
    return out


def parameters_to_proto(params: Mapping[str, ParameterValue], target) -> None:
    for key, value in params.items():
        slot = target[key]
        if isinstance(value, bool):
            slot.bool_param = value
        elif isinstance(value, int):
            if value >= 2**63:
                slot.uint64_param = value
            else:
                slot.int64_param = value
        elif isinstance(value, float):
            slot.double_param = value
        else:
            slot.string_param = str(value)


# ---------------------------------------------------------------------------------------------
# BYTES


def serialize_bytes(items: Iterable[bytes]) -> bytes:
    """Length-prefixed concatenation of BYTES elements (the protocol's raw form)."""
    parts: list[bytes] = []
    for item in items:
        parts.append(_LEN.pack(len(item)))
        parts.append(item)
    return b"".join(parts)


def deserialize_bytes(raw: bytes, count: int, field: str, limits: RequestLimits = DEFAULT_LIMITS) -> np.ndarray:
    """Parse exactly ``count`` length-prefixed elements filling all of ``raw``."""
    view = memoryview(raw)
    out = np.empty(min(count, len(view) // 4), dtype=object)  # what the data can hold, not what the shape claims
    offset = 0
    size = len(view)
    for index in range(count):
        if offset + 4 > size:
            raise InvalidArgument(
                f"raw BYTES data holds fewer than the {count} elements the shape declares", field=field
            )
        (length,) = _LEN.unpack_from(view, offset)
        offset += 4
        if length > limits.max_bytes_element:
            raise ResourceExhausted(
                f"element {index} is {length} bytes, over the limit of {limits.max_bytes_element}", field=field
            )
        if offset + length > size:
            raise InvalidArgument(f"element {index} declares {length} bytes past the end of the data", field=field)
        out[index] = bytes(view[offset : offset + length])
        offset += length
    if offset != size:
        raise InvalidArgument(
            f"raw BYTES data has {size - offset} bytes beyond the {count} elements the shape declares", field=field
        )
    return out


def bytes_array(items: Iterable[bytes | str]) -> np.ndarray:
    """An object array of ``bytes`` from bytes or str items (str is UTF-8 encoded)."""
    values = [item.encode("utf-8") if isinstance(item, str) else bytes(item) for item in items]
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


# ---------------------------------------------------------------------------------------------
# shapes


def check_shape(shape: Iterable[int], field: str, limits: RequestLimits) -> tuple[tuple[int, ...], int]:
    """Validate a request shape and return it with its element count, before any allocation."""
    dims = tuple(map(int, shape))
    if len(dims) > limits.max_rank:
        raise InvalidArgument(f"rank {len(dims)} exceeds the limit of {limits.max_rank}", field=field)
    count = 1
    for axis, dim in enumerate(dims):
        if dim < 0:
            raise InvalidArgument(f"dimension {axis} is negative ({dim})", field=field)
        if dim > limits.max_elements:
            raise ResourceExhausted(f"dimension {axis} ({dim}) exceeds the limit of {limits.max_elements}", field=field)
        count *= dim
    if count > limits.max_elements:
        raise ResourceExhausted(f"{count} elements exceed the limit of {limits.max_elements}", field=field)
    return dims, count


def datatype_info(name: str, field: str) -> DatatypeInfo:
    info = DATATYPES.get(name)
    if info is None:
        raise InvalidArgument(f"unknown datatype {name!r}", field=field)
    return info


def array_from_raw(raw: bytes, info: DatatypeInfo, dims: tuple[int, ...], count: int, field: str,
                    limits: RequestLimits) -> np.ndarray:
    if info.name == "BYTES":
        return deserialize_bytes(raw, count, field, limits).reshape(dims)
    expected = count * info.itemsize
    if len(raw) != expected:
        raise InvalidArgument(
            f"raw data is {len(raw)} bytes but shape {list(dims)} of {info.name} needs {expected}", field=field
        )
    return np.frombuffer(raw, dtype=info.numpy_dtype).reshape(dims)


def _array_from_contents(contents: pb.InferTensorContents, info: DatatypeInfo, dims: tuple[int, ...],
                         count: int, field: str, limits: RequestLimits) -> np.ndarray:
    if info.contents_field is None:
        raise InvalidArgument(f"{info.name} data must be sent in raw_input_contents", field=field)
    for other in pb.InferTensorContents.DESCRIPTOR.fields:
        if other.name != info.contents_field and len(getattr(contents, other.name)):
            raise InvalidArgument(f"{info.name} data sent in {other.name}; expected {info.contents_field}", field=field)
    values = getattr(contents, info.contents_field)
    if len(values) != count:
        raise InvalidArgument(
            f"{len(values)} elements in contents but shape {list(dims)} needs {count}", field=field
        )
    if info.name == "BYTES":
        out = np.empty(count, dtype=object)
        for index, item in enumerate(values):
            if len(item) > limits.max_bytes_element:
                raise ResourceExhausted(
                    f"element {index} is {len(item)} bytes, over the limit of {limits.max_bytes_element}", field=field
                )
            out[index] = item
        return out.reshape(dims)
    try:
        return np.asarray(values, dtype=info.numpy_dtype).reshape(dims)
    except OverflowError:
        raise InvalidArgument(f"a value does not fit {info.name}", field=field) from None


# ---------------------------------------------------------------------------------------------
# requests


NO_DATA = np.empty(0, dtype=np.uint8)
"""What a tensor's ``data`` is while a ``Precheck`` looks at the request: nothing decoded yet."""

PRECHECK_FROM_BYTES = 64 * 1024
"""The fronts precheck messages of at least this many bytes. Below it, decoding the data costs
less than validating the header twice (the dataplane validates every request in full anyway), so
small requests, nearly all of them, are validated once."""

Precheck = Callable[[InferRequest], None]
"""A check of a request before any tensor data is materialised: it sees the model name and
version, every input's name, datatype, shape and parameters (``data`` is ``NO_DATA``) and the
requested outputs, and raises an ``InferenceError`` to refuse the request. A server passes one that
validates against the model's metadata, so a request whose shapes cannot be served (a batch of a
million over a limit of 256) is refused before a million Python objects are made."""


def _entry_field(collection: str, name: str, index: int, seen: set[str], unnamed: str, repeated: str) -> str:
    """The field naming a request's input or output (``collection[name]``, ``[index]`` when it has
    no name), once it is checked to have a name not ``seen`` before (then it is recorded)."""
    field = f"{collection}[{name or index}]"
    if not name:
        raise InvalidArgument(unnamed, field=field)
    if name in seen:
        raise InvalidArgument(repeated, field=field)
    seen.add(name)
    return field


def request_from_proto(msg: pb.ModelInferRequest, limits: RequestLimits = DEFAULT_LIMITS,
                       precheck: Precheck | None = None, raw: Sequence[bytes | memoryview] | None = None
                       ) -> InferRequest:
    """Decode and structurally validate a ``ModelInferRequest``; ``precheck`` runs on the header
    (names, datatypes, shapes, outputs) before any tensor data is decoded. ``raw`` stands in for
    ``raw_input_contents`` when the caller holds them apart from the message (views, not copies)."""
    model_name = msg.model_name
    if not model_name:
        raise InvalidArgument("is empty", field="model_name")
    given_inputs = msg.inputs
    input_count = len(given_inputs)
    if input_count == 0:
        raise InvalidArgument("the request has no inputs", field="inputs")
    if input_count > limits.max_inputs:
        raise ResourceExhausted(f"{input_count} inputs exceed the limit of {limits.max_inputs}", field="inputs")
    requested_outputs = msg.outputs
    if len(requested_outputs) > limits.max_outputs:
        raise ResourceExhausted(f"{len(requested_outputs)} outputs exceed the limit of {limits.max_outputs}",
                                field="outputs")
    request_parameters = msg.parameters
    if len(request_parameters) > limits.max_parameters:
        raise ResourceExhausted(f"{len(request_parameters)} parameters exceed the limit", field="parameters")
    if raw is None:
        raw = msg.raw_input_contents
    elif msg.raw_input_contents:
        raise InvalidArgument("raw_input_contents given twice", field="raw_input_contents")
    if raw and len(raw) != input_count:
        raise InvalidArgument(
            f"{len(raw)} raw_input_contents entries for {input_count} inputs; send all inputs raw or none",
            field="raw_input_contents",
        )
    inputs: list[Tensor] = []
    headers: list[tuple[DatatypeInfo, int, str]] = []
    seen: set[str] = set()
    for index, tensor in enumerate(given_inputs):
        name = tensor.name
        field = _entry_field("inputs", name, index, seen, "input has no name", "input appears more than once")
        datatype = tensor.datatype
        info = DATATYPES.get(datatype) or datatype_info(datatype, f"{field}.datatype")
        dims, count = check_shape(tensor.shape, f"{field}.shape", limits)
        if raw and tensor.HasField("contents"):
            raise InvalidArgument("has both contents and raw_input_contents", field=field)
        headers.append((info, count, field))
        parameters = parameters_from_proto(tensor.parameters, f"{field}.parameters")
        inputs.append(Tensor(name, info.name, dims, NO_DATA, parameters))
    outputs: list[RequestedOutput] = []
    seen_outputs: set[str] = set()
    for index, requested in enumerate(requested_outputs):
        name = requested.name
        field = _entry_field("outputs", name, index, seen_outputs, "requested output has no name",
                             "output requested more than once")
        outputs.append(RequestedOutput(name, parameters_from_proto(requested.parameters, f"{field}.parameters")))
    request = InferRequest(
        model_name=model_name,
        model_version=msg.model_version,
        id=msg.id,
        parameters=parameters_from_proto(request_parameters, "parameters"),
        inputs=inputs,
        outputs=outputs,
    )
    if precheck is not None:
        precheck(request)
    for index, (tensor, (info, count, field)) in enumerate(zip(inputs, headers)):
        if raw:
            tensor.data = array_from_raw(raw[index], info, tensor.shape, count, field, limits)
        else:
            tensor.data = _array_from_contents(msg.inputs[index].contents, info, tensor.shape, count, field, limits)
    return request


def tensor_raw_bytes(tensor: Tensor) -> bytes:
    """The protocol's raw little-endian bytes of a tensor."""
    if tensor.datatype == "BYTES":
        return serialize_bytes(tensor.data.reshape(-1))
    info = DATATYPES[tensor.datatype]
    return np.ascontiguousarray(tensor.data, dtype=info.numpy_dtype).tobytes()


def request_to_proto(request: InferRequest) -> pb.ModelInferRequest:
    """Encode a request with raw inputs (what clients and the gateway send upstream)."""
    msg = pb.ModelInferRequest(model_name=request.model_name, model_version=request.model_version, id=request.id)
    parameters_to_proto(request.parameters, msg.parameters)
    for tensor in request.inputs:
        entry = msg.inputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
        parameters_to_proto(tensor.parameters, entry.parameters)
        msg.raw_input_contents.append(tensor_raw_bytes(tensor))
    for requested in request.outputs:
        out = msg.outputs.add(name=requested.name)
        parameters_to_proto(requested.parameters, out.parameters)
    return msg


# ---------------------------------------------------------------------------------------------
# responses


def response_to_proto(response: InferResponse) -> pb.ModelInferResponse:
    msg = pb.ModelInferResponse(model_name=response.model_name, model_version=response.model_version, id=response.id)
    parameters_to_proto(response.parameters, msg.parameters)
    for tensor in response.outputs:
        entry = msg.outputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
        parameters_to_proto(tensor.parameters, entry.parameters)
        msg.raw_output_contents.append(tensor_raw_bytes(tensor))
    return msg


def response_from_proto(msg: pb.ModelInferResponse, limits: RequestLimits = DEFAULT_LIMITS) -> InferResponse:
    """Decode a response from an upstream server (typed contents or raw)."""
    return InferResponse(
        model_name=msg.model_name,
        model_version=msg.model_version,
        id=msg.id,
        parameters=parameters_from_proto(msg.parameters, "parameters"),
        outputs=outputs_from_proto(msg, limits),
    )


def outputs_from_proto(msg: pb.ModelInferResponse, limits: RequestLimits = DEFAULT_LIMITS) -> list[Tensor]:
    """A response's output tensors, structurally checked (names, datatypes, shapes against the data)."""
    raw = msg.raw_output_contents
    if raw and len(raw) != len(msg.outputs):
        raise InvalidArgument("raw_output_contents does not match outputs", field="raw_output_contents")
    outputs = []
    names: set[str] = set()
    for index, tensor in enumerate(msg.outputs):
        field = f"outputs[{tensor.name or index}]"
        if not tensor.name or tensor.name in names:
            raise InvalidArgument("output name is empty or repeated", field=field)
        names.add(tensor.name)
        info = datatype_info(tensor.datatype, f"{field}.datatype")
        dims, count = check_shape(tensor.shape, f"{field}.shape", limits)
        if raw:
            data = array_from_raw(raw[index], info, dims, count, field, limits)
        else:
            data = _array_from_contents(tensor.contents, info, dims, count, field, limits)
        outputs.append(Tensor(tensor.name, info.name, dims, data,
                              parameters_from_proto(tensor.parameters, f"{field}.parameters")))
    return outputs


_OUTPUTS_SLOT = InferResponse.__dict__["outputs"]


class _LazyOutputs:
    """A message's outputs, decoded at the first ``get`` and kept (shared by the copies of a
    ``WireResponse``: decoded once for all of them)."""

    __slots__ = ("_message", "_limits", "_outputs")

    def __init__(self, message: pb.ModelInferResponse, limits: RequestLimits):
        self._message = message
        self._limits = limits
        self._outputs: list[Tensor] | None = None

    def get(self) -> list[Tensor]:
        if self._outputs is None:
            try:
                self._outputs = outputs_from_proto(self._message, self._limits)
            except InferenceError as exc:
                log.warning("a response's outputs do not decode: %s", exc.message)
                raise InternalError("a backend sent a malformed response") from exc
            self._message = None
        return self._outputs


class WireResponse(InferResponse):
    """An ``InferResponse`` read from serialized bytes (its ``wire``) whose ``outputs`` are decoded
    when first read: a front that relays the bytes (gRPC, and every cache hit served over it) never
    pays for them. The bytes parsed as a ``ModelInferResponse``; outputs that then do not decode
    (a count, a shape or a size that disagrees with the data) are the sender's fault, not the
    client's: reading them raises ``InternalError``, every time, and the detail is logged. A copy
    made with ``dataclasses.replace`` holds decoded outputs; one made with ``for_another_request``
    stays lazy."""

    __slots__ = ("_lazy",)

    def __init__(self, *args, lazy: _LazyOutputs | None = None, **kwargs):
        self._lazy = lazy
        InferResponse.__init__(self, *args, **kwargs)

    @classmethod
    def undecoded(cls, model_name: str, model_version: str, id: str, parameters: dict[str, ParameterValue],
                  wire: bytes, lazy: _LazyOutputs) -> WireResponse:
        """One whose outputs ``lazy`` decodes when first read, its fields set directly (this runs for
        every response relayed and every cache hit; keyword ``__init__`` costs microseconds)."""
        response = cls.__new__(cls)
        response._lazy = lazy
        _OUTPUTS_SLOT.__set__(response, None)
        response.model_name, response.model_version, response.id = model_name, model_version, id
        response.parameters, response.wire = parameters, wire
        return response

    @property
    def outputs(self) -> list[Tensor]:
        outputs = _OUTPUTS_SLOT.__get__(self)
        if outputs is None:
            outputs = self._lazy.get()
            _OUTPUTS_SLOT.__set__(self, outputs)
        return outputs

    @outputs.setter
    def outputs(self, value: list[Tensor]) -> None:
        _OUTPUTS_SLOT.__set__(self, value)

    def __eq__(self, other: object) -> bool:
        """Equal to any ``InferResponse`` (lazy or not) with the same compared fields."""
        if not isinstance(other, InferResponse):
            return NotImplemented
        return all(getattr(self, f.name) == getattr(other, f.name)
                   for f in dataclasses.fields(InferResponse) if f.compare)


def for_another_request(response: InferResponse) -> InferResponse:
    """A copy of ``response`` to answer another request with: ``parameters`` of its own (``id`` and
    parameters are set per request), the outputs list and ``wire`` shared; a ``WireResponse``'s
    outputs stay undecoded until one of the copies reads them (then decoded once for all)."""
    if isinstance(response, WireResponse) and _OUTPUTS_SLOT.__get__(response) is None:
        return WireResponse.undecoded(response.model_name, response.model_version, response.id,
                                      dict(response.parameters), response.wire, response._lazy)
    return InferResponse(response.model_name, response.outputs, response.model_version, response.id,
                         dict(response.parameters), response.wire)


def element_count(shape: Iterable[int]) -> int:
    return math.prod(shape)


# ---------------------------------------------------------------------------------------------
# metadata


INPUT_ALTERNATIVES_PARAMETER = "input_alternatives"
"""Model metadata parameter: JSON ``{input: [[datatype, shape], ...]}``, the other forms an input is
accepted in (the protocol's tensor metadata holds one datatype and shape)."""


def advertised_parameters(meta: ModelMetadata) -> dict[str, ParameterValue]:
    """``meta.parameters`` plus the inputs' alternative forms, as the wire carries them."""
    params = dict(meta.parameters)
    alternatives = {spec.name: [[datatype, list(shape)] for datatype, shape in spec.alternatives]
                    for spec in meta.inputs if spec.alternatives}
    if alternatives:
        params[INPUT_ALTERNATIVES_PARAMETER] = json.dumps(alternatives, separators=(",", ":"))
    return params


def _with_alternatives(inputs: tuple[TensorSpec, ...], params: dict[str, ParameterValue]) -> tuple[TensorSpec, ...]:
    """``inputs`` with the alternative forms ``params`` advertises (removed from ``params``);
    a malformed advertisement is ignored, never fatal: the primary forms still hold."""
    raw = params.pop(INPUT_ALTERNATIVES_PARAMETER, None)
    if not isinstance(raw, str):
        return inputs
    try:
        table = json.loads(raw)
        forms = {name: tuple((str(d), tuple(int(x) for x in shape)) for d, shape in entries)
                 for name, entries in table.items()}
    except (ValueError, TypeError, AttributeError):
        return inputs
    return tuple(dataclasses.replace(spec, alternatives=forms[spec.name]) if spec.name in forms else spec
                 for spec in inputs)


def model_metadata_to_proto(meta: ModelMetadata) -> pb.ModelMetadataResponse:
    msg = pb.ModelMetadataResponse(name=meta.name, versions=list(meta.versions), platform=meta.platform)
    for spec in meta.inputs:
        msg.inputs.add(name=spec.name, datatype=spec.datatype, shape=spec.shape)
    for spec in meta.outputs:
        msg.outputs.add(name=spec.name, datatype=spec.datatype, shape=spec.shape)
    parameters_to_proto(advertised_parameters(meta), msg.parameters)
    return msg


def model_metadata_from_proto(msg: pb.ModelMetadataResponse) -> ModelMetadata:
    params = parameters_from_proto(msg.parameters, "parameters")
    inputs = tuple(TensorSpec(t.name, t.datatype, tuple(t.shape)) for t in msg.inputs)
    return ModelMetadata(
        name=msg.name,
        versions=tuple(msg.versions),
        platform=msg.platform,
        inputs=_with_alternatives(inputs, params),
        outputs=tuple(TensorSpec(t.name, t.datatype, tuple(t.shape)) for t in msg.outputs),
        parameters=params,
    )


def server_metadata_to_proto(meta: ServerMetadata) -> pb.ServerMetadataResponse:
    return pb.ServerMetadataResponse(name=meta.name, version=meta.version, extensions=list(meta.extensions))


# ---------------------------------------------------------------------------------------------
# serialized messages


def _parse(message_class, data: bytes, field: str):
    try:
        return message_class.FromString(data)
    except DecodeError:
        raise InvalidArgument("is not a valid Open Inference Protocol message", field=field) from None


def request_from_wire(data: bytes, limits: RequestLimits = DEFAULT_LIMITS,
                      precheck: Precheck | None = None) -> InferRequest:
    """Decode a serialized ``ModelInferRequest``, keeping ``data`` as the request's ``wire``."""
    request = request_from_proto(_parse(pb.ModelInferRequest, data, "request"), limits, precheck)
    request.wire = data
    return request


def request_to_wire(request: InferRequest) -> bytes:
    """The serialized request: its ``wire`` when it has one, else freshly encoded."""
    if request.wire is not None:
        return request.wire
    return request_to_proto(request).SerializeToString()


def response_from_wire(data: bytes, limits: RequestLimits = DEFAULT_LIMITS) -> InferResponse:
    """A serialized ``ModelInferResponse`` (bytes that do not parse are ``InvalidArgument``) as a
    ``WireResponse``: ``data`` kept as its ``wire``, its outputs decoded when first read."""
    return response_from_message(_parse(pb.ModelInferResponse, data, "response"), data, limits)


def response_from_message(msg: pb.ModelInferResponse, data: bytes,
                          limits: RequestLimits = DEFAULT_LIMITS) -> InferResponse:
    """``response_from_wire`` of a message already parsed: ``data`` must be its serialized form."""
    return WireResponse.undecoded(msg.model_name, msg.model_version, msg.id,
                                  parameters_from_proto(msg.parameters, "parameters"), data, _LazyOutputs(msg, limits))


def decoded_response_from_wire(data: bytes, limits: RequestLimits = DEFAULT_LIMITS) -> InferResponse:
    """A serialized ``ModelInferResponse`` decoded whole, its outputs too (a stream's chunks: every
    one is read), ``data`` kept as its ``wire``. Bytes that do not parse, or outputs that do not
    decode, raise ``InvalidArgument`` (the caller knows who sent them and says so)."""
    response = response_from_proto(_parse(pb.ModelInferResponse, data, "response"), limits)
    response.wire = data
    return response


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


_REQUEST_ID_TAG = bytes([pb.ModelInferRequest.DESCRIPTOR.fields_by_name["id"].number << 3 | 2])


TIMEOUT_PARAMETER = "timeout"
"""Request parameter (int64, microseconds): how long the answer is worth waiting for, from when the
server receives it (tritonclient's ``timeout=``); a server drops the request once it has passed."""
_PARAMETERS_TAG = bytes([pb.ModelInferRequest.DESCRIPTOR.fields_by_name["parameters"].number << 3 | 2])
_TIMEOUT_KEY = b"\x0a" + _varint(len(TIMEOUT_PARAMETER)) + TIMEOUT_PARAMETER.encode()  # map entry key = 1
_INT64_PARAM_TAG = bytes([pb.InferParameter.DESCRIPTOR.fields_by_name["int64_param"].number << 3])


def request_wire_with_id(wire: bytes, request_id: str, timeout_s: float | None = None) -> bytes:
    """Serialized request bytes with their ``id`` replaced by ``request_id`` and, with
    ``timeout_s``, their ``timeout`` parameter set: fields appended (protobuf keeps the last value
    of a scalar field and of a map key), nothing re-encoded."""
    ident = request_id.encode("utf-8")
    parts = [wire, _REQUEST_ID_TAG, _varint(len(ident)), ident]
    if timeout_s is not None:
        value = _INT64_PARAM_TAG + _varint(max(1, int(timeout_s * 1e6)))
        entry = b"".join((_TIMEOUT_KEY, b"\x12", _varint(len(value)), value))  # map entry value = 2
        parts += (_PARAMETERS_TAG, _varint(len(entry)), entry)
    return b"".join(parts)


MULTIPLEXED_KEY = "edgecloud-multiplexed"
"""Metadata of a ``ModelStreamInfer`` whose client multiplexes single-answer requests on it and
resends, another way, any the stream ended (OK) without answering (``gateway.multiplexed``).
The server confirms by sending the key back in its initial metadata."""

CANCEL_PARAMETER = "edgecloud_cancel"
"""Request parameter of a multiplexed stream's cancel message (an edgecloud addition): a request
naming only an ``id`` and this parameter (true) asks the server to drop that request's work."""
_CANCEL_ENTRY = b"".join((b"\x0a", _varint(len(CANCEL_PARAMETER)), CANCEL_PARAMETER.encode(), b"\x12\x02\x08\x01"))
_CANCEL_TAIL = _PARAMETERS_TAG + _varint(len(_CANCEL_ENTRY)) + _CANCEL_ENTRY


def cancel_wire(request_id: str) -> bytes:
    """The cancel message for the request sent on a multiplexed stream as ``request_id``."""
    ident = request_id.encode("utf-8")
    return b"".join((_REQUEST_ID_TAG, _varint(len(ident)), ident, _CANCEL_TAIL))


def cancelled_id(data: bytes) -> str | None:
    """The id a cancel message names; None for any other message (only bytes that begin with the
    ``id`` field, as a cancel message does and a request with a model name does not, are parsed)."""
    if data[:1] != _REQUEST_ID_TAG:
        return None
    try:
        msg = pb.ModelInferRequest.FromString(data)
    except Exception:  # noqa: BLE001 - not a cancel message: served (and refused) as a request
        return None
    param = msg.parameters.get(CANCEL_PARAMETER)
    if param is None or param.bool_param is not True or msg.model_name or msg.inputs:
        return None
    return msg.id


# ``id`` written explicitly even when empty, so it replaces whatever id the reused bytes carry.
_RESPONSE_ID_TAG = _varint(pb.ModelInferResponse.DESCRIPTOR.fields_by_name["id"].number << 3 | 2)


def response_to_wire(response: InferResponse) -> bytes:
    """The serialized response. With a ``wire``, those bytes followed by the response's ``id`` and
    ``parameters`` (protobuf merges a message's later fields over its earlier ones: scalars are
    replaced, map entries added or replaced), so the outputs are never encoded again."""
    if response.wire is None:
        return response_to_proto(response).SerializeToString()
    head = pb.ModelInferResponse()
    parameters_to_proto(response.parameters, head.parameters)
    ident = response.id.encode("utf-8")
    return b"".join((response.wire, _RESPONSE_ID_TAG, _varint(len(ident)), ident, head.SerializeToString()))


_STREAM_ERROR_TAG = b"\x0a"  # ModelStreamInferResponse.error_message = 1, length-delimited
_STREAM_RESPONSE_TAG = b"\x12"  # ModelStreamInferResponse.infer_response = 2, length-delimited


def stream_response_to_wire(response: InferResponse) -> bytes:
    """A serialized ``ModelStreamInferResponse`` carrying ``response`` (its bytes wrapped, not
    re-encoded)."""
    inner = response_to_wire(response)
    return b"".join((_STREAM_RESPONSE_TAG, _varint(len(inner)), inner))


def stream_response_part(data: bytes) -> bytes | None:
    """The serialized ``infer_response`` of a ``ModelStreamInferResponse`` that holds nothing else
    (no error), sliced out without decoding; None for any other message (decode it whole)."""
    if len(data) < 2 or data[0] != 0x12:
        return None
    length = shift = 0
    position = 1
    while position < len(data) and position < 11:
        byte = data[position]
        position += 1
        length |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return data[position:] if position + length == len(data) else None
    return None


STREAM_ERROR_KIND_PARAMETER = "error_kind"
"""Parameter of a stream error's response part: the failure's ``ErrorKind`` value (an edgecloud
addition: the protocol's stream errors carry only a message, and a gateway must know whether
another backend may serve the request)."""


STREAM_RETRY_AFTER_PARAMETER = "retry_after_s"
"""Parameter of a stream error's response part: the failure's retry hint in seconds (what a
unary call's ``retry-after`` trailer carries; an edgecloud addition too)."""


def stream_error_to_wire(message: str, request: InferRequest | None = None, kind: ErrorKind | None = None,
                         retry_after_s: float | None = None) -> bytes:
    """A serialized ``ModelStreamInferResponse`` reporting one request's failure; the response part
    names the request (model, version, id) when it was decoded far enough to know them, and the
    error's kind and retry hint when known."""
    out = pb.ModelStreamInferResponse(error_message=message)
    if request is not None:
        out.infer_response.model_name = request.model_name
        out.infer_response.model_version = request.model_version
        out.infer_response.id = request.id
    if kind is not None:
        out.infer_response.parameters[STREAM_ERROR_KIND_PARAMETER].string_param = kind.value
    if retry_after_s:
        out.infer_response.parameters[STREAM_RETRY_AFTER_PARAMETER].double_param = retry_after_s
    return out.SerializeToString()


def request_naming(data: bytes) -> InferRequest | None:
    """A request that failed to decode, named as far as its bytes allow (model, version, id, no
    inputs), so a stream's error says which request failed; None when the bytes do not parse."""
    try:
        msg = pb.ModelInferRequest.FromString(data)
    except Exception:  # noqa: BLE001 - any failure to parse: nothing to name
        return None
    return InferRequest(msg.model_name, [], model_version=msg.model_version, id=msg.id)


def stream_error_from_proto(msg: pb.ModelStreamInferResponse) -> InferenceError:
    """The typed error a stream response reports (INTERNAL when it does not say its kind)."""
    param = msg.infer_response.parameters.get(STREAM_ERROR_KIND_PARAMETER)
    try:
        kind = ErrorKind(param.string_param) if param is not None else ErrorKind.INTERNAL
    except ValueError:
        kind = ErrorKind.INTERNAL
    hint = msg.infer_response.parameters.get(STREAM_RETRY_AFTER_PARAMETER)
    retry_after_s = hint.double_param if hint is not None and hint.double_param > 0 else None
    return error_for_kind(kind, msg.error_message or "the stream failed", retry_after_s=retry_after_s)
