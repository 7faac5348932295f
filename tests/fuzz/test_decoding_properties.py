"""Property tests of the request path every server shares: whatever arrives, decoding and
validation either produce a request that keeps every promise of the types, or raise a typed
``InferenceError`` of the right kind naming a field; nothing else ever escapes. And one request
decodes to the same tensors whichever of the four encodings carried it.

Bounded for CI (100–300 examples each, no deadline); ``atheris_harness.py`` runs the same targets
for as long as you like.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgecloud import codec, json_codec
from edgecloud.datatypes import DATATYPES
from edgecloud.errors import ErrorKind, InferenceError
from edgecloud.types import InferRequest, InferResponse, Tensor
from edgecloud.validation import validate_request
from protos import inference_pb2 as pb
from tests.fuzz import fuzz_targets
from tests.fuzz.strategies import (
    SMALL,
    infer_messages,
    json_documents,
    json_values,
    metadata,
    mutated_wire,
    requests,
)

MANY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
"""For cheap inputs (bytes, JSON values)."""
FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
"""For structured requests, which cost more to build."""
DECODE_KINDS = {ErrorKind.INVALID_ARGUMENT, ErrorKind.RESOURCE_EXHAUSTED}
FIELD_ROOTS = ("model_name", "inputs", "outputs", "parameters", "raw_input_contents", "body", "id",
               "Inference-Header-Content-Length")


def decode_or_typed_error(decode, *args, **kwargs) -> InferRequest | None:
    """The decoded request, or None after checking the typed error: right kind, field named."""
    try:
        return decode(*args, **kwargs)
    except InferenceError as exc:
        assert exc.kind in DECODE_KINDS, exc
        assert exc.field is not None and exc.field.startswith(FIELD_ROOTS), exc.message
        assert exc.message.startswith(exc.field + ": ")
        return None


# ---------------------------------------------------------------------------------------------
# gRPC: protobuf bytes -> ModelInferRequest -> InferRequest


@MANY
@given(st.binary(max_size=400))
def test_any_bytes_through_protobuf_and_the_codec(data):
    fuzz_targets.decode_proto(data)


@FAST
@given(mutated_wire())
def test_damaged_wire_bytes_through_protobuf_and_the_codec(data):
    fuzz_targets.decode_proto(data)


@FAST
@given(infer_messages())
def test_near_valid_messages_decode_within_limits_or_name_the_field(msg):
    request = decode_or_typed_error(codec.request_from_proto, msg, SMALL)
    if request is not None:
        fuzz_targets.check_request(request, SMALL)


@MANY
@given(st.binary(min_size=1, max_size=300))
def test_structure_aware_messages_from_fuzzer_bytes(data):
    fuzz_targets.one_input(fuzz_targets.as_input(1, data))


# ---------------------------------------------------------------------------------------------
# REST: body bytes (+ Inference-Header-Content-Length) -> InferRequest


@MANY
@given(st.binary(max_size=400))
def test_any_bytes_as_a_json_body(body):
    request = decode_or_typed_error(json_codec.request_from_json, body, None, SMALL, model_name="m")
    if request is not None:
        fuzz_targets.check_request(request, SMALL)


@FAST
@given(json_values)
def test_any_json_value_as_a_body(value):
    body = json.dumps(value).encode()
    assert decode_or_typed_error(json_codec.request_from_json, body, None, SMALL, model_name="m") is None \
        or isinstance(value, dict)


@FAST
@given(json_documents())
def test_near_valid_json_documents_decode_within_limits_or_name_the_field(doc):
    request = decode_or_typed_error(json_codec.request_from_json, json.dumps(doc).encode(), None, SMALL,
                                    model_name="m")
    if request is not None:
        fuzz_targets.check_request(request, SMALL)


@FAST
@given(requests(), st.binary(max_size=12), st.integers(-3, 3), st.integers(0, 5))
def test_binary_extension_bodies_with_lying_sizes(request, junk, length_delta, cut):
    """A valid binary body, then damaged: a header length off by a few, bytes cut or appended."""
    body, length = json_codec.request_to_json(request, binary_inputs=True)
    body = body[: len(body) - cut] + junk
    decoded = decode_or_typed_error(json_codec.request_from_json, body, length + length_delta, SMALL,
                                    model_name="m")
    if decoded is not None:
        fuzz_targets.check_request(decoded, SMALL)


@MANY
@given(st.binary(min_size=1, max_size=300))
def test_structure_aware_json_from_fuzzer_bytes(data):
    fuzz_targets.one_input(fuzz_targets.as_input(4, data))


# ---------------------------------------------------------------------------------------------
# one request, four encodings, one decoded request


def _same(a: InferRequest, b: InferRequest, how: str) -> None:
    assert [t.name for t in a.inputs] == [t.name for t in b.inputs], how
    for x, y in zip(a.inputs, b.inputs):
        assert (x.datatype, tuple(x.shape)) == (y.datatype, tuple(y.shape)), (how, x.name)
        assert codec.tensor_raw_bytes(x) == codec.tensor_raw_bytes(y), (how, x.name)
        assert x.parameters == y.parameters, (how, x.name)
    assert [(o.name, o.parameters) for o in a.outputs] == [(o.name, o.parameters) for o in b.outputs], how
    assert a.parameters == b.parameters, how


def _typed(msg: pb.ModelInferRequest, request: InferRequest) -> pb.ModelInferRequest | None:
    typed = pb.ModelInferRequest()
    typed.CopyFrom(msg)
    del typed.raw_input_contents[:]
    for entry, tensor in zip(typed.inputs, request.inputs):
        field = DATATYPES[tensor.datatype].contents_field
        if field is None:
            return None  # FP16 / BF16 travel raw only
        getattr(entry.contents, field).extend(tensor.data.reshape(-1).tolist())
    return typed


@FAST
@given(requests())
def test_raw_typed_json_and_binary_encodings_decode_to_the_same_request(request):
    msg = codec.request_to_proto(request)
    via_raw = codec.request_from_proto(pb.ModelInferRequest.FromString(msg.SerializeToString()), SMALL)
    _same(request, via_raw, "gRPC raw")
    typed = _typed(msg, request)
    if typed is not None:
        _same(request, codec.request_from_proto(typed, SMALL), "gRPC typed")
    for binary in (False, True):
        body, length = json_codec.request_to_json(request, binary_inputs=binary)
        decoded = json_codec.request_from_json(body, length, SMALL, model_name="m")
        _same(request, decoded, f"REST {'binary' if binary else 'JSON'}")


# ---------------------------------------------------------------------------------------------
# validation


@FAST
@given(requests(), metadata())
def test_validation_passes_only_what_the_metadata_allows_or_names_the_field(request, meta):
    try:
        validate_request(request, meta, SMALL)
    except InferenceError as exc:
        assert exc.kind is ErrorKind.INVALID_ARGUMENT, exc
        assert exc.field is not None and exc.field.startswith(("inputs", "outputs")), exc.message
        return
    specs = {spec.name: spec for spec in meta.inputs}
    assert {t.name for t in request.inputs} == set(specs)
    batch_limit = meta.max_batch_size or SMALL.max_batch_size
    batches = set()
    for tensor in request.inputs:
        spec = specs[tensor.name]
        assert tensor.datatype == spec.datatype and len(tensor.shape) == len(spec.shape)
        assert all(want in (-1, got) for want, got in zip(spec.shape, tensor.shape))
        if spec.shape and spec.shape[0] == -1:
            assert 0 < tensor.shape[0] <= batch_limit
            batches.add(tensor.shape[0])
    assert len(batches) <= 1
    assert {o.name for o in request.outputs} <= {spec.name for spec in meta.outputs}


@FAST
@given(infer_messages(), metadata())
def test_decode_then_validate_raises_only_typed_errors(msg, meta):
    try:
        validate_request(codec.request_from_proto(msg, SMALL), meta, SMALL)
    except InferenceError as exc:
        assert exc.kind in DECODE_KINDS
    except Exception as exc:  # pragma: no cover - the property under test
        pytest.fail(f"{type(exc).__name__} escaped: {exc}")


# ---------------------------------------------------------------------------------------------
# responses the gateway decodes from a backend


@st.composite
def responses(draw) -> pb.ModelInferResponse:
    request = draw(requests())
    outputs = [Tensor(f"o{i}", t.datatype, t.shape, t.data) for i, t in enumerate(request.inputs)]
    return codec.response_to_proto(InferResponse("m", outputs, model_version="1", id="r",
                                                 parameters=request.parameters))


@FAST
@given(responses(), st.binary(max_size=8), st.integers(0, 40))
def test_backend_responses_decode_or_raise_typed_errors(msg, junk, at):
    data = msg.SerializeToString()
    damaged = data[:at] + junk + data[at:]
    fuzz_targets.decode_response(damaged)


@FAST
@given(responses(), st.booleans())
def test_a_decoded_response_survives_the_rest_front(msg, binary):
    response = codec.response_from_proto(msg, SMALL)
    body, length = json_codec.response_to_json(response, binary)
    again = json_codec.response_from_json(body, length, SMALL)
    for a, b in zip(response.outputs, again.outputs):
        assert (a.name, a.datatype, tuple(a.shape)) == (b.name, b.datatype, tuple(b.shape))
        if a.datatype in ("FP16", "FP32", "FP64", "BF16"):
            np.testing.assert_array_equal(codec.tensor_raw_bytes(a), codec.tensor_raw_bytes(b))
        else:
            assert codec.tensor_raw_bytes(a) == codec.tensor_raw_bytes(b)
