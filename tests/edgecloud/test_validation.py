"""Validation against model metadata: every mismatch class names its field."""

from __future__ import annotations

import numpy as np
import pytest

from edgecloud.codec import bytes_array
from edgecloud.errors import InvalidArgument
from edgecloud.limits import RequestLimits
from edgecloud.types import InferRequest, ModelMetadata, RequestedOutput, Tensor, TensorSpec
from edgecloud.validation import validate_request

META = ModelMetadata(
    name="m", versions=("1",), platform="p",
    inputs=(TensorSpec("text", "BYTES", (-1,)),),
    outputs=(TensorSpec("embedding", "FP32", (-1, 4)),),
)
LIMITS = RequestLimits(max_batch_size=8)


def _text(n: int) -> Tensor:
    data = bytes_array(["a"] * n)
    return Tensor("text", "BYTES", data.shape, data)


def test_valid_request_passes():
    validate_request(InferRequest("m", [_text(3)], outputs=[RequestedOutput("embedding")]), META, LIMITS)


@pytest.mark.parametrize(
    "request_, field",
    [
        (InferRequest("m", [Tensor("other", "BYTES", (1,), bytes_array(["a"]))]), "inputs"),
        (InferRequest("m", [_text(1), Tensor("extra", "FP32", (1,), np.zeros(1, np.float32))]), "inputs[extra]"),
        (InferRequest("m", [Tensor("text", "FP32", (1,), np.zeros(1, np.float32))]), "inputs[text].datatype"),
        (InferRequest("m", [Tensor("text", "BYTES", (1, 1), bytes_array(["a"]).reshape(1, 1))]), "inputs[text].shape"),
        (InferRequest("m", [_text(0)]), "inputs[text].shape"),
        (InferRequest("m", [_text(9)]), "inputs[text].shape"),
        (InferRequest("m", [_text(1)], outputs=[RequestedOutput("nope")]), "outputs[nope]"),
    ],
    ids=["missing", "extra", "dtype", "rank", "empty-batch", "batch-limit", "unknown-output"],
)
def test_mismatches_name_the_field(request_, field):
    with pytest.raises(InvalidArgument) as info:
        validate_request(request_, META, LIMITS)
    assert info.value.message.startswith(field + ":"), info.value.message


def test_fixed_dimension_must_match():
    meta = ModelMetadata("m", ("1",), "p", (TensorSpec("x", "FP32", (-1, 3)),), ())
    validate_request(InferRequest("m", [Tensor("x", "FP32", (2, 3), np.zeros((2, 3), np.float32))]), meta, LIMITS)
    with pytest.raises(InvalidArgument, match=r"expected \[-1, 3\], got \[2, 4\]"):
        validate_request(InferRequest("m", [Tensor("x", "FP32", (2, 4), np.zeros((2, 4), np.float32))]), meta, LIMITS)


def test_inconsistent_batch_sizes_are_rejected():
    meta = ModelMetadata("m", ("1",), "p", (TensorSpec("a", "FP32", (-1,)), TensorSpec("b", "FP32", (-1,))), ())
    request = InferRequest("m", [Tensor("a", "FP32", (2,), np.zeros(2, np.float32)),
                                 Tensor("b", "FP32", (3,), np.zeros(3, np.float32))])
    with pytest.raises(InvalidArgument, match=r"inputs\[b\].shape: batch size 3 differs"):
        validate_request(request, meta, LIMITS)
