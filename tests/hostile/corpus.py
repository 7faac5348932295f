"""The hostile-input corpus: malformed Open Inference Protocol requests over gRPC and HTTP, as data.

Each ``Case`` names one way a request can be wrong, builds it (``build()`` returns a fresh payload),
and says what every server must answer: the status, and the text the error message must contain
(the field at fault). ``xfail`` lists the targets where a known product bug makes the answer wrong
today, with the reason; the corpus test marks those ``xfail(strict=True)`` so a fix is noticed.

Payloads: a ``pb.ModelInferRequest``; ``bytes`` (exact gRPC wire bytes, for what protobuf cannot
build); ``Http`` (a POST with exact headers and body); ``Flood`` (a chunked body of many tiny
chunks); ``RawHttp`` (exact bytes on the socket, for framing the HTTP parser refuses).

The servers under test run with the limits below (``LIMITS``, ``MAX_MESSAGE``) so that "over the
limit" costs a megabyte, not sixty-four.
"""

from __future__ import annotations

import gzip
import json
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc

from edgecloud.codec import serialize_bytes
from protos import inference_pb2 as pb

MODEL = "all-MiniLM-L6-v2"
INFER_PATH = f"/v2/models/{MODEL}/infer"
MAX_MESSAGE = 1024 * 1024
"""gRPC message and HTTP body limit of every server under test."""
MAX_ELEMENT = 64 * 1024
MAX_BATCH = 64
LIMITS = {"max_batch_size": MAX_BATCH, "max_bytes_element": MAX_ELEMENT}
"""``limits`` section of every server under test (the rest are the defaults: 64 inputs, outputs
and parameters, rank 8, 16 Mi elements)."""
LONG = 20_000
"""A name longer than gRPC's 16 KiB hard limit on response metadata (where the status message travels)."""

IA = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED

GRPC_TARGETS = ("gateway-grpc", "edge-grpc", "cloud-grpc")
HTTP_TARGETS = ("gateway-http", "edge-http")

BODY_TIMEOUT_MS = 5000
"""``server.body_read_timeout_ms`` of every server under test: the product's default. Shorter, it
races the flood cases (a megabyte of one-byte chunks takes about a second to send here, more on a
busy machine), which must be refused for their size (413), not their pace."""


@dataclass(frozen=True)
class Http:
    """POST ``body`` to ``path`` with exactly ``headers`` (plus Host, Connection, Content-Length)."""

    body: bytes
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "application/json"})
    path: str = INFER_PATH


@dataclass(frozen=True)
class Flood:
    """A chunked POST of ``chunks`` chunks of ``chunk``; never terminated unless ``terminate``."""

    chunks: int
    chunk: bytes = b" "
    terminate: bool = True
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "application/json"})
    path: str = INFER_PATH


@dataclass(frozen=True)
class RawHttp:
    """Exactly these bytes on a fresh connection (and ``then``, a moment later, apart from them)."""

    data: bytes
    then: bytes = b""


@dataclass(frozen=True)
class Case:
    name: str
    transport: str
    """``grpc`` or ``http``."""
    build: Callable[[], Any]
    status: grpc.StatusCode | int
    field: str | None
    """Text the error message must contain (the field at fault); None where the transport's own
    layer answers before any field is known (grpc's message size check, aiohttp's HTTP parser)."""
    json_error: bool = True
    """HTTP: the error body is ``{"error": message}`` (False where aiohttp's HTTP parser answers)."""
    xfail: dict[str, str] = field(default_factory=dict)
    """Target -> reason, for a known bug that makes this case fail there ("*": every target)."""
    max_s: float = 1.0
    """Bound on the answer time; only the megabyte of one-byte chunks gets more (aiohttp parses
    each chunk in Python, about 1.5 us apiece)."""

    def targets(self) -> tuple[str, ...]:
        return GRPC_TARGETS if self.transport == "grpc" else HTTP_TARGETS

    def xfail_reason(self, target: str) -> str | None:
        return self.xfail.get(target) or self.xfail.get("*")


# ---------------------------------------------------------------------------------------------
# gRPC builders


def msg(texts=(b"hello",), *, model: str = MODEL, name: str = "text", datatype: str = "BYTES", shape=None,
        version: str = "") -> pb.ModelInferRequest:
    """A raw-input request (the reference model's shape unless told otherwise)."""
    out = pb.ModelInferRequest(model_name=model, model_version=version, id="hostile")
    out.inputs.add(name=name, datatype=datatype, shape=[len(texts)] if shape is None else shape)
    out.raw_input_contents.append(serialize_bytes(texts) if datatype == "BYTES" else b"".join(texts))
    return out


def typed(shape, datatype: str = "BYTES", **contents) -> pb.ModelInferRequest:
    out = pb.ModelInferRequest(model_name=MODEL, id="hostile")
    tensor = out.inputs.add(name="text", datatype=datatype, shape=shape)
    for slot, values in contents.items():
        getattr(tensor.contents, slot).extend(values)
    return out


def raw(data: bytes, shape, datatype: str = "BYTES") -> pb.ModelInferRequest:
    out = pb.ModelInferRequest(model_name=MODEL, id="hostile")
    out.inputs.add(name="text", datatype=datatype, shape=shape)
    out.raw_input_contents.append(data)
    return out


def changed(build: Callable[[], pb.ModelInferRequest], change: Callable[[pb.ModelInferRequest], Any]):
    """``build`` then ``change`` (in place), as a builder."""

    def make() -> pb.ModelInferRequest:
        out = build()
        change(out)
        return out

    return make


def add_inputs(count: int, *, raw_too: bool = True, name: str = "extra{}"):
    def change(out: pb.ModelInferRequest) -> None:
        for index in range(count):
            out.inputs.add(name=name.format(index), datatype="BYTES", shape=[1])
            if raw_too:
                out.raw_input_contents.append(serialize_bytes([b"x"]))

    return change


def add_outputs(*names: str):
    return lambda out: [out.outputs.add(name=name) for name in names]


def add_parameters(count: int):
    return lambda out: [out.parameters[f"p{i}"].CopyFrom(pb.InferParameter(int64_param=i)) for i in range(count)]


def wire(*fields: bytes) -> bytes:
    """Protobuf wire bytes from pre-encoded fields."""
    return b"".join(fields)


def _ld(number: int, payload: bytes) -> bytes:
    """A length-delimited field (payload < 128 bytes)."""
    return bytes([number << 3 | 2, len(payload)]) + payload


_GOOD_WIRE = msg().SerializeToString()

G = "grpc"
GRPC_CASES = [
    # model, version
    Case("empty model name", G, lambda: msg(model=""), IA, "model_name"),
    Case("unknown model", G, lambda: msg(model="nope"), NOT_FOUND, "model_name"),
    Case("NUL inside the model name", G, lambda: msg(model=MODEL + "\x00"), NOT_FOUND, "model_name"),
    Case("unknown version", G, lambda: msg(version="9"), NOT_FOUND, "model_version"),
    Case("20 KB model name", G, lambda: msg(model="m" * LONG), NOT_FOUND, "model_name"),
    Case("20 KB model version", G, lambda: msg(version="9" * LONG), NOT_FOUND, "model_version"),
    # inputs and outputs: presence, names, counts
    Case("no inputs", G, lambda: pb.ModelInferRequest(model_name=MODEL), IA, "inputs"),
    Case("raw contents but no inputs", G,
         lambda: pb.ModelInferRequest(model_name=MODEL, raw_input_contents=[serialize_bytes([b"x"])]), IA,
         "inputs"),
    Case("65 inputs", G, changed(msg, add_inputs(64)), EXHAUSTED, "inputs"),
    Case("10000 inputs", G, changed(msg, add_inputs(9999)), EXHAUSTED, "inputs"),
    Case("65 requested outputs", G, changed(msg, add_outputs(*(f"o{i}" for i in range(65)))), EXHAUSTED,
         "outputs"),
    Case("10000 requested outputs", G, changed(msg, add_outputs(*(f"o{i}" for i in range(10_000)))), EXHAUSTED,
         "outputs"),
    Case("65 parameters", G, changed(msg, add_parameters(65)), EXHAUSTED, "parameters"),
    Case("parameter without a value", G, changed(msg, lambda out: out.parameters["x"].CopyFrom(pb.InferParameter())),
         IA, "parameters[x]"),
    Case("duplicate input", G, changed(msg, add_inputs(1, name="text")), IA, "inputs[text]"),
    Case("empty input name", G, lambda: msg(name=""), IA, "inputs[0]"),
    Case("missing input (misspelt)", G, lambda: msg(name="txt"), IA, "inputs"),
    Case("look-alike input name (Cyrillic e)", G, lambda: msg(name="t\u0435xt"), IA, "inputs"),
    Case("unknown extra input", G, changed(msg, add_inputs(1, name="more")), IA, "inputs[more]"),
    Case("20 KB name of an extra input", G, changed(msg, add_inputs(1, name="n" * LONG)), IA, "inputs["),
    Case("empty output name", G, changed(msg, add_outputs("")), IA, "outputs[0]"),
    Case("duplicate requested output", G, changed(msg, add_outputs("embedding", "embedding")), IA,
         "outputs[embedding]"),
    Case("unknown requested output", G, changed(msg, add_outputs("logits")), IA, "outputs[logits]"),
    Case("two raw entries for one input", G,
         changed(msg, lambda out: out.raw_input_contents.append(serialize_bytes([b"x"]))), IA, "raw_input_contents"),
    Case("one raw entry for two inputs", G, changed(msg, add_inputs(1, raw_too=False)), IA, "raw_input_contents"),
    Case("raw contents and typed contents on one input", G,
         changed(msg, lambda out: out.inputs[0].contents.bytes_contents.append(b"x")), IA, "inputs[text]"),
    # datatype
    Case("unknown datatype", G, lambda: msg(datatype="STRING"), IA, "inputs[text].datatype"),
    Case("lower-case datatype", G, lambda: msg(datatype="bytes"), IA, "inputs[text].datatype"),
    Case("wrong datatype (FP32)", G, lambda: msg([b"\0\0\0\0"], datatype="FP32"), IA, "inputs[text].datatype"),
    Case("20 KB datatype", G, lambda: msg(datatype="D" * LONG), IA, "inputs[text].datatype"),
    # shape
    Case("negative dimension", G, lambda: msg(shape=[-1]), IA, "inputs[text].shape"),
    Case("dimension -2**63", G, lambda: msg(shape=[-(2**63)]), IA, "inputs[text].shape"),
    Case("dimension 2**63-1", G, lambda: msg(shape=[2**63 - 1]), EXHAUSTED, "inputs[text].shape"),
    Case("zero then 2**63-1", G, lambda: msg([], shape=[0, 2**63 - 1]), EXHAUSTED, "inputs[text].shape"),
    Case("dimensions whose product overflows int64", G, lambda: msg(shape=[2**21] * 4), EXHAUSTED,
         "inputs[text].shape"),
    Case("element count just over the limit", G, lambda: msg(shape=[4096, 4097]), EXHAUSTED, "inputs[text].shape"),
    Case("rank 9", G, lambda: msg(shape=[1] * 9), IA, "inputs[text].shape"),
    Case("wrong rank", G, lambda: msg([b"a", b"b"], shape=[1, 2]), IA, "inputs[text].shape"),
    Case("zero-size dimensions", G, lambda: msg([], shape=[0] * 8), IA, "inputs[text].shape"),
    Case("empty batch", G, lambda: msg([]), IA, "inputs[text].shape"),
    Case("batch over the limit", G, lambda: msg([b"a"] * (MAX_BATCH + 1)), IA, "inputs[text].shape"),
    Case("a batch of 100,000 (refused from its shape)", G, lambda: msg([b"a"] * 100_000), IA, "inputs[text].shape"),
    # raw data vs shape
    Case("fewer raw BYTES elements than the shape", G, lambda: msg([b"a", b"b"], shape=[3]), IA, "inputs[text]"),
    Case("bytes beyond the last raw element", G, lambda: raw(serialize_bytes([b"a"]) + b"zz", [1]), IA,
         "inputs[text]"),
    Case("length prefix past the end", G, lambda: raw(struct.pack("<I", 10_000) + b"short", [1]), IA,
         "inputs[text]"),
    Case("truncated length prefix", G, lambda: raw(b"\x01\x00", [1]), IA, "inputs[text]"),
    Case("16 Mi elements declared, 5 bytes sent", G, lambda: raw(serialize_bytes([b"a"]), [16 * 1024 * 1024]), IA,
         "inputs[text]"),
    Case("raw FP32 size does not match the shape", G, lambda: raw(b"\0" * 5, [2], "FP32"), IA, "inputs[text]"),
    Case("BYTES element over the limit (raw)", G, lambda: msg([b"a" * (MAX_ELEMENT + 1)]), EXHAUSTED,
         "inputs[text]"),
    Case("invalid UTF-8 in a BYTES element (raw)", G, lambda: msg([b"fine", b"\xc3\x28"]), IA, "inputs[text]"),
    # The client serialises and starts sending ~17 MiB before the answer: its own cost dominates.
    Case("message over the size limit", G, lambda: msg([b"a" * MAX_ELEMENT] * 17), EXHAUSTED, None, max_s=4.0),
    # typed contents
    Case("typed element count does not match the shape", G, lambda: typed([3], bytes_contents=[b"a", b"b"]), IA,
         "inputs[text]"),
    Case("typed BYTES sent in int_contents", G, lambda: typed([1], int_contents=[1]), IA, "inputs[text]"),
    Case("typed FP16 (raw only)", G, lambda: typed([0], "FP16"), IA, "inputs[text]"),
    Case("typed INT8 value 300", G, lambda: typed([1], "INT8", int_contents=[300]), IA, "inputs[text]"),
    Case("typed BYTES element over the limit", G, lambda: typed([1], bytes_contents=[b"a" * (MAX_ELEMENT + 1)]),
         EXHAUSTED, "inputs[text]"),
    Case("invalid UTF-8 in a BYTES element (typed)", G, lambda: typed([1], bytes_contents=[b"\xff\xfe"]), IA,
         "inputs[text]"),
    # bytes protobuf cannot build
    Case("wire bytes that are not protobuf", G, lambda: b"\xff\xff\xff\xff\xff", IA, None),
    Case("protobuf cut short", G, lambda: _GOOD_WIRE[: len(_GOOD_WIRE) // 2], IA, None),
    Case("invalid UTF-8 in the model_name string", G, lambda: wire(_ld(1, b"\xc3\x28")), IA, None),
]

# ---------------------------------------------------------------------------------------------
# HTTP builders


def body(doc: Any) -> bytes:
    return json.dumps(doc).encode()


def text_input(data: Any = ("hello",), **entry) -> dict[str, Any]:
    out = {"name": "text", "datatype": "BYTES", "shape": [len(data)] if isinstance(data, (list, tuple)) else [1],
           "data": list(data) if isinstance(data, tuple) else data}
    out.update(entry)
    return {k: v for k, v in out.items() if v is not None}


def request(*inputs: dict, **top) -> bytes:
    return body({"inputs": list(inputs or [text_input()]), **top})


def post(data: bytes, **headers: str) -> Http:
    return Http(data, {"Content-Type": "application/json", **{k.replace("_", "-"): v for k, v in headers.items()}})


def binary(entry: dict, data: bytes, *, header_length_delta: int = 0, header: bytes | None = None) -> Http:
    """Triton's binary tensor extension: JSON header, then raw tensor bytes."""
    head = header if header is not None else body({"inputs": [entry]})
    return Http(head + data, {"Content-Type": "application/octet-stream",
                              "Inference-Header-Content-Length": str(len(head) + header_length_delta)})


def bin_entry(size: int | Any, shape=(1,), datatype: str = "BYTES", **extra) -> dict:
    return {"name": "text", "datatype": datatype, "shape": list(shape), "parameters": {"binary_data_size": size},
            **extra}


ONE = serialize_bytes([b"hello"])
H = "http"
HTTP_CASES = [
    # JSON text
    Case("invalid JSON", H, lambda: post(b'{"inputs": ['), 400, "body"),
    Case("empty body", H, lambda: post(b""), 400, "body"),
    Case("JSON array as the body", H, lambda: post(b"[]"), 400, "body"),
    Case("JSON string as the body", H, lambda: post(b'"infer"'), 400, "body"),
    Case("trailing bytes after the JSON", H, lambda: post(request() + b"}{"), 400, "body"),
    Case("byte-order mark before the JSON", H, lambda: post(b"\xef\xbb\xbf" + request()), 400, "body"),
    Case("invalid UTF-8 in the JSON text", H, lambda: post(b'{"id": "\xc3\x28", "inputs": []}'), 400, "body"),
    Case("lone surrogate escape in a BYTES element", H, lambda: post(request(text_input(["\ud800"]))), 400,
         "inputs[text].data"),
    Case("lone surrogate escape in the input name", H, lambda: post(request(text_input(name="\udc00"))), 400,
         "inputs[0].name"),
    Case("JSON nested 100000 deep", H, lambda: post(b"[" * 100_000), 400, "body"),
    Case("NaN literal", H, lambda: post(b'{"inputs": [{"name": "text", "datatype": "FP32", "shape": [1], '
                                        b'"data": [NaN]}]}'), 400, "body"),
    Case("integer of 5000 digits", H, lambda: post(b'{"id": "x", "parameters": {"n": ' + b"9" * 5000 + b"}, "
                                                   b'"inputs": []}'), 400, "body"),
    # inputs: structure
    Case("no inputs key", H, lambda: post(body({})), 400, "inputs"),
    Case("inputs is an object", H, lambda: post(body({"inputs": {}})), 400, "inputs"),
    Case("empty inputs", H, lambda: post(body({"inputs": []})), 400, "inputs"),
    Case("input is a string", H, lambda: post(body({"inputs": ["text"]})), 400, "inputs[0]"),
    Case("input without a name", H, lambda: post(request(text_input(name=None))), 400, "inputs[0].name"),
    Case("empty input name", H, lambda: post(request(text_input(name=""))), 400, "inputs[0].name"),
    Case("input name is a number", H, lambda: post(request(text_input(name=7))), 400, "inputs[0].name"),
    Case("duplicate input", H, lambda: post(request(text_input(), text_input())), 400, "inputs[text]"),
    Case("a key repeated in one JSON object", H, lambda: post(
        b'{"inputs": [{"name": "text", "name": "txt", "shape": [1], "datatype": "BYTES", "data": ["a"]}]}'),
         400, "body"),
    Case("NUL inside the input name", H, lambda: post(request(text_input(name="te\u0000xt"))), 400, "inputs"),
    Case("65 inputs", H, lambda: post(request(*(text_input(name=f"i{n}") for n in range(65)))), 413, "inputs"),
    Case("5000 inputs", H, lambda: post(request(*(text_input(name=f"i{n}") for n in range(5000)))), 413, "inputs"),
    # datatype
    Case("missing datatype", H, lambda: post(request(text_input(datatype=None))), 400, "inputs[text].datatype"),
    Case("unknown datatype", H, lambda: post(request(text_input(datatype="STRING"))), 400, "inputs[text].datatype"),
    Case("wrong datatype (INT32)", H, lambda: post(request(text_input([1], datatype="INT32"))), 400,
         "inputs[text].datatype"),
    # shape
    Case("missing shape", H, lambda: post(request(text_input(shape=None))), 400, "inputs[text].shape"),
    Case("shape is a string", H, lambda: post(request(text_input(shape="[1]"))), 400, "inputs[text].shape"),
    Case("fractional dimension", H, lambda: post(request(text_input(shape=[1.5]))), 400, "inputs[text].shape"),
    Case("boolean dimension", H, lambda: post(request(text_input(shape=[True]))), 400, "inputs[text].shape"),
    Case("negative dimension", H, lambda: post(request(text_input(shape=[-1]))), 400, "inputs[text].shape"),
    Case("dimension 2**63-1", H, lambda: post(request(text_input(shape=[2**63 - 1]))), 413, "inputs[text].shape"),
    Case("dimension past uint64", H, lambda: post(request(text_input(shape=[10**30]))), 413, "inputs[text].shape"),
    Case("dimensions whose product overflows int64", H, lambda: post(request(text_input(shape=[2**21] * 4))), 413,
         "inputs[text].shape"),
    Case("rank 9", H, lambda: post(request(text_input(shape=[1] * 9))), 400, "inputs[text].shape"),
    Case("wrong rank", H, lambda: post(request(text_input([["a", "b"]], shape=[1, 2]))), 400, "inputs[text].shape"),
    Case("empty batch", H, lambda: post(request(text_input([]))), 400, "inputs[text].shape"),
    Case("batch over the limit", H, lambda: post(request(text_input(["a"] * (MAX_BATCH + 1)))), 400,
         "inputs[text].shape"),
    # Large enough (over 256 KiB of JSON) to be parsed in a helper process, not on the loop.
    Case("a large JSON body of numbers for a text input", H, lambda: post(request(
        text_input([0.5] * 150_000, datatype="FP32", shape=[150_000]))), 400, "inputs[text].datatype"),
    Case("a large JSON body of 100,000 texts", H, lambda: post(request(text_input(["ab"] * 100_000))), 400,
         "inputs[text].shape"),
    Case("a large JSON body that breaks off", H, lambda: post(request(text_input(["ab"] * 100_000))[:-3]), 400,
         "body"),
    # data
    Case("missing data", H, lambda: post(request(text_input(data=None))), 400, "inputs[text].data"),
    Case("fewer elements than the shape", H, lambda: post(request(text_input(["a", "b"], shape=[3]))), 400,
         "inputs[text].data"),
    Case("more elements than the shape", H, lambda: post(request(text_input(["a", "b"], shape=[1]))), 400,
         "inputs[text].data"),
    Case("numbers for BYTES", H, lambda: post(request(text_input([1]))), 400, "inputs[text].data"),
    Case("null element", H, lambda: post(request(text_input([None]))), 400, "inputs[text].data"),
    Case("data is an object", H, lambda: post(request(text_input({"a": 1}))), 400, "inputs[text].data"),
    Case("data is a bare string", H, lambda: post(request(text_input("hello"))), 400, "inputs[text].data"),
    Case("nesting deeper than the shape", H, lambda: post(request(text_input([["a"], ["b"]], shape=[2]))), 400,
         "inputs[text].data"),
    Case("ragged nesting", H, lambda: post(request(text_input([[1, 2], [3]], shape=[2, 2], datatype="INT32"))), 400,
         "inputs[text].data"),
    Case("text for INT32", H, lambda: post(request(text_input(["a"], datatype="INT32"))), 400, "inputs[text].data"),
    Case("fraction for INT32", H, lambda: post(request(text_input([1.5], datatype="INT32"))), 400,
         "inputs[text].data"),
    Case("300 for INT8", H, lambda: post(request(text_input([300], datatype="INT8"))), 400, "inputs[text].data"),
    Case("-1 for UINT8", H, lambda: post(request(text_input([-1], datatype="UINT8"))), 400, "inputs[text].data"),
    Case("boolean for FP32", H, lambda: post(request(text_input([True], datatype="FP32"))), 400,
         "inputs[text].data"),
    Case("1e39 for FP32", H, lambda: post(request(text_input([1e39], datatype="FP32"))), 400, "inputs[text].data"),
    Case("BYTES element over the limit", H, lambda: post(request(text_input(["a" * (MAX_ELEMENT + 1)]))), 413,
         "inputs[text].data"),
    # outputs, parameters, id
    Case("65 requested outputs", H, lambda: post(request(outputs=[{"name": f"o{i}"} for i in range(65)])), 413,
         "outputs"),
    Case("outputs is a string", H, lambda: post(request(outputs="embedding")), 400, "outputs"),
    Case("output without a name", H, lambda: post(request(outputs=[{}])), 400, "outputs[0].name"),
    Case("duplicate requested output", H, lambda: post(request(outputs=[{"name": "embedding"}] * 2)), 400,
         "outputs[embedding]"),
    Case("unknown requested output", H, lambda: post(request(outputs=[{"name": "logits"}])), 400, "outputs[logits]"),
    Case("65 parameters", H, lambda: post(request(parameters={f"p{i}": i for i in range(65)})), 413, "parameters"),
    Case("parameter value is an object", H, lambda: post(request(parameters={"x": {}})), 400, "parameters[x]"),
    Case("parameter past uint64", H, lambda: post(request(parameters={"x": 2**64})), 400, "parameters[x]"),
    Case("parameters is a list", H, lambda: post(request(parameters=[1])), 400, "parameters"),
    Case("id is a number", H, lambda: post(request(id=7)), 400, "id"),
    # model and version in the URL
    Case("unknown model", H, lambda: Http(request(), path="/v2/models/nope/infer"), 404, "model_name"),
    Case("unknown version", H, lambda: Http(request(), path=f"/v2/models/{MODEL}/versions/9/infer"), 404,
         "model_version"),
    Case("undecodable %FF model name", H, lambda: Http(request(), path="/v2/models/%FF/infer"), 404, "model_name"),
    Case("NUL inside the model name", H, lambda: Http(request(), path=f"/v2/models/{MODEL}%00/infer"), 404,
         "model_name"),
    Case("6 KB model name", H, lambda: Http(request(), path=f"/v2/models/{'m' * 6000}/infer"), 404, "model_name"),
    # content types and encodings
    Case("text/plain", H, lambda: Http(request(), {"Content-Type": "text/plain"}), 415, "Content-Type"),
    Case("form-urlencoded", H, lambda: Http(b"a=1", {"Content-Type": "application/x-www-form-urlencoded"}), 415,
         "Content-Type"),
    Case("multipart", H, lambda: Http(request(), {"Content-Type": "multipart/form-data; boundary=x"}), 415,
         "Content-Type"),
    Case("unparsable Content-Type", H, lambda: Http(request(), {"Content-Type": ";;;==="}), 415, "Content-Type"),
    Case("gzip Content-Encoding on a plain body", H,
         lambda: Http(request(), {"Content-Type": "application/json", "Content-Encoding": "gzip"}), 400, "body"),
    Case("br Content-Encoding", H,
         lambda: Http(request(), {"Content-Type": "application/json", "Content-Encoding": "br"}), 415,
         "Content-Encoding"),
    Case("gzip bomb past the body limit", H,
         lambda: Http(gzip.compress(b" " * (8 * MAX_MESSAGE)), {"Content-Type": "application/json",
                                                                 "Content-Encoding": "gzip"}), 413, "body"),
    # size and framing
    Case("body over the limit (Content-Length)", H, lambda: post(request(text_input(["a" * MAX_MESSAGE]))), 413,
         "body"),
    Case("body over the limit (chunked)", H, lambda: Flood(17, b" " * (64 * 1024)), 413, "body"),
    Case("flood of 1-byte chunks past the limit, never ended", H,
         lambda: Flood(MAX_MESSAGE + 4096, terminate=False), 413, "body", max_s=15.0),
    Case("flood of 20000 1-byte chunks of nothing", H, lambda: Flood(20_000), 400, "body"),
    Case("Content-Length and chunked together", H, lambda: RawHttp(
        f"POST {INFER_PATH} HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
        "0\r\n\r\n".encode()), 400, None, json_error=False),
    Case("invalid chunk size", H, lambda: RawHttp(
        f"POST {INFER_PATH} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n".encode()),
         400, None, json_error=False),
    Case("invalid chunk size after the headers", H, lambda: RawHttp(
        f"POST {INFER_PATH} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".encode(),
        then=b"zz\r\nab\r\n0\r\n\r\n"), 400, "body"),
    Case("chunk longer than it declares, after the headers", H, lambda: RawHttp(
        f"POST {INFER_PATH} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".encode(),
        then=b"3\r\nabcdef\r\n0\r\n\r\n"), 400, "body"),
    Case("a body that stops arriving", H, lambda: RawHttp(
        f"POST {INFER_PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
        '{"inputs": ['.encode()), 408, "body", max_s=BODY_TIMEOUT_MS / 1000 + 1.5),
    Case("request line over 8 KiB", H, lambda: RawHttp(
        f"POST /v2/models/{'m' * 9000}/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".encode()), 400, None,
         json_error=False),
    # Triton's binary tensor data extension
    Case("header length not an integer", H,
         lambda: Http(b"{}", {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": "ten"}),
         400, "Inference-Header-Content-Length"),
    Case("header length negative", H, lambda: binary(bin_entry(len(ONE)), ONE, header_length_delta=-10**6), 400,
         "Inference-Header-Content-Length"),
    Case("header length past the body", H, lambda: binary(bin_entry(len(ONE)), ONE, header_length_delta=10**6), 400,
         "Inference-Header-Content-Length"),
    Case("binary_data_size larger than the data", H, lambda: binary(bin_entry(1000), ONE), 400,
         "inputs[text].parameters.binary_data_size"),
    Case("binary_data_size smaller than the data", H, lambda: binary(bin_entry(len(ONE)), ONE + b"!!"), 400, "body"),
    Case("binary_data_size negative", H, lambda: binary(bin_entry(-1), ONE), 400,
         "inputs[text].parameters.binary_data_size"),
    Case("binary_data_size is a string", H, lambda: binary(bin_entry(str(len(ONE))), ONE), 400,
         "inputs[text].parameters.binary_data_size"),
    Case("binary_data_size without the header length", H,
         lambda: post(body({"inputs": [bin_entry(len(ONE))]})), 400, "inputs[text].parameters.binary_data_size"),
    Case("binary_data_size and data together", H, lambda: binary(bin_entry(len(ONE), data=["x"]), ONE), 400,
         "inputs[text]"),
    Case("binary BYTES length prefix past the end", H,
         lambda: binary(bin_entry(9), struct.pack("<I", 1000) + b"hello"), 400, "inputs[text]"),
    Case("binary: 16 Mi elements declared, 9 bytes sent", H, lambda: binary(bin_entry(9, [16 * 1024 * 1024]), ONE),
         400, "inputs[text]"),
    Case("binary FP32 size does not match the shape", H, lambda: binary(bin_entry(5, [2], "FP32"), b"\0" * 5), 400,
         "inputs[text]"),
    Case("invalid UTF-8 in a binary BYTES element", H,
         lambda: binary(bin_entry(6), serialize_bytes([b"\xc3\x28"])), 400, "inputs[text]"),
    Case("invalid UTF-8 in the binary request's JSON header", H,
         lambda: binary({}, ONE, header=b'{"id": "\xff", "inputs": []}'), 400, "body"),
    # deadline header
    Case("timeout header not a number", H, lambda: post(request(), X_Request_Timeout_Ms="soon"), 400,
         "X-Request-Timeout-Ms"),
    Case("timeout header negative", H, lambda: post(request(), X_Request_Timeout_Ms="-5"), 400,
         "X-Request-Timeout-Ms"),
    Case("timeout header infinite", H, lambda: post(request(), X_Request_Timeout_Ms="inf"), 400,
         "X-Request-Timeout-Ms"),
]

CASES = GRPC_CASES + HTTP_CASES


def _check_unique() -> None:
    seen: set[tuple[str, str]] = set()
    for case in CASES:
        key = (case.transport, case.name)
        if key in seen:
            raise ValueError(f"duplicate corpus entry {key}")
        seen.add(key)


_check_unique()
