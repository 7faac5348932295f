"""Length bucketing: a partition of the rows, never bigger than the limit, cheaper than no split."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from cloud_worker.bucketing import plan_chunks


def cost(lengths, chunks, call_cost):
    return sum(len(c) * int(np.max(np.asarray(lengths)[c])) + call_cost for c in chunks)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(1, 256), min_size=0, max_size=80), st.integers(1, 40), st.booleans())
def test_every_row_once_and_no_chunk_over_the_limit(lengths, max_rows, bucketed):
    chunks = plan_chunks(lengths, max_rows, bucketed=bucketed)
    flat = sorted(int(i) for chunk in chunks for i in chunk)
    assert flat == list(range(len(lengths)))
    assert all(1 <= len(chunk) <= max_rows for chunk in chunks)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(1, 256), min_size=1, max_size=64), st.integers(1, 32))
def test_bucketing_never_costs_more_than_cutting_in_order(lengths, max_rows):
    bucketed = plan_chunks(lengths, max_rows, call_cost_tokens=64)
    in_order = plan_chunks(lengths, max_rows, bucketed=False)
    assert cost(lengths, bucketed, 64) <= cost(lengths, in_order, 64)


def test_one_long_outlier_gets_its_own_call_and_equal_lengths_stay_together():
    lengths = [13] * 31 + [200]
    chunks = plan_chunks(lengths, 32)
    assert sorted(len(c) for c in chunks) == [1, 31]
    assert plan_chunks([13, 12, 14, 13], 32, call_cost_tokens=64)[0].tolist() == [1, 0, 3, 2]


def test_unbucketed_chunks_keep_request_order():
    assert [c.tolist() for c in plan_chunks([5, 1, 9, 2, 7], 2, bucketed=False)] == [[0, 1], [2, 3], [4]]
