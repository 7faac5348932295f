"""Protobuf <-> numpy codec: both wire forms, BYTES framing, and every structural error."""

from __future__ import annotations

import dataclasses
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from edgecloud import codec
from edgecloud.errors import InternalError, InvalidArgument, ResourceExhausted
from edgecloud.limits import RequestLimits
from edgecloud.types import InferRequest, InferResponse, RequestedOutput, Tensor
from protos import inference_pb2 as pb


def _request(*tensors: Tensor, **kw) -> InferRequest:
    return InferRequest(model_name="m", inputs=list(tensors), **kw)


def test_raw_round_trip_keeps_dtype_shape_and_values():
    data = np.arange(6, dtype=np.float32).reshape(2, 3)
    msg = codec.request_to_proto(_request(Tensor("x", "FP32", (2, 3), data), parameters={"a": 1, "b": "s"}))
    decoded = codec.request_from_proto(pb.ModelInferRequest.FromString(msg.SerializeToString()))
    tensor = decoded.input("x")
    assert tensor.datatype == "FP32" and tensor.shape == (2, 3)
    np.testing.assert_array_equal(tensor.data, data)
    assert decoded.parameters == {"a": 1, "b": "s"}


def test_parameters_of_the_request_its_inputs_and_its_outputs_round_trip_and_absent_ones_are_empty():
    request = _request(Tensor("x", "FP32", (1,), np.zeros(1, np.float32), {"scale": 0.5}),
                       Tensor("y", "FP32", (1,), np.zeros(1, np.float32)),
                       parameters={"priority": 2}, outputs=[RequestedOutput("out", {"classification": 3}),
                                                            RequestedOutput("other")])
    decoded = codec.request_from_proto(pb.ModelInferRequest.FromString(codec.request_to_proto(request).SerializeToString()))
    assert decoded.parameters == {"priority": 2}
    assert [t.parameters for t in decoded.inputs] == [{"scale": 0.5}, {}]
    assert [(o.name, o.parameters) for o in decoded.outputs] == [("out", {"classification": 3}), ("other", {})]
    assert decoded.inputs[1].parameters is not decoded.outputs[1].parameters  # each its own (callers add to them)


def test_typed_contents_are_accepted():
    msg = pb.ModelInferRequest(model_name="m")
    entry = msg.inputs.add(name="x", datatype="INT32", shape=[3])
    entry.contents.int_contents.extend([1, -2, 3])
    decoded = codec.request_from_proto(msg)
    np.testing.assert_array_equal(decoded.input("x").data, np.array([1, -2, 3], dtype=np.int32))


def test_bytes_raw_framing_is_length_prefixed_little_endian():
    raw = codec.serialize_bytes([b"ab", b"", b"\xff"])
    assert raw == struct.pack("<I", 2) + b"ab" + struct.pack("<I", 0) + struct.pack("<I", 1) + b"\xff"
    assert list(codec.deserialize_bytes(raw, 3, "f")) == [b"ab", b"", b"\xff"]


def test_bytes_typed_contents():
    msg = pb.ModelInferRequest(model_name="m")
    entry = msg.inputs.add(name="text", datatype="BYTES", shape=[2])
    entry.contents.bytes_contents.extend([b"hello", b"world"])
    assert list(codec.request_from_proto(msg).input("text").data) == [b"hello", b"world"]


@pytest.mark.parametrize(
    "mutate, error, field",
    [
        (lambda m: m.inputs[0].__setattr__("datatype", "FP33"), InvalidArgument, "inputs[x].datatype"),
        (lambda m: m.inputs[0].shape.__setitem__(0, -1), InvalidArgument, "inputs[x].shape"),
        (lambda m: m.inputs[0].shape.__setitem__(0, 2**40), ResourceExhausted, "inputs[x].shape"),
        (lambda m: m.inputs[0].shape.extend([1] * 20), InvalidArgument, "inputs[x].shape"),
        (lambda m: m.raw_input_contents.__setitem__(0, b"\x00" * 7), InvalidArgument, "inputs[x]"),
        (lambda m: m.raw_input_contents.append(b""), InvalidArgument, "raw_input_contents"),
        (lambda m: m.__setattr__("model_name", ""), InvalidArgument, "model_name"),
        (lambda m: (m.inputs.add(name="x", datatype="FP32", shape=[1]), m.raw_input_contents.append(bytes(4))),
         InvalidArgument, "inputs[x]"),
        (lambda m: m.outputs.add(name=""), InvalidArgument, "outputs[0]"),
        (lambda m: (m.outputs.add(name="y"), m.outputs.add(name="y")), InvalidArgument, "outputs[y]"),
        (lambda m: m.inputs[0].__setattr__("name", ""), InvalidArgument, "inputs[0]"),
        (lambda m: m.parameters["k"].Clear(), InvalidArgument, "parameters[k]"),
        (lambda m: m.inputs[0].parameters["k"].Clear(), InvalidArgument, "inputs[x].parameters[k]"),
        (lambda m: m.outputs.add(name="y").parameters["k"].Clear(), InvalidArgument, "outputs[y].parameters[k]"),
    ],
    ids=["unknown-dtype", "negative-dim", "huge-dim", "rank", "byte-size", "raw-count", "no-model", "duplicate",
         "unnamed-output", "duplicate-output", "unnamed-input", "valueless-parameter", "valueless-input-parameter",
         "valueless-output-parameter"],
)
def test_structural_errors_name_the_field(mutate, error, field):
    msg = codec.request_to_proto(_request(Tensor("x", "FP32", (2,), np.zeros(2, np.float32))))
    mutate(msg)
    with pytest.raises(error) as info:
        codec.request_from_proto(msg)
    assert info.value.message.startswith(field), info.value.message


def test_element_count_must_match_typed_contents():
    msg = pb.ModelInferRequest(model_name="m")
    entry = msg.inputs.add(name="x", datatype="FP32", shape=[4])
    entry.contents.fp32_contents.extend([1.0, 2.0, 3.0])
    with pytest.raises(InvalidArgument, match=r"inputs\[x\]: 3 elements .* needs 4"):
        codec.request_from_proto(msg)


def test_typed_contents_in_the_wrong_field_is_rejected():
    msg = pb.ModelInferRequest(model_name="m")
    entry = msg.inputs.add(name="x", datatype="FP32", shape=[1])
    entry.contents.int_contents.append(1)
    with pytest.raises(InvalidArgument, match="int_contents"):
        codec.request_from_proto(msg)


def test_fp16_must_travel_raw():
    msg = pb.ModelInferRequest(model_name="m")
    msg.inputs.add(name="x", datatype="FP16", shape=[0])
    with pytest.raises(InvalidArgument, match="raw_input_contents"):
        codec.request_from_proto(msg)


@pytest.mark.parametrize(
    "raw, message",
    [
        (struct.pack("<I", 5) + b"abc", "past the end"),
        (struct.pack("<I", 1) + b"a", "fewer than"),
        (codec.serialize_bytes([b"a", b"b"]) + b"zz", "beyond"),
    ],
)
def test_malformed_bytes_framing(raw, message):
    with pytest.raises(InvalidArgument, match=message):
        codec.deserialize_bytes(raw, 2 if message != "beyond" else 2, "inputs[text]")


def test_bytes_element_over_limit_is_resource_exhausted():
    limits = RequestLimits(max_bytes_element=4)
    with pytest.raises(ResourceExhausted, match="element 0"):
        codec.deserialize_bytes(codec.serialize_bytes([b"12345"]), 1, "inputs[t]", limits)


def test_too_many_inputs_is_resource_exhausted():
    msg = pb.ModelInferRequest(model_name="m")
    for index in range(3):
        msg.inputs.add(name=f"x{index}", datatype="FP32", shape=[0])
    with pytest.raises(ResourceExhausted, match="inputs"):
        codec.request_from_proto(msg, RequestLimits(max_inputs=2))


def test_response_round_trip_raw():
    emb = np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32)
    response = InferResponse("m", [Tensor("e", "FP32", emb.shape, emb)], model_version="1",
                             parameters={"variant": "int8"})
    decoded = codec.response_from_proto(codec.response_to_proto(response))
    np.testing.assert_array_equal(decoded.output("e").data, emb)
    assert decoded.parameters == {"variant": "int8"} and decoded.model_version == "1"


def test_a_response_from_the_wire_decodes_its_outputs_when_read_and_relays_its_bytes_as_they_are():
    emb = np.arange(6, dtype=np.float32).reshape(2, 3)
    eager = InferResponse("m", [Tensor("e", "FP32", emb.shape, emb)], model_version="1", id="r1",
                          parameters={"variant": "int8"})
    wire = codec.response_to_wire(eager)
    lazy = codec.response_from_wire(wire)
    assert lazy.model_name == "m" and lazy.id == "r1" and lazy.parameters == {"variant": "int8"}
    assert isinstance(lazy, codec.WireResponse) and lazy.wire == wire
    lazy.id, lazy.parameters["served_by"] = "r2", "edge"
    relayed = pb.ModelInferResponse.FromString(codec.response_to_wire(lazy))
    assert relayed.id == "r2" and relayed.parameters["served_by"].string_param == "edge"
    assert relayed.raw_output_contents[0] == emb.tobytes()
    np.testing.assert_array_equal(lazy.output("e").data, emb)
    assert lazy.outputs is lazy.outputs  # decoded once
    copy = dataclasses.replace(lazy, id="r1", parameters={"variant": "int8"}, wire=None)
    assert copy.outputs[0].shape == (2, 3) and codec.response_to_wire(copy) == codec.response_to_wire(eager)
    replaced = codec.response_from_wire(wire)
    replaced.outputs = []
    assert replaced.outputs == []


def test_copies_for_other_requests_stay_lazy_and_decode_once_for_all():
    emb = np.ones((1, 2), np.float32)
    lazy = codec.response_from_wire(codec.response_to_wire(InferResponse("m", [Tensor("e", "FP32", (1, 2), emb)])))
    first, second = codec.for_another_request(lazy), codec.for_another_request(lazy)
    first.parameters["served_by"] = "cache"
    assert isinstance(first, codec.WireResponse) and "served_by" not in lazy.parameters | second.parameters
    assert all(getattr(second, f.name) == getattr(lazy, f.name) for f in dataclasses.fields(InferResponse))
    assert first.wire is lazy.wire and first.outputs is second.outputs is lazy.outputs  # one decode, shared
    eager = codec.for_another_request(InferResponse("m", [Tensor("e", "FP32", (1, 2), emb)], parameters={"a": 1}))
    assert type(eager) is InferResponse and eager.parameters == {"a": 1}


def test_outputs_that_do_not_decode_are_the_senders_fault_every_time_they_are_read(caplog):
    msg = codec.response_to_proto(InferResponse("m", [Tensor("e", "FP32", (1, 3), np.ones((1, 3), np.float32))]))
    msg.raw_output_contents[0] = b"short"
    wire = msg.SerializeToString()
    response = codec.response_from_wire(wire)  # the bytes parse: nothing is decoded yet
    assert codec.response_to_wire(response).startswith(wire)
    for _ in range(2):
        with pytest.raises(InternalError, match="a backend sent a malformed response"):
            response.outputs  # noqa: B018
    assert "outputs[e]: raw data is 5 bytes" in caplog.text
    with pytest.raises(InvalidArgument, match="response"):
        codec.response_from_wire(b"\xff\xff")


def test_a_response_decoded_whole_keeps_its_bytes_and_refuses_outputs_that_do_not_decode():
    msg = codec.response_to_proto(InferResponse("m", [Tensor("e", "FP32", (1, 3), np.ones((1, 3), np.float32))],
                                                id="r", parameters={"a": 1}))
    wire = msg.SerializeToString()
    response = codec.decoded_response_from_wire(wire)
    assert type(response) is InferResponse and response.wire == wire
    assert (response.model_name, response.id, response.parameters) == ("m", "r", {"a": 1})
    np.testing.assert_array_equal(response.output("e").data, np.ones((1, 3), np.float32))
    msg.raw_output_contents[0] = b"short"
    with pytest.raises(InvalidArgument, match="raw data is 5 bytes"):
        codec.decoded_response_from_wire(msg.SerializeToString())
    with pytest.raises(InvalidArgument, match="response"):
        codec.decoded_response_from_wire(b"\xff\xff")


_DTYPES = st.sampled_from(["BOOL", "UINT8", "INT16", "INT32", "INT64", "UINT64", "FP16", "FP32", "FP64"])


@settings(max_examples=60, deadline=None)
@given(data=st.data(), datatype=_DTYPES)
def test_property_raw_round_trip(data, datatype):
    from edgecloud.datatypes import DATATYPES

    dtype = DATATYPES[datatype].numpy_dtype
    shape = data.draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=4))
    array = data.draw(hnp.arrays(dtype, shape, elements=hnp.from_dtype(dtype, allow_nan=False)))
    msg = codec.request_to_proto(_request(Tensor("x", datatype, shape, array)))
    decoded = codec.request_from_proto(pb.ModelInferRequest.FromString(msg.SerializeToString()))
    np.testing.assert_array_equal(decoded.input("x").data, array)
    assert decoded.input("x").shape == shape


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(max_size=40), max_size=10))
def test_property_bytes_round_trip(items):
    assert list(codec.deserialize_bytes(codec.serialize_bytes(items), len(items), "f")) == items


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=64), st.integers(min_value=0, max_value=8))
def test_property_arbitrary_bytes_never_crash_the_decoder(raw, count):
    try:
        codec.deserialize_bytes(raw, count, "f")
    except (InvalidArgument, ResourceExhausted):
        pass


# --- stream responses -------------------------------------------------------------------------


def test_a_stream_response_part_is_sliced_out_as_is():
    from edgecloud.codec import stream_error_to_wire, stream_response_part, stream_response_to_wire
    from edgecloud.errors import ErrorKind

    inner = pb.ModelInferResponse(model_name="m" * 300, id="r1")  # a length over one varint byte
    inner.parameters["triton_final_response"].bool_param = True
    wrapped = pb.ModelStreamInferResponse(infer_response=inner).SerializeToString()
    assert stream_response_part(wrapped) == inner.SerializeToString()
    # an error (with its response part naming the request) is not a bare response: decode it whole
    assert stream_response_part(stream_error_to_wire("bad", None, ErrorKind.INVALID_ARGUMENT)) is None
    assert stream_response_part(b"") is None and stream_response_part(b"\x12\x05ab") is None
    assert stream_response_part(wrapped + b"\x0a\x01x") is None  # something after the part
    from edgecloud.types import InferResponse

    relayed = stream_response_to_wire(InferResponse("m", [], id="r2", wire=inner.SerializeToString(),
                                                    parameters={"served_by": "edge"}))
    merged = pb.ModelStreamInferResponse.FromString(relayed).infer_response
    assert merged.id == "r2" and merged.parameters["served_by"].string_param == "edge"
    assert merged.parameters["triton_final_response"].bool_param is True


def test_a_stream_error_says_its_kind_and_retry_hint():
    from edgecloud.codec import stream_error_from_proto, stream_error_to_wire
    from edgecloud.errors import ErrorKind, InternalError, InvalidArgument

    error = stream_error_from_proto(pb.ModelStreamInferResponse.FromString(
        stream_error_to_wire("bad", None, ErrorKind.INVALID_ARGUMENT)))
    assert isinstance(error, InvalidArgument) and error.message == "bad"
    unknown = stream_error_from_proto(pb.ModelStreamInferResponse(error_message="?"))  # a Triton stand-in
    assert isinstance(unknown, InternalError) and unknown.retry_after_s is None
    shed = stream_error_from_proto(pb.ModelStreamInferResponse.FromString(
        stream_error_to_wire("busy", None, ErrorKind.RESOURCE_EXHAUSTED, 1.5)))
    assert shed.kind is ErrorKind.RESOURCE_EXHAUSTED and shed.retry_after_s == 1.5


def test_request_bytes_get_another_id_and_a_timeout_appended_without_re_encoding():
    original = pb.ModelInferRequest(model_name="m", id="client's id")
    original.parameters["priority"].int64_param = 3
    original.parameters["timeout"].int64_param = 9_000_000
    wire = original.SerializeToString()
    rewritten = codec.request_wire_with_id(wire, "m17", timeout_s=0.25)
    assert rewritten.startswith(wire)
    parsed = pb.ModelInferRequest.FromString(rewritten)
    assert parsed.id == "m17" and parsed.model_name == "m"
    assert parsed.parameters["timeout"].int64_param == 250_000 and parsed.parameters["priority"].int64_param == 3
    assert pb.ModelInferRequest.FromString(codec.request_wire_with_id(wire, "")).parameters["timeout"].int64_param == 9_000_000


def test_a_cancel_message_names_its_request_and_nothing_else_reads_as_one():
    assert codec.cancelled_id(codec.cancel_wire("m42")) == "m42"
    assert codec.cancelled_id(codec.request_wire_with_id(b"", "m42")) is None  # an id alone is no cancel
    request = pb.ModelInferRequest(model_name="m", id="m42")
    request.parameters[codec.CANCEL_PARAMETER].bool_param = True
    assert codec.cancelled_id(request.SerializeToString()) is None  # names a model: a request
    assert codec.cancelled_id(b"\x1a\xff") is None  # does not parse
