"""``GrpcBackend``'s reading of a stream's messages (no connection needed); the backend's calls
over real servers are tested through the gateway (``test_gateway_integration.py``, ``streams``)."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from edgecloud import codec
from edgecloud.errors import InternalError, InvalidArgument
from edgecloud.limits import RequestLimits
from edgecloud.types import InferResponse, Tensor
from gateway.backend import CLOUD
from gateway.grpc_backend import GrpcBackend
from protos import inference_pb2 as pb


def chunk(raw_output: bytes | None = None) -> bytes:
    msg = codec.response_to_proto(InferResponse("m", [Tensor("e", "FP32", (1, 3), np.ones((1, 3), np.float32))]))
    if raw_output is not None:
        msg.raw_output_contents[0] = raw_output
    return pb.ModelStreamInferResponse(infer_response=msg).SerializeToString()


@pytest.fixture
def backend() -> GrpcBackend:
    return GrpcBackend("cloud-0", CLOUD, "127.0.0.1:9", limits=RequestLimits())


def test_a_stream_chunk_is_decoded_whole_with_its_bytes_kept_for_the_relay(backend):
    response = backend._stream_message(chunk())
    np.testing.assert_array_equal(response.output("e").data, np.ones((1, 3), np.float32))
    assert response.wire is not None and codec.response_from_wire(response.wire).model_name == "m"


def test_a_chunk_that_does_not_decode_fails_as_the_backends_fault_logged_once_with_who_sent_it(backend, caplog):
    with caplog.at_level(logging.WARNING):
        with pytest.raises(InternalError, match="a backend sent a malformed response") as info:
            backend._stream_message(chunk(b"short"))
    assert isinstance(info.value.__cause__, InvalidArgument)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "cloud-0 (127.0.0.1:9)" in warnings[0] and "raw data is 5 bytes" in warnings[0]
