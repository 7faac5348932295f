"""``LatencyTrace``: a fixed-size ring of (t, backend, rtt, probe), oldest first, filtered by time;
``LatencyStats.watch``: a running count of the window's samples over one limit."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from edgecloud.clock import FakeClock
from gateway.latency import LatencyStats, LatencyTrace


def test_entries_come_back_oldest_first_with_their_fields():
    trace = LatencyTrace(maxlen=5)
    trace.append(1.0, "edge", 0.010, False)
    trace.append(2.0, "cloud-0", 0.050, True)
    assert trace.since() == [(1.0, "edge", 0.010, False), (2.0, "cloud-0", 0.050, True)]
    assert trace.since(1.0) == [(2.0, "cloud-0", 0.050, True)]
    assert len(trace) == 2


def test_the_ring_keeps_the_newest_maxlen_in_order_after_wrapping():
    trace = LatencyTrace(maxlen=4)
    for i in range(11):
        trace.append(float(i), "edge" if i % 2 else "cloud", i / 1000, i % 3 == 0)
    got = trace.since()
    assert [t for t, *_ in got] == [7.0, 8.0, 9.0, 10.0]
    assert got[0] == (7.0, "edge", 0.007, False) and got[2] == (9.0, "edge", 0.009, True)
    assert [t for t, *_ in trace.since(8.5)] == [9.0, 10.0]
    assert len(trace) == 4


def test_an_empty_trace_and_a_bad_size():
    assert LatencyTrace(maxlen=3).since() == []
    with pytest.raises(ValueError):
        LatencyTrace(maxlen=0)


# ``LatencyStats.watch``: the running count of the window's samples over one limit ---------------

def test_the_watched_count_follows_samples_in_and_out_of_the_window():
    clock = FakeClock()
    stats = LatencyStats(clock, window_s=1.0)
    stats.watch(0.100)
    for rtt in (0.050, 0.150, 0.300, 0.100):  # 0.100 is not over 0.100
        stats.record(rtt)
        clock.advance(0.3)
    assert stats.over_watched() == 2 == stats.count_above(0.100)
    clock.advance(0.2)  # the first two (t=0, 0.3) are older than the window now
    assert stats.over_watched() == 1 == stats.count_above(0.100)
    stats.watch(0.020)  # a new limit recounts what is kept
    assert stats.over_watched() == 2


def test_samples_pushed_out_by_the_bound_leave_the_count():
    stats = LatencyStats(FakeClock(), window_s=60.0, max_samples=3)
    stats.watch(0.100)
    for rtt in (0.500, 0.500, 0.010, 0.010):
        stats.record(rtt)
    assert stats.over_watched() == 1 == stats.count_above(0.100)


def test_nothing_is_counted_while_no_limit_is_watched():
    stats = LatencyStats(FakeClock())
    stats.record(5.0)
    assert stats.over_watched() == 0


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 0.5), st.sampled_from([0.001, 0.01, 0.05]), st.booleans()), max_size=60),
       st.sampled_from([0.05, 0.1, 0.2]), st.integers(1, 8))
def test_the_watched_count_is_the_windows_count_above_the_limit(steps, limit_s, max_samples):
    clock = FakeClock()
    stats = LatencyStats(clock, window_s=0.1, max_samples=max_samples, warmup=1)
    stats.watch(limit_s)
    for rtt, dt, rewatch in steps:
        clock.advance(dt)
        stats.record(rtt)
        if rewatch:
            stats.watch(limit_s)
        assert stats.over_watched() == stats.count_above(limit_s)
