"""The classification extension: top classes as "value:index[:label]", and its refusals by field."""

from __future__ import annotations

import numpy as np
import pytest

from edgecloud.classification import classification_count, classify
from edgecloud.errors import InvalidArgument
from edgecloud.types import RequestedOutput, Tensor, TensorSpec

SPEC = TensorSpec("probabilities", "FP32", (-1, 4))


def test_the_top_classes_come_highest_first_with_their_labels():
    data = np.array([[0.1, 0.5, 0.3, 0.1], [0.7, 0.1, 0.1, 0.1]], dtype=np.float32)
    out = classify(Tensor("probabilities", "FP32", (2, 4), data), 2, ["cat", "dog", "fox", "owl"])
    assert out.datatype == "BYTES" and out.shape == (2, 2)
    assert [bytes(x).decode() for x in out.data.reshape(-1)] == [
        "0.500000:1:dog", "0.300000:2:fox", "0.700000:0:cat", "0.100000:1:dog"]  # a tie: the lower index


def test_without_labels_the_string_is_value_and_index():
    out = classify(Tensor("y", "INT64", (3,), np.array([5, 10, 1])), 1)
    assert out.shape == (1,) and bytes(out.data[0]) == b"10.000000:1"


def test_a_count_over_the_classes_is_refused():
    with pytest.raises(InvalidArgument) as caught:
        classify(Tensor("probabilities", "FP32", (1, 4), np.zeros((1, 4), np.float32)), 5)
    assert caught.value.field == "outputs[probabilities].parameters.classification"


@pytest.mark.parametrize("count", [0, -1, 2.5, "3", True])
def test_ill_formed_counts_are_refused_by_field(count):
    with pytest.raises(InvalidArgument) as caught:
        classification_count(RequestedOutput("probabilities", {"classification": count}), SPEC)
    assert caught.value.field == "outputs[probabilities].parameters.classification"


def test_only_numeric_outputs_classify():
    with pytest.raises(InvalidArgument):
        classification_count(RequestedOutput("text", {"classification": 1}), TensorSpec("text", "BYTES", (-1,)))
    assert classification_count(RequestedOutput("probabilities", {}), SPEC) is None
    assert classification_count(RequestedOutput("probabilities", {"classification": 3}), SPEC) == 3
