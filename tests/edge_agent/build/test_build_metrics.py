"""Agreement metrics on hand-made inputs whose answers are known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edge_agent.build.metrics import (
    agreement,
    nearest_neighbours,
    nn_agreement,
    pairwise_spearman,
    pairwise_upper,
    rankdata,
    row_cosines,
    spearman,
)


def test_rankdata_averages_ties():
    assert rankdata(np.array([10, 20, 20, 5])).tolist() == [2.0, 3.5, 3.5, 1.0]
    assert rankdata(np.array([3, 3, 3])).tolist() == [2.0, 2.0, 2.0]


def test_spearman_is_rank_not_value_correlation():
    x = np.arange(1, 11, dtype=float)
    assert spearman(x, np.exp(x)) == pytest.approx(1.0)  # Pearson would be ~0.72
    assert spearman(x, -x ** 3) == pytest.approx(-1.0)


def test_spearman_with_ties_matches_hand_computation():
    # ranks x = [1, 2.5, 2.5, 4], ranks y = [1, 3, 2, 4]: 4.5 / sqrt(4.5 * 5).
    # Ranking ties by position instead (1, 2, 3, 4) would give 0.8.
    got = spearman(np.array([1.0, 2.0, 2.0, 3.0]), np.array([1.0, 3.0, 2.0, 4.0]))
    assert got == pytest.approx(4.5 / math.sqrt(22.5))


def test_spearman_of_a_constant_is_nan():
    assert math.isnan(spearman(np.ones(5), np.arange(5.0)))


def test_row_cosines_ignore_scale():
    a = np.array([[1.0, 0.0], [1.0, 1.0]])
    b = np.array([[3.0, 0.0], [-2.0, -2.0]])
    assert row_cosines(a, b).tolist() == pytest.approx([1.0, -1.0])


def test_pairwise_upper_has_each_pair_once():
    e = np.eye(4)
    sims = pairwise_upper(e)
    assert sims.shape == (6,)
    assert np.allclose(sims, 0.0)


def _points(angles_deg):
    a = np.radians(angles_deg)
    return np.stack([np.cos(a), np.sin(a)], axis=1)


def test_nearest_neighbours_exclude_self():
    # angles 0, 10, 100, 115: neighbours are 1, 0, 3, 2.
    assert nearest_neighbours(_points([0, 10, 100, 115])).tolist() == [1, 0, 3, 2]


def test_nn_agreement_counts_changed_neighbours():
    reference = _points([0, 10, 100, 115])
    candidate = _points([0, 50, 60, 115])  # neighbours become 1, 2, 1, 2
    assert nn_agreement(reference, reference) == 1.0
    assert nn_agreement(reference, candidate) == pytest.approx(0.5)


def test_pairwise_spearman_and_agreement_on_identical_and_perturbed():
    rng = np.random.default_rng(0)
    e = rng.normal(size=(20, 8))
    assert pairwise_spearman(e, e) == pytest.approx(1.0)
    noisy = e + rng.normal(scale=0.5, size=e.shape)
    result = agreement(e, noisy)
    assert set(result) == {"cosine_mean", "cosine_min", "cosine_p1", "spearman", "nn_agreement"}
    assert result["cosine_min"] <= result["cosine_p1"] <= result["cosine_mean"] < 1.0
    assert 0.0 < result["spearman"] < 1.0
