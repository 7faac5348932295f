"""REST JSON codec: flat and nested data, BYTES/BOOL/FP16/BF16, the binary tensor data extension
both ways, every structural error naming its field, and fuzzing that only typed errors escape."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from edgecloud import json_codec as jc
from edgecloud.codec import bytes_array, serialize_bytes
from edgecloud.datatypes import DATATYPES
from edgecloud.errors import InferenceError, InvalidArgument, ResourceExhausted
from edgecloud.limits import RequestLimits
from edgecloud.types import (
    InferRequest,
    InferResponse,
    ModelMetadata,
    RequestedOutput,
    ServerMetadata,
    Tensor,
    TensorSpec,
)

NUMERIC = ["UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64"]


def _body(*inputs: dict, **top) -> bytes:
    return json.dumps({"inputs": list(inputs), **top}).encode()


def _input(name="x", datatype="INT32", shape=(2,), data=(1, 2), **extra) -> dict:
    entry = {"name": name, "datatype": datatype, "shape": list(shape), **extra}
    if data is not None:
        entry["data"] = list(data) if isinstance(data, tuple) else data
    return entry


def _sample(datatype: str, shape: tuple[int, ...]) -> np.ndarray:
    count = int(np.prod(shape))
    if datatype == "BYTES":
        return bytes_array([f"héllo {i}" for i in range(count)]).reshape(shape)
    if datatype == "BOOL":
        return (np.arange(count) % 2 == 0).reshape(shape)
    dtype = DATATYPES[datatype].numpy_dtype
    return (np.arange(count) % 100).astype(dtype).reshape(shape)


def _as_json(array: np.ndarray) -> list:
    if array.dtype == object:
        return np.vectorize(lambda b: b.decode(), otypes=[object])(array).tolist()
    return array.tolist()


# ---------------------------------------------------------------------------------------------
# round trips


@pytest.mark.parametrize("datatype", [*NUMERIC, "BOOL", "BYTES"])
@pytest.mark.parametrize("nested", [False, True], ids=["flat", "nested"])
def test_json_data_flat_or_nested_decodes_to_the_storage_dtype(datatype, nested):
    expected = _sample(datatype, (2, 3))
    values = _as_json(expected)
    data = values if nested else [v for row in values for v in row]
    request = jc.request_from_json(_body(_input("x", datatype, (2, 3), data)), None, model_name="m")
    tensor = request.input("x")
    assert (tensor.datatype, tensor.shape, tensor.data.dtype) == (datatype, (2, 3), DATATYPES[datatype].numpy_dtype)
    np.testing.assert_array_equal(tensor.data, expected)


def test_bytes_are_utf8_and_bool_are_json_booleans():
    request = jc.request_from_json(_body(_input("t", "BYTES", (3,), ["a", "é", ""]),
                                         _input("b", "BOOL", (2,), [True, False])))
    assert list(request.input("t").data) == [b"a", "é".encode(), b""]
    assert request.input("b").data.tolist() == [True, False]


def test_rank_zero_and_empty_tensors():
    request = jc.request_from_json(_body(_input("s", "FP32", (), 2.5), _input("e", "INT8", (0, 3), [])))
    assert request.input("s").data.shape == () and request.input("s").data == np.float32(2.5)
    assert request.input("e").data.shape == (0, 3)


def test_fp16_and_bf16_take_json_numbers():
    request = jc.request_from_json(_body(_input("h", "FP16", (2,), [0.5, 65504]),
                                         _input("b", "BF16", (3,), [1.0, -3, 1.00390625])))
    assert request.input("h").data.tolist() == [0.5, 65504.0]
    # BF16 is stored as its bit pattern; 1 + 2**-8 rounds to even (1.0).
    assert request.input("b").data.tolist() == [0x3F80, 0xC040, 0x3F80]


def test_top_level_fields_and_url_model_name_win():
    body = _body(_input(), id="req-1", model_name="ignored", parameters={"a": 1, "b": "s", "c": True, "d": 0.5},
                 outputs=[{"name": "y", "parameters": {"binary_data": True}}, {"name": "z"}])
    request = jc.request_from_json(body, None, model_name="from-url", model_version="3")
    assert (request.model_name, request.model_version, request.id) == ("from-url", "3", "req-1")
    assert request.parameters == {"a": 1, "b": "s", "c": True, "d": 0.5}
    assert [(o.name, o.parameters) for o in request.outputs] == [("y", {"binary_data": True}), ("z", {})]


@pytest.mark.parametrize("datatype", [*NUMERIC, "BOOL", "BYTES", "BF16"])
def test_binary_extension_request_round_trip(datatype):
    original = InferRequest("m", [Tensor("a", datatype, (2, 2), _sample(datatype, (2, 2)), {"p": 1}),
                                  Tensor("b", "BYTES", (3,), _sample("BYTES", (3,)))],
                            id="i", parameters={"q": "r"}, outputs=[RequestedOutput("y")])
    body, header_length = jc.request_to_json(original, binary_inputs=True)
    assert header_length is not None and json.loads(body[:header_length])["inputs"][0]["parameters"]["p"] == 1
    decoded = jc.request_from_json(body, header_length, model_name="m")
    for got, want in zip(decoded.inputs, original.inputs):
        assert (got.name, got.datatype, got.shape) == (want.name, want.datatype, want.shape)
        np.testing.assert_array_equal(got.data, want.data)
        assert jc.BINARY_DATA_SIZE not in got.parameters  # framing, not part of the request
    assert decoded.input("a").parameters == {"p": 1}
    assert (decoded.id, decoded.parameters, [o.name for o in decoded.outputs]) == ("i", {"q": "r"}, ["y"])


def test_binary_tensors_at_odd_offsets_are_aligned_copies():
    raw = np.arange(3, dtype="<f4")
    header = json.dumps({"inputs": [
        {"name": "b", "datatype": "UINT8", "shape": [1], "parameters": {"binary_data_size": 1}},
        {"name": "f", "datatype": "FP32", "shape": [3], "parameters": {"binary_data_size": 12}},
    ]}).encode()
    decoded = jc.request_from_json(header + b"\x07" + raw.tobytes(), len(header))
    assert decoded.input("f").data.flags.aligned
    np.testing.assert_array_equal(decoded.input("f").data, raw)


def test_json_and_binary_inputs_mix():
    header = json.dumps({"inputs": [
        _input("j", "INT32", (2,), [5, 6]),
        {"name": "t", "datatype": "BYTES", "shape": [2], "parameters": {"binary_data_size": 11}},
    ]}).encode()
    decoded = jc.request_from_json(header + serialize_bytes([b"\xff\x00", b"x"]), len(header))
    assert list(decoded.input("t").data) == [b"\xff\x00", b"x"]
    assert decoded.input("j").data.tolist() == [5, 6]


def _response() -> InferResponse:
    return InferResponse("m", [
        Tensor("emb", "FP32", (2, 3), np.arange(6, dtype=np.float32).reshape(2, 3) / 7, {"k": "v"}),
        Tensor("txt", "BYTES", (2,), bytes_array(["é", "z"])),
        Tensor("ok", "BOOL", (1,), np.array([True])),
        Tensor("h", "BF16", (1,), np.array([0x3FC0], dtype="<u2")),
    ], model_version="1", id="r", parameters={"variant": "int8"})


@pytest.mark.parametrize("binary", [False, True, {"emb"}, {"txt", "h"}], ids=["json", "all-binary", "one", "two"])
def test_response_round_trip(binary):
    original = _response()
    body, header_length = jc.response_to_json(original, binary)
    names = {t.name for t in original.outputs} if binary is True else (binary or set())
    if names:
        assert header_length is not None
        header = json.loads(body[:header_length])
        sized = {o["name"] for o in header["outputs"] if jc.BINARY_DATA_SIZE in o.get("parameters", {})}
        assert sized == names and not any("data" in o for o in header["outputs"] if o["name"] in names)
    else:
        assert header_length is None
        header = json.loads(body)
        assert header["outputs"][0]["data"] == np.asarray(original.outputs[0].data).reshape(-1).tolist()
    assert (header["model_name"], header["model_version"], header["id"]) == ("m", "1", "r")
    assert header["parameters"] == {"variant": "int8"}
    decoded = jc.response_from_json(body, header_length)
    for got, want in zip(decoded.outputs, original.outputs):
        assert (got.name, got.datatype, got.shape) == (want.name, want.datatype, want.shape)
        np.testing.assert_array_equal(got.data, want.data)
    assert decoded.output("emb").parameters == {"k": "v"}


def test_bf16_output_in_json_is_its_float_value():
    body, _ = jc.response_to_json(_response(), False)
    assert json.loads(body)["outputs"][3]["data"] == [1.5]


def test_bytes_output_that_is_not_utf8_goes_binary():
    response = InferResponse("m", [Tensor("raw", "BYTES", (1,), bytes_array([b"\xff\xfe"]))])
    body, header_length = jc.response_to_json(response, False)
    assert header_length is not None
    assert json.loads(body[:header_length])["outputs"][0]["parameters"] == {"binary_data_size": 6}
    assert list(jc.response_from_json(body, header_length).output("raw").data) == [b"\xff\xfe"]


def test_requested_binary_reads_output_and_request_parameters():
    def request(params, outputs):
        return InferRequest("m", [], parameters=params, outputs=[RequestedOutput(n, p) for n, p in outputs])

    assert jc.requested_binary(request({}, [])) is False
    assert jc.requested_binary(request({"binary_data_output": True}, [])) is True
    assert jc.requested_binary(request({}, [("a", {"binary_data": True}), ("b", {})])) == {"a"}
    assert jc.requested_binary(request({"binary_data_output": True},
                                       [("a", {"binary_data": False}), ("b", {})])) == {"b"}
    assert jc.TRANSPORT_PARAMETERS == {"binary_data", "binary_data_output", "binary_data_size"}


def test_public_names():
    assert jc.__all__ == sorted(jc.__all__) and all(hasattr(jc, name) for name in jc.__all__)


def test_metadata_and_error_bodies():
    meta = ModelMetadata("m", ("1",), "onnxruntime_onnx", (TensorSpec("text", "BYTES", (-1,)),),
                         (TensorSpec("embedding", "FP32", (-1, 384)),))
    assert json.loads(jc.model_metadata_to_json(meta)) == {
        "name": "m", "versions": ["1"], "platform": "onnxruntime_onnx",
        "inputs": [{"name": "text", "datatype": "BYTES", "shape": [-1]}],
        "outputs": [{"name": "embedding", "datatype": "FP32", "shape": [-1, 384]}],
    }
    assert json.loads(jc.server_metadata_to_json(ServerMetadata("s", "0.1", ("a",)))) == {
        "name": "s", "version": "0.1", "extensions": ["a"]}
    assert json.loads(jc.error_to_json("inputs[x]: bad \u2603")) == {"error": "inputs[x]: bad \u2603"}


# ---------------------------------------------------------------------------------------------
# errors name their field

SMALL = RequestLimits(max_inputs=2, max_outputs=2, max_parameters=2, max_rank=3, max_elements=1000,
                      max_bytes_element=8)
_BIN_HEADER = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [2],
                                      "parameters": {"binary_data_size": 8}}]}).encode()
_BYTES_HEADER = json.dumps({"inputs": [{"name": "t", "datatype": "BYTES", "shape": [1],
                                        "parameters": {"binary_data_size": 6}}]}).encode()

ERRORS = [
    # (id, body, header_length, error, field)
    ("invalid-json", b'{"inputs": [', None, InvalidArgument, "body"),
    ("invalid-utf8", b'{"inputs": "\xff"}', None, InvalidArgument, "body"),
    ("nan", b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [NaN]}]}', None, InvalidArgument,
     "body"),
    ("deep-nesting", b"[" * 100_000 + b"]" * 100_000, None, InvalidArgument, "body"),
    ("huge-int-literal", b'{"id": ' + b"9" * 5000 + b"}", None, InvalidArgument, "body"),
    ("not-an-object", b"[1, 2]", None, InvalidArgument, "body"),
    ("no-inputs", b"{}", None, InvalidArgument, "inputs"),
    ("empty-inputs", _body(), None, InvalidArgument, "inputs"),
    ("inputs-not-a-list", b'{"inputs": {"x": 1}}', None, InvalidArgument, "inputs"),
    ("too-many-inputs", _body(_input("a"), _input("b"), _input("c")), None, ResourceExhausted, "inputs"),
    ("too-many-outputs", _body(_input(), outputs=[{"name": n} for n in "abc"]), None, ResourceExhausted, "outputs"),
    ("too-many-parameters", _body(_input(), parameters={"a": 1, "b": 2, "c": 3}), None, ResourceExhausted,
     "parameters"),
    ("input-not-an-object", b'{"inputs": [3]}', None, InvalidArgument, "inputs[0]"),
    ("no-name", _body({"datatype": "INT32", "shape": [1], "data": [1]}), None, InvalidArgument, "inputs[0].name"),
    ("name-not-a-string", _body(_input(name=7)), None, InvalidArgument, "inputs[0].name"),
    ("name-lone-surrogate", b'{"inputs": [{"name": "\\ud800", "datatype": "INT8", "shape": [1], "data": [1]}]}',
     None, InvalidArgument, "inputs[0].name"),
    ("duplicate-input", _body(_input(), _input()), None, InvalidArgument, "inputs[x]"),
    ("unknown-datatype", _body(_input(datatype="FP33")), None, InvalidArgument, "inputs[x].datatype"),
    ("datatype-not-a-string", _body(_input(datatype=3)), None, InvalidArgument, "inputs[x].datatype"),
    ("shape-not-a-list", _body({**_input(), "shape": 2}), None, InvalidArgument, "inputs[x].shape"),
    ("shape-float", _body(_input(shape=(2.0,))), None, InvalidArgument, "inputs[x].shape"),
    ("shape-bool", _body(_input(shape=(True,), data=(1,))), None, InvalidArgument, "inputs[x].shape"),
    ("negative-dim", _body(_input(shape=(-1,))), None, InvalidArgument, "inputs[x].shape"),
    ("huge-dim", _body(_input(shape=(2**62,))), None, ResourceExhausted, "inputs[x].shape"),
    ("rank-over-limit", _body(_input(shape=(1, 1, 1, 1), data=(1,))), None, InvalidArgument, "inputs[x].shape"),
    ("count-mismatch", _body(_input(shape=(3,))), None, InvalidArgument, "inputs[x].data"),
    ("nesting-mismatch", _body(_input(shape=(2, 2), data=[[1, 2], [3]])), None, InvalidArgument, "inputs[x].data"),
    ("nesting-too-deep", _body(_input(shape=(2,), data=[[1], [2]])), None, InvalidArgument, "inputs[x].data"),
    ("data-not-a-list", _body(_input(data="12")), None, InvalidArgument, "inputs[x].data"),
    ("string-in-fp32", _body(_input(datatype="FP32", data=("1", 2))), None, InvalidArgument, "inputs[x].data"),
    ("float-in-int32", _body(_input(data=(1, 2.5))), None, InvalidArgument, "inputs[x].data"),
    ("bool-in-int32", _body(_input(data=(True, 2))), None, InvalidArgument, "inputs[x].data"),
    ("int-in-bool", _body(_input(datatype="BOOL", data=(1, 0))), None, InvalidArgument, "inputs[x].data"),
    ("number-in-bytes", _body(_input(datatype="BYTES", data=("a", 1))), None, InvalidArgument, "inputs[x].data"),
    ("null-in-fp64", _body(_input(datatype="FP64", data=(None, 1))), None, InvalidArgument, "inputs[x].data"),
    ("uint8-overflow", _body(_input(datatype="UINT8", data=(1, 256))), None, InvalidArgument, "inputs[x].data"),
    ("negative-uint", _body(_input(datatype="UINT32", data=(1, -1))), None, InvalidArgument, "inputs[x].data"),
    ("fp16-overflow", _body(_input(datatype="FP16", data=(1, 1e6))), None, InvalidArgument, "inputs[x].data"),
    ("bytes-element-too-long", _body(_input(datatype="BYTES", data=("ok", "123456789"))), None, ResourceExhausted,
     "inputs[x].data"),
    ("bytes-lone-surrogate", b'{"inputs": [{"name": "t", "datatype": "BYTES", "shape": [1], "data": ["\\udc80"]}]}',
     None, InvalidArgument, "inputs[t].data"),
    ("missing-data", _body(_input(data=None)), None, InvalidArgument, "inputs[x].data"),
    ("parameters-not-an-object", _body(_input(parameters=[1])), None, InvalidArgument, "inputs[x].parameters"),
    ("parameter-value-list", _body(_input(), parameters={"k": [1]}), None, InvalidArgument, "parameters[k]"),
    ("parameter-value-null", _body(_input(parameters={"k": None})), None, InvalidArgument,
     "inputs[x].parameters[k]"),
    ("parameter-int-too-big", _body(_input(), parameters={"k": 2**64}), None, InvalidArgument, "parameters[k]"),
    ("id-not-a-string", _body(_input(), id=5), None, InvalidArgument, "id"),
    ("outputs-not-a-list", _body(_input(), outputs="y"), None, InvalidArgument, "outputs"),
    ("output-no-name", _body(_input(), outputs=[{}]), None, InvalidArgument, "outputs[0].name"),
    ("duplicate-output", _body(_input(), outputs=[{"name": "y"}, {"name": "y"}]), None, InvalidArgument,
     "outputs[y]"),
    # binary tensor data extension
    ("header-length-past-body", _BIN_HEADER, len(_BIN_HEADER) + 1, InvalidArgument,
     "Inference-Header-Content-Length"),
    ("header-length-negative", _BIN_HEADER, -1, InvalidArgument, "Inference-Header-Content-Length"),
    ("binary-size-without-header", _BIN_HEADER, None, InvalidArgument, "inputs[x].parameters.binary_data_size"),
    ("binary-short", _BIN_HEADER + b"\0" * 7, len(_BIN_HEADER), InvalidArgument,
     "inputs[x].parameters.binary_data_size"),
    ("binary-leftover", _BIN_HEADER + b"\0" * 9, len(_BIN_HEADER), InvalidArgument, "body"),
    ("binary-size-not-int", _BIN_HEADER.replace(b": 8", b': "8"') + b"\0" * 8,
     len(_BIN_HEADER) + 2, InvalidArgument, "inputs[x].parameters.binary_data_size"),
    ("binary-size-vs-shape", _BIN_HEADER.replace(b": 8", b": 4") + b"\0" * 4, len(_BIN_HEADER), InvalidArgument,
     "inputs[x]"),
    ("binary-and-data", _BIN_HEADER.replace(b'"shape"', b'"data": [1, 2], "shape"') + b"\0" * 8,
     len(_BIN_HEADER) + len(b'"data": [1, 2], '), InvalidArgument, "inputs[x]"),
    ("binary-bytes-framing", _BYTES_HEADER + struct.pack("<I", 5) + b"ab", len(_BYTES_HEADER), InvalidArgument,
     "inputs[t]"),
    ("binary-bytes-element-too-long", _BYTES_HEADER.replace(b": 6", b": 13") + serialize_bytes([b"123456789"]),
     len(_BYTES_HEADER) + 1, ResourceExhausted, "inputs[t]"),
    ("leftover-without-binary-inputs", _body(_input()) + b"junk", len(_body(_input())), InvalidArgument, "body"),
]


@pytest.mark.parametrize("body, header_length, error, field", [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_every_error_is_typed_and_names_its_field(body, header_length, error, field):
    with pytest.raises(error) as caught:
        jc.request_from_json(body, header_length, SMALL)
    assert type(caught.value) is error
    assert caught.value.field == field
    assert caught.value.message.startswith(f"{field}: ")


def test_response_errors_name_their_field():
    with pytest.raises(InvalidArgument) as caught:
        jc.response_from_json(b'{"outputs": [{"name": "y", "datatype": "FP32", "shape": [2], "data": [1]}]}')
    assert caught.value.field == "outputs[y].data"
    assert jc.response_from_json(b'{"model_name": "m"}').outputs == []


# ---------------------------------------------------------------------------------------------
# properties

_json_scalars = (st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False)
                 | st.text(max_size=8))
_json_values = st.recursive(_json_scalars, lambda inner: st.lists(inner, max_size=4)
                            | st.dictionaries(st.text(max_size=6), inner, max_size=4), max_leaves=20)
_datatype_names = st.sampled_from([*DATATYPES, "FP33", ""])
_fuzzed_input = st.fixed_dictionaries(
    {"name": st.sampled_from(["x", "y", ""]) | _json_scalars, "datatype": _datatype_names | _json_scalars,
     "shape": st.lists(st.integers(-2, 4), max_size=3) | _json_values},
    optional={"data": _json_values | st.lists(st.integers(-300, 300) | st.floats(-1e6, 1e6) | st.text(max_size=3)
                                              | st.booleans(), max_size=8),
              "parameters": st.dictionaries(st.sampled_from(["binary_data_size", "k"]), _json_scalars, max_size=2)},
)
FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _only_typed_errors(fn, *args) -> None:
    try:
        fn(*args)
    except InferenceError as exc:
        assert exc.message and exc.kind is not None
        json.loads(jc.error_to_json(exc.message))


@FAST
@given(st.binary(max_size=256), st.none() | st.integers(-4, 300))
def test_arbitrary_bytes_raise_only_typed_errors(body, header_length):
    _only_typed_errors(jc.request_from_json, body, header_length, SMALL)
    _only_typed_errors(jc.response_from_json, body, header_length, SMALL)


@FAST
@given(_json_values)
def test_arbitrary_json_raises_only_typed_errors(doc):
    body = json.dumps(doc).encode()
    _only_typed_errors(jc.request_from_json, body, None, SMALL)
    _only_typed_errors(jc.request_from_json, json.dumps({"inputs": doc}).encode(), None, SMALL)


@FAST
@given(st.lists(_fuzzed_input, min_size=1, max_size=3), st.binary(max_size=24), st.booleans())
def test_request_shaped_json_raises_only_typed_errors(inputs, tail, use_header):
    header = json.dumps({"inputs": inputs}).encode()
    _only_typed_errors(jc.request_from_json, header + tail if use_header else header,
                       len(header) if use_header else None, SMALL)


def _named_arrays(name: str):
    finite = {"allow_nan": False, "allow_infinity": False} if name.startswith("FP") else None
    shapes = hnp.array_shapes(min_dims=0, max_dims=3, max_side=3)
    return st.tuples(st.just(name), hnp.arrays(DATATYPES[name].numpy_dtype, shapes, elements=finite))


_arrays = st.sampled_from(NUMERIC + ["BOOL"]).flatmap(_named_arrays)


@FAST
@given(_arrays, st.booleans())
def test_numeric_round_trip_property(named_array, binary):
    datatype, array = named_array
    request = InferRequest("m", [Tensor("x", datatype, array.shape, array)])
    body, header_length = jc.request_to_json(request, binary_inputs=binary)
    got = jc.request_from_json(body, header_length).input("x")
    assert got.shape == array.shape and got.data.dtype == array.dtype
    np.testing.assert_array_equal(got.data, array)
    response = InferResponse("m", [Tensor("y", datatype, array.shape, array)])
    response_body, response_length = jc.response_to_json(response, binary)
    np.testing.assert_array_equal(jc.response_from_json(response_body, response_length).output("y").data, array)


@FAST
@given(st.lists(st.binary(max_size=8), max_size=5), st.booleans())
def test_bytes_round_trip_property(items, binary):
    array = bytes_array(items)
    request = InferRequest("m", [Tensor("t", "BYTES", array.shape, array)])
    body, header_length = jc.request_to_json(request, binary_inputs=binary)
    assert list(jc.request_from_json(body, header_length).input("t").data) == items
