"""Cache keys: everything that changes the answer changes the key; encodings of the same tensor
share one; the encoding is unambiguous (property tests with hypothesis). Requests are written as
protobuf messages and keyed the way the gateway keys them: decoded once by the codec."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from edgecloud.codec import request_from_proto, serialize_bytes
from edgecloud.datatypes import DATATYPES
from gateway.cache.keys import EXCLUDED_PARAMETERS, cache_key, uncacheable
from protos import inference_pb2 as pb
from tests.gateway.cache.conftest import cache_request


def text_msg(texts: list[str], *, model: str = "all-MiniLM-L6-v2", **params) -> pb.ModelInferRequest:
    msg = tensor_msg("BYTES", [len(texts)], serialize_bytes([t.encode() for t in texts]), name="text")
    msg.model_name = model
    for name, value in params.items():
        _set_param(msg.parameters, name, value)
    return msg

NUMERIC = ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP32", "FP64"]
FAST = settings(max_examples=150, deadline=None)

names = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=8)
param_values = st.one_of(st.booleans(), st.integers(-(2**63), 2**63 - 1), st.text(max_size=8),
                         st.floats(allow_nan=False))


def _set_param(target, name: str, value) -> None:
    slot = target[name]
    if isinstance(value, bool):
        slot.bool_param = value
    elif isinstance(value, int):
        slot.int64_param = value
    elif isinstance(value, float):
        slot.double_param = value
    else:
        slot.string_param = value


def tensor_msg(datatype: str, shape: list[int], raw: bytes, name: str = "x") -> pb.ModelInferRequest:
    msg = pb.ModelInferRequest(model_name="m")
    msg.inputs.add(name=name, datatype=datatype, shape=shape)
    msg.raw_input_contents.append(raw)
    return msg


def decoded(msg: pb.ModelInferRequest, **kwargs):
    request = request_from_proto(msg)
    return cache_request(request, outputs=tuple(request.outputs), **kwargs)


def key(msg, **kwargs) -> bytes:
    return cache_key(decoded(msg, **kwargs))


@st.composite
def numeric_tensors(draw):
    datatype = draw(st.sampled_from(NUMERIC))
    dtype = DATATYPES[datatype].numpy_dtype
    shape = draw(st.lists(st.integers(0, 4), min_size=1, max_size=3))
    count = int(np.prod(shape))
    if datatype == "BOOL":
        values = draw(st.lists(st.booleans(), min_size=count, max_size=count))
    elif dtype.kind == "f":
        width = 32 if datatype == "FP32" else 64
        values = draw(st.lists(st.floats(width=width, allow_nan=False), min_size=count, max_size=count))
    else:
        info = np.iinfo(dtype)
        values = draw(st.lists(st.integers(int(info.min), int(info.max)), min_size=count, max_size=count))
    return datatype, shape, values


@FAST
@given(numeric_tensors())
def test_typed_and_raw_encodings_of_the_same_tensor_share_a_key(tensor):
    datatype, shape, values = tensor
    info = DATATYPES[datatype]
    typed = pb.ModelInferRequest(model_name="m")
    t = typed.inputs.add(name="x", datatype=datatype, shape=shape)
    getattr(t.contents, info.contents_field).extend(values)
    raw = tensor_msg(datatype, shape, np.asarray(values, dtype=info.numpy_dtype).tobytes())
    assert key(typed) == key(raw)


@FAST
@given(st.lists(st.binary(max_size=6), min_size=1, max_size=4))
def test_typed_and_raw_bytes_tensors_share_a_key(items):
    typed = pb.ModelInferRequest(model_name="m")
    typed.inputs.add(name="text", datatype="BYTES", shape=[len(items)]).contents.bytes_contents.extend(items)
    raw = tensor_msg("BYTES", [len(items)], serialize_bytes(items), name="text")
    assert key(typed) == key(raw)


@FAST
@given(st.lists(st.integers(1, 6), min_size=1, max_size=4), st.lists(st.integers(1, 6), min_size=1, max_size=4))
def test_different_shapes_over_the_same_bytes_never_collide(a, b):
    if a == b:
        return
    raw = bytes(range(256)) * 16  # shapes differ; where they hold as many elements, the bytes do not
    assert key(tensor_msg("UINT8", a, raw[:int(np.prod(a))])) != key(tensor_msg("UINT8", b, raw[:int(np.prod(b))]))


def test_transposed_shapes_differ():
    raw = bytes(6 * 4)
    assert key(tensor_msg("FP32", [2, 3], raw)) != key(tensor_msg("FP32", [3, 2], raw))


@FAST
@given(st.sampled_from(NUMERIC), st.sampled_from(NUMERIC))
def test_different_dtypes_over_the_same_bytes_never_collide(a, b):
    if a == b:
        return
    def over_64_zero_bytes(datatype):
        return tensor_msg(datatype, [64 // DATATYPES[datatype].itemsize], bytes(64))

    assert key(over_64_zero_bytes(a)) != key(over_64_zero_bytes(b))


@FAST
@given(names, names, st.binary(max_size=8))
def test_different_tenants_never_collide(a, b, data):
    if a == b:
        return
    msg = tensor_msg("BYTES", [1], serialize_bytes([data]))
    assert key(msg, tenant=a) != key(msg, tenant=b)


@FAST
@given(st.text(max_size=6), st.text(max_size=6), st.text(max_size=6), st.text(max_size=6))
def test_fields_are_length_prefixed_not_concatenated(t1, m1, t2, m2):
    if (t1, m1) == (t2, m2):
        return
    msg1, msg2 = pb.ModelInferRequest(model_name="m" + m1), pb.ModelInferRequest(model_name="m" + m2)
    for msg in (msg1, msg2):
        msg.inputs.add(name="x", datatype="UINT8", shape=[1])
        msg.raw_input_contents.append(b"\x01")
    assert key(msg1, tenant=t1) != key(msg2, tenant=t2)


@FAST
@given(st.dictionaries(names, param_values, max_size=3), st.dictionaries(names, param_values, max_size=3),
       st.sampled_from(["request", "input", "output"]))
def test_different_parameters_never_collide(p1, p2, where):
    def without_excluded(params):
        return {k: v for k, v in params.items() if k not in EXCLUDED_PARAMETERS}

    def canonical(params):  # what the key sees: int vs bool vs float are different values
        return {k: (type(v).__name__, v) for k, v in without_excluded(params).items()}

    if canonical(p1) == canonical(p2):
        return
    msgs = []
    for params in (p1, p2):
        msg = tensor_msg("UINT8", [1], b"\x07")
        msg.outputs.add(name="y")
        target = {"request": msg.parameters, "input": msg.inputs[0].parameters, "output": msg.outputs[0].parameters}
        for name, value in params.items():
            _set_param(target[where], name, value)
        msgs.append(msg)
    assert key(msgs[0]) != key(msgs[1])


def test_the_same_parameter_in_a_different_place_differs():
    a, b = tensor_msg("UINT8", [1], b"\x07"), tensor_msg("UINT8", [1], b"\x07")
    a.parameters["k"].string_param = "v"
    b.inputs[0].parameters["k"].string_param = "v"
    assert key(a) != key(b)


def test_model_name_and_resolved_version_are_in_the_key():
    msg = text_msg(["hello"])
    other_model = text_msg(["hello"], model="other")
    assert key(msg, version="1") != key(msg, version="2")
    assert key(msg) != key(other_model)


def test_requested_outputs_and_their_order_are_in_the_key():
    plain, one, two, reordered = (text_msg(["hello"]) for _ in range(4))
    one.outputs.add(name="a")
    two.outputs.add(name="a")
    two.outputs.add(name="b")
    reordered.outputs.add(name="b")
    reordered.outputs.add(name="a")
    assert len({key(plain), key(one), key(two), key(reordered)}) == 4


def test_input_order_does_not_matter():
    a, b = pb.ModelInferRequest(model_name="m"), pb.ModelInferRequest(model_name="m")
    for msg, order in ((a, ("p", "q")), (b, ("q", "p"))):
        for name in order:
            msg.inputs.add(name=name, datatype="UINT8", shape=[1])
            msg.raw_input_contents.append(name.encode())
    assert key(a) == key(b)


def test_excluded_parameters_do_not_change_the_key():
    plain = text_msg(["hello"])
    noisy = text_msg(["hello"], no_cache=True, quality="cloud", binary_data_output=True, priority="1")
    noisy.id = "request-42"
    noisy.inputs[0].parameters["binary_data_size"].int64_param = 9
    assert key(plain) == key(noisy)
    traced = text_msg(["hello"], trace_id="abc")
    assert key(plain) != key(traced)  # unknown parameters are kept ...
    assert cache_key(decoded(traced), EXCLUDED_PARAMETERS | {"trace_id"}) == key(plain)  # ... unless ignored


def test_int64_and_uint64_parameters_with_the_same_value_share_a_key():
    a, b = text_msg(["x"]), text_msg(["x"])
    a.parameters["top_k"].int64_param = 5
    b.parameters["top_k"].uint64_param = 5
    assert key(a) == key(b)


def test_sequence_requests_are_uncacheable():
    assert not uncacheable(decoded(text_msg(["x"])))
    assert uncacheable(decoded(text_msg(["x"], sequence_id="7")))
