"""``LatencyTrace``: a fixed-size ring of (t, backend, rtt, probe), oldest first, filtered by time."""

from __future__ import annotations

import pytest

from gateway.latency import LatencyTrace


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
