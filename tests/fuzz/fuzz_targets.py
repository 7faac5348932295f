"""One-input fuzz targets over the request path every server shares: protobuf parse, gRPC decode,
REST (JSON and binary) decode, validation, and the gateway's cache key; shared by the atheris
harness (``atheris_harness.py``, long runs) and the regression replay (``test_regressions.py``).

Contract: ``one_input(data)`` never raises. Inside, a protobuf ``DecodeError`` from
``ModelInferRequest.FromString`` is the transport's refusal and ends the input; from then on only
typed ``InferenceError``s may escape any step, and of those only the kinds the step may produce
(decoders: INVALID_ARGUMENT / RESOURCE_EXHAUSTED; validation: INVALID_ARGUMENT). Anything else —
a ``TypeError`` deep in numpy, a decoded tensor whose array does not match its shape and
datatype, a cache key that raises — is a finding: ``one_input`` lets it propagate (atheris reports
it as a crash; the replay test fails).

The first byte chooses the target, so one corpus covers all of them:
``0`` protobuf bytes; ``1`` a request the fuzzer's bytes *construct* (structure-aware); ``2`` a REST
JSON body; ``3`` a REST body with a binary section (two bytes of header length, then the body);
``4`` a REST JSON body the fuzzer's bytes construct; ``5`` upstream response bytes (what the
gateway decodes from a backend).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable

from google.protobuf.message import DecodeError

from edgecloud import codec, json_codec
from edgecloud.datatypes import DATATYPES
from edgecloud.errors import ErrorKind, InferenceError
from edgecloud.limits import RequestLimits
from edgecloud.types import InferRequest, ModelMetadata, TensorSpec
from edgecloud.validation import validate_request
from gateway.cache.keys import cache_key
from gateway.cache.api import CacheRequest
from protos import inference_pb2 as pb

LIMITS = RequestLimits()
"""The servers' default limits: the fuzzer must find what a default deployment would suffer."""
REFERENCE = ModelMetadata("all-MiniLM-L6-v2", ("1",), "onnxruntime_onnx", (TensorSpec("text", "BYTES", (-1,)),),
                          (TensorSpec("embedding", "FP32", (-1, 384)),))
GENERIC = ModelMetadata("m", ("1",), "p", (TensorSpec("a", "FP32", (-1, 3)), TensorSpec("b", "INT64", (-1,)),
                                           TensorSpec("c", "BYTES", (2, -1)), TensorSpec("d", "BOOL", ())),
                        (TensorSpec("y", "FP32", (-1,)), TensorSpec("z", "BYTES", (-1,))))
DECODE_KINDS = frozenset({ErrorKind.INVALID_ARGUMENT, ErrorKind.RESOURCE_EXHAUSTED})
NAMES = ("text", "a", "b", "c", "d", "y", "z", "embedding", "", "t\x00", "\u00e9")
DATATYPE_NAMES = (*DATATYPES, "", "bytes", "STRING", "FP8")


class Finding(AssertionError):
    """A property of the request path that did not hold."""


class KnownFinding(Finding):
    """A finding already reported (and pinned by an xfail in ``test_regressions.py``); the harness
    skips these so a long run can find the next one (``EDGECLOUD_FUZZ_REPORT_KNOWN=1`` reports them)."""


BUG_RESPONSE_NAMES = (
    "codec.response_from_proto accepts outputs with an empty or repeated name; the gateway's REST front "
    "then encodes a body that json_codec.response_from_json (its own SDK) refuses")
BUG_NON_FINITE_JSON = (
    "json_codec.response_to_json writes NaN / Infinity outputs as JSON data: the body is not JSON "
    "(RFC 8259 has no NaN), and json_codec.response_from_json refuses it")


def _expect(kind_set: frozenset[ErrorKind], exc: InferenceError, step: str) -> None:
    if exc.kind not in kind_set:
        raise Finding(f"{step} raised {exc.kind.name}: {exc.message}") from exc
    if not isinstance(exc.message, str) or not exc.message:
        raise Finding(f"{step} raised an error without a message")


def check_request(request: InferRequest, limits: RequestLimits = LIMITS) -> None:
    """What any successfully decoded request must satisfy."""
    if not (0 < len(request.inputs) <= limits.max_inputs):
        raise Finding(f"{len(request.inputs)} inputs decoded")
    names = [tensor.name for tensor in request.inputs]
    if len(set(names)) != len(names) or not all(names):
        raise Finding(f"input names {names!r}")
    for tensor in request.inputs:
        info = DATATYPES.get(tensor.datatype)
        if info is None:
            raise Finding(f"datatype {tensor.datatype!r} decoded")
        if tuple(tensor.data.shape) != tuple(tensor.shape):
            raise Finding(f"{tensor.name}: array shape {tensor.data.shape} vs shape {tensor.shape}")
        if tensor.data.dtype != info.numpy_dtype:
            raise Finding(f"{tensor.name}: array dtype {tensor.data.dtype} for {tensor.datatype}")
        if len(tensor.shape) > limits.max_rank or any(d < 0 for d in tensor.shape):
            raise Finding(f"{tensor.name}: shape {tensor.shape}")
        if tensor.data.size > limits.max_elements:
            raise Finding(f"{tensor.name}: {tensor.data.size} elements")
        if tensor.datatype == "BYTES":
            for item in tensor.data.reshape(-1):
                if type(item) is not bytes or len(item) > limits.max_bytes_element:
                    raise Finding(f"{tensor.name}: BYTES element {type(item).__name__} of {len(item)}")
    if len(request.outputs) > limits.max_outputs:
        raise Finding(f"{len(request.outputs)} outputs decoded")


def validate(request: InferRequest, msg: pb.ModelInferRequest | None) -> None:
    """Validation against both models may only say INVALID_ARGUMENT; a valid request gets a key."""
    for meta in (REFERENCE, GENERIC):
        try:
            validate_request(request, meta, LIMITS)
        except InferenceError as exc:
            _expect(frozenset({ErrorKind.INVALID_ARGUMENT}), exc, "validate_request")
            continue
        key = cache_key(CacheRequest(request, "1", tuple(request.outputs), False, False))
        if len(key) != 32:
            raise Finding(f"cache key of {len(key)} bytes")


def decode_proto(data: bytes) -> None:
    try:
        msg = pb.ModelInferRequest.FromString(data)
    except DecodeError:
        return
    decode_message(msg)


def decode_message(msg: pb.ModelInferRequest) -> None:
    try:
        request = codec.request_from_proto(msg, LIMITS)
    except InferenceError as exc:
        _expect(DECODE_KINDS, exc, "request_from_proto")
        return
    check_request(request)
    validate(request, msg)


def decode_json(body: bytes, header_length: int | None = None) -> None:
    try:
        request = json_codec.request_from_json(body, header_length, LIMITS, model_name="m")
    except InferenceError as exc:
        _expect(DECODE_KINDS, exc, "request_from_json")
        return
    check_request(request)
    validate(request, None)


def decode_response(data: bytes) -> None:
    try:
        msg = pb.ModelInferResponse.FromString(data)
    except DecodeError:
        return
    try:
        response = codec.response_from_proto(msg, LIMITS)
    except InferenceError as exc:
        _expect(DECODE_KINDS, exc, "response_from_proto")
        return
    body, length = json_codec.response_to_json(response, requested_binary=bool(len(data) % 2))
    try:
        again = json_codec.response_from_json(body, length, LIMITS)
    except InferenceError as exc:
        names = [tensor.name for tensor in response.outputs]
        bad_names = "" in names or len(set(names)) < len(names)
        known = KnownFinding if bad_names or "not a JSON number" in exc.message else Finding
        raise known(f"a response the gateway decoded does not survive its own REST encoding: {exc}") from exc
    if [t.name for t in again.outputs] != [t.name for t in response.outputs]:
        raise Finding("REST response round trip changed the outputs")


# ---------------------------------------------------------------------------------------------
# structure-aware construction from the fuzzer's bytes


class Bytes:
    """Draws values from the fuzzer's bytes (zeros once they run out): a portable
    ``FuzzedDataProvider`` that pytest can use without atheris."""

    def __init__(self, data: bytes):
        self.data = data
        self.at = 0

    def take(self, count: int) -> bytes:
        out = self.data[self.at : self.at + count]
        self.at += count
        return out.ljust(count, b"\0")

    def int(self, low: int, high: int) -> int:
        span = high - low + 1
        width = max(1, (span.bit_length() + 7) // 8)
        return low + int.from_bytes(self.take(width), "little") % span

    def pick(self, options):
        return options[self.int(0, len(options) - 1)]

    def dim(self) -> int:
        return self.pick((0, 1, 2, 3, -1, 2**31, 2**63 - 1, -(2**63), 4096, 4097, self.int(0, 40)))

    def rest(self) -> bytes:
        out = self.data[self.at :]
        self.at = len(self.data)
        return out


def build_message(source: Bytes) -> pb.ModelInferRequest:
    msg = pb.ModelInferRequest(model_name=source.pick(("all-MiniLM-L6-v2", "m", "")),
                               model_version=source.pick(("", "1", "9")))
    use_raw = source.int(0, 1) == 1
    for _ in range(source.int(0, 4)):
        datatype = source.pick(DATATYPE_NAMES)
        shape = [source.dim() for _ in range(source.int(0, 3))]
        tensor = msg.inputs.add(name=source.pick(NAMES), datatype=datatype, shape=shape)
        info = DATATYPES.get(datatype)
        payload = source.take(source.int(0, 24))
        if use_raw:
            if datatype == "BYTES" and source.int(0, 1):
                payload = codec.serialize_bytes([payload[i : i + 3] for i in range(0, len(payload), 3)])
            msg.raw_input_contents.append(payload)
            continue
        field_name = info.contents_field if info is not None and source.int(0, 3) else source.pick(
            [f.name for f in pb.InferTensorContents.DESCRIPTOR.fields])
        if field_name is None:
            continue
        values = getattr(tensor.contents, field_name)
        for index in range(source.int(0, 5)):
            chunk = payload[index * 4 : index * 4 + 4].ljust(4, b"\0")
            if field_name == "bytes_contents":
                values.append(chunk)
            elif field_name == "bool_contents":
                values.append(bool(chunk[0] & 1))
            elif field_name in ("fp32_contents", "fp64_contents"):
                values.append(struct.unpack("<f", chunk)[0])
            elif field_name in ("uint_contents",):
                values.append(struct.unpack("<I", chunk)[0])
            elif field_name == "uint64_contents":
                values.append(struct.unpack("<I", chunk)[0] << source.int(0, 32))
            else:
                values.append(struct.unpack("<i", chunk)[0])
    for _ in range(source.int(0, 2)):
        msg.outputs.add(name=source.pick(NAMES))
    for _ in range(source.int(0, 2)):
        slot = msg.parameters[source.pick(("binary_data_output", "no_cache", "quality", "x"))]
        choice = source.int(0, 5)
        if choice == 1:
            slot.bool_param = True
        elif choice == 2:
            slot.int64_param = -source.int(0, 2**63)
        elif choice == 3:
            slot.uint64_param = source.int(0, 2**64 - 1)
        elif choice == 4:
            slot.double_param = struct.unpack("<d", source.take(8))[0]
        elif choice == 5:
            slot.string_param = source.pick(("cloud", "", "\u00e9"))
    return msg


def _json_value(source: Bytes, depth: int = 0):
    kind = source.int(0, 9 if depth < 3 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return source.int(0, 1) == 1
    if kind == 2:
        return source.pick((0, 1, -1, 300, 2**63 - 1, 2**64, -(2**63) - 1, 10**30))
    if kind == 3:
        return source.pick((0.5, -0.0, 1e39, 1e-45, 3.4e38, 65504.0, 65520.0))
    if kind in (4, 5, 6):
        return source.pick(("", "text", "\ud800", "\u00e9", "BYTES", "a" * 5))
    if kind in (7, 8):
        return [_json_value(source, depth + 1) for _ in range(source.int(0, 3))]
    return {source.pick(NAMES): _json_value(source, depth + 1) for _ in range(source.int(0, 2))}


def build_json(source: Bytes) -> tuple[bytes, int | None]:
    inputs = []
    blobs = []
    for _ in range(source.int(0, 3)):
        entry: dict = {}
        if source.int(0, 7):
            entry["name"] = source.pick(NAMES) if source.int(0, 3) else _json_value(source)
        if source.int(0, 7):
            entry["datatype"] = source.pick(DATATYPE_NAMES) if source.int(0, 3) else _json_value(source)
        if source.int(0, 7):
            entry["shape"] = [source.dim() for _ in range(source.int(0, 3))] if source.int(0, 3) else \
                _json_value(source)
        if source.int(0, 2) == 0:
            blob = source.take(source.int(0, 16))
            blobs.append(blob)
            entry["parameters"] = {"binary_data_size": source.pick((len(blob), len(blob) + 1, -1, "4", None))}
        else:
            entry["data"] = _json_value(source)
        inputs.append(entry)
    doc = {"inputs": inputs} if source.int(0, 7) else _json_value(source)
    if isinstance(doc, dict) and source.int(0, 1):
        doc["outputs"] = [{"name": source.pick(NAMES)}] if source.int(0, 1) else _json_value(source)
    if isinstance(doc, dict) and source.int(0, 1):
        doc["parameters"] = _json_value(source)
    header = json.dumps(doc).encode()
    if not blobs:
        return header, None
    return header + b"".join(blobs), len(header) + source.pick((0, 0, 0, 1, -1))


TARGETS: tuple[Callable[[bytes], None], ...] = (
    decode_proto,
    lambda data: decode_message(build_message(Bytes(data))),
    lambda data: decode_json(data),
    lambda data: decode_json(data[2:], int.from_bytes(data[:2].ljust(2, b"\0"), "little")),
    lambda data: decode_json(*build_json(Bytes(data))),
    decode_response,
)


def one_input(data: bytes) -> None:
    """Run the target the first byte chooses on the rest; raises only on a finding."""
    if not data:
        return
    TARGETS[data[0] % len(TARGETS)](data[1:])


def as_input(target: int, payload: bytes) -> bytes:
    """The harness input that runs ``payload`` through target ``target``."""
    return bytes([target]) + payload


__all__ = ["BUG_NON_FINITE_JSON", "BUG_RESPONSE_NAMES", "Bytes", "Finding", "KnownFinding", "LIMITS", "TARGETS",
           "as_input", "build_json", "build_message", "check_request", "one_input"]
