"""The decoders never allocate in proportion to what a request *declares*, only to what it *sends*.

A shape is a promise the data must keep; a hostile client can declare ``[16777216]`` and send five
bytes. Every decode path (gRPC raw, gRPC typed, REST JSON, REST binary) must refuse such a request
with the typed error naming the field, and without first allocating for the declared shape. Peak
traced allocation (numpy reports its buffers to ``tracemalloc``) is the measure.
"""

from __future__ import annotations

import json
import time
import tracemalloc
from collections.abc import Callable

import pytest

from edgecloud import codec, json_codec
from edgecloud.codec import serialize_bytes
from edgecloud.errors import InferenceError, InvalidArgument
from edgecloud.limits import RequestLimits
from protos import inference_pb2 as pb

LIMITS = RequestLimits()
DECLARED = LIMITS.max_elements  # the largest shape the limits allow: 16 Mi elements
PEAK_BOUND = 1024 * 1024
"""Traced bytes a five-byte request may cost; a buffer for the declared shape would be 128 MiB."""


def _raw_proto(datatype: str, data: bytes) -> Callable[[], InferenceError | None]:
    msg = pb.ModelInferRequest(model_name="m")
    msg.inputs.add(name="text", datatype=datatype, shape=[DECLARED])
    msg.raw_input_contents.append(data)
    return lambda: codec.request_from_proto(msg, LIMITS)


def _typed_proto() -> Callable[[], InferenceError | None]:
    msg = pb.ModelInferRequest(model_name="m")
    msg.inputs.add(name="text", datatype="BYTES", shape=[DECLARED]).contents.bytes_contents.append(b"a")
    return lambda: codec.request_from_proto(msg, LIMITS)


def _rest_binary(datatype: str, data: bytes) -> Callable[[], InferenceError | None]:
    header = json.dumps({"inputs": [{"name": "text", "datatype": datatype, "shape": [DECLARED],
                                     "parameters": {"binary_data_size": len(data)}}]}).encode()
    return lambda: json_codec.request_from_json(header + data, len(header), LIMITS, model_name="m")


def _rest_json() -> Callable[[], InferenceError | None]:
    body = json.dumps({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [DECLARED], "data": ["a"]}]})
    return lambda: json_codec.request_from_json(body.encode(), None, LIMITS, model_name="m")


CASES = {
    "grpc raw BYTES": _raw_proto("BYTES", serialize_bytes([b"a"])),
    "grpc raw BYTES, no data": _raw_proto("BYTES", b""),
    "grpc raw FP32": _raw_proto("FP32", b"\0\0\0\0"),
    "grpc typed BYTES": _typed_proto(),
    "rest binary BYTES": _rest_binary("BYTES", serialize_bytes([b"a"])),
    "rest binary INT64": _rest_binary("INT64", b"\0" * 8),
    "rest json BYTES": _rest_json(),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_tiny_request_declaring_a_huge_shape_costs_no_memory(case):
    """Refused as INVALID_ARGUMENT naming ``inputs[text]``, with < 1 MiB traced at peak, quickly."""
    decode = CASES[case]
    tracemalloc.start()
    try:
        started = time.thread_time()  # CPU time: a descheduled process is not a slow decoder
        with pytest.raises(InvalidArgument) as info:
            decode()
        elapsed = time.thread_time() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.value.field is not None and info.value.field.startswith("inputs[text]"), info.value.message
    assert peak < PEAK_BOUND, f"decoding a few bytes allocated {peak / 2**20:.0f} MiB at peak"
    assert elapsed < 0.5, f"decoding a few bytes took {elapsed * 1000:.0f} ms"
