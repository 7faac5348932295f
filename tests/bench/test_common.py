"""The benchmarks' shared comparison helpers (pure logic)."""

import pytest

from bench.common import alternating, paired_ratios


def test_paired_ratios_compare_within_each_rep_so_drift_between_reps_cancels():
    # The machine ran 30% slower in the second rep for both servers; each rep's ratio is 0.9.
    result = paired_ratios([900.0, 630.0], [1000.0, 700.0])
    assert result == pytest.approx({"median": 0.9, "min": 0.9, "max": 0.9})
    # The ratio of medians would have mixed the reps: 765 / 850.
    assert paired_ratios([1.0, 2.0, 4.0], [1.0, 1.0, 1.0]) == {"median": 2.0, "min": 1.0, "max": 4.0}


def test_paired_ratios_refuse_reps_that_do_not_pair():
    with pytest.raises(ValueError, match="equal"):
        paired_ratios([1.0], [1.0, 2.0])
    with pytest.raises(ValueError):
        paired_ratios([], [])


def test_alternating_reverses_every_other_rep():
    assert alternating(["a", "b", "c"], 0) == ["a", "b", "c"]
    assert alternating(["a", "b", "c"], 1) == ["c", "b", "a"]
    assert alternating(("a", "b"), 2) == ["a", "b"]
