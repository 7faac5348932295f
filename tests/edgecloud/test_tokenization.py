"""``mean_pool_normalize``: sentence-transformers' mean pooling and L2 normalisation, as float32."""

from __future__ import annotations

import numpy as np
import pytest

from edgecloud.tokenization import decode_utf8, mean_pool_normalize
from edgecloud.errors import InvalidArgument


def reference(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The recipe written out, one sentence at a time, in float64."""
    out = []
    for states, keep in zip(hidden.astype(np.float64), mask.astype(bool)):
        pooled = states[keep].mean(axis=0) if keep.any() else np.zeros(states.shape[-1])
        norm = np.linalg.norm(pooled)
        out.append(pooled / norm if norm > 0 else pooled)
    return np.array(out)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_padding_does_not_count_and_every_row_has_unit_length(dtype):
    rng = np.random.default_rng(7)
    hidden = rng.standard_normal((3, 5, 8)).astype(dtype)
    mask = np.array([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 0, 0, 0, 0]], dtype=np.int64)
    hidden[1, 2:] = 1e4  # padded positions hold anything: they must not move the mean
    got = mean_pool_normalize(hidden, mask)
    assert got.dtype == np.float32 and got.shape == (3, 8)
    np.testing.assert_allclose(got, reference(hidden, mask), atol=1e-3 if dtype == np.float16 else 1e-6)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_a_row_with_no_tokens_pools_to_zeros_not_nan():
    got = mean_pool_normalize(np.ones((1, 3, 4), np.float32), np.zeros((1, 3), np.int64))
    assert np.array_equal(got, np.zeros((1, 4), np.float32))


def test_decode_utf8_names_the_element_that_is_not_utf8():
    assert decode_utf8([b"ok", "é".encode()], "inputs[text]") == ["ok", "é"]
    with pytest.raises(InvalidArgument) as info:
        decode_utf8([b"ok", b"\xff"], "inputs[text]")
    assert info.value.field == "inputs[text]" and "element 1" in info.value.message
