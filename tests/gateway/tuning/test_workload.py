"""Deriving arrivals and per-backend RTTs from a trace, hedge losers recognised and left out."""

from __future__ import annotations

import pytest

from gateway.tuning.trace import Trace, TraceError, TraceSample
from gateway.tuning.workload import LatencySeries, Workload, find_hedge_pairs, probe_interval_ms
from tests.gateway.tuning.synthetic import steps, trace


def test_the_nearest_sample_by_start_time_answers():
    series = LatencySeries((1.0, 2.0, 4.0), (0.1, 0.2, 0.4))
    assert [series.at(t) for t in (0.0, 1.4, 1.5, 1.6, 3.0, 3.1, 9.0)] == [0.1, 0.1, 0.1, 0.2, 0.2, 0.4, 0.4]
    assert series.scaled(2).rtts_s == (0.2, 0.4, 0.8) and len(series) == 3
    with pytest.raises(TraceError):
        LatencySeries((), ()).at(1.0)


def hedged_request(at: float, edge_ms: float = 300, hedge_ms: float = 200, cloud_ms: float = 50,
                   lag_s: float = 0.002) -> list[TraceSample]:
    """What the gateway records for a request whose hedge won: the cloud's RTT, then the cancelled edge."""
    cloud_done = at + (hedge_ms + cloud_ms) / 1000
    return [TraceSample(cloud_done, "cloud", cloud_ms / 1000, False),
            TraceSample(cloud_done + lag_s, "edge", (hedge_ms + cloud_ms) / 1000 + lag_s, False)]


def test_a_cancelled_edge_attempt_is_paired_with_the_hedge_that_beat_it():
    samples = [TraceSample(10.05, "edge", 0.05, False), *hedged_request(11.0),
               TraceSample(12.0, "cloud", 0.05, False),  # a cloud request ...
               TraceSample(12.01, "edge", 0.005, False),  # ... and an edge one started after it: not a pair
               TraceSample(13.0, "edge", 0.1, True)]
    built = Trace.build(samples)
    assert find_hedge_pairs(built.samples, 0.025) == {2: 1}
    assert find_hedge_pairs(built.samples, 0.001) == {}  # recorded too long after the cloud answer


def test_samples_the_gateway_marks_are_trusted():
    samples = [TraceSample(1.0, "cloud", 0.05, False), TraceSample(1.001, "edge", 0.3, False, censored=False),
               TraceSample(2.0, "edge", 0.3, False, censored=True)]
    assert find_hedge_pairs(tuple(samples), 0.025) == {2: -1}


def test_arrivals_count_a_hedged_request_once_and_leave_probes_out():
    samples = [TraceSample(10.05, "edge", 0.05, False), *hedged_request(11.0), TraceSample(12.06, "cloud", 0.06, False),
               TraceSample(12.5, "edge", 0.01, True), TraceSample(12.6, "cloud", 0.02, True)]
    workload = Workload.from_trace(Trace.build(samples, start=10.0, end=13.0))
    assert workload.arrivals == pytest.approx((10.0, 11.0, 12.0))
    assert workload.censored == 1
    assert workload.edge.rtts_s == (0.05, 0.01)  # the 252 ms lower bound is not an edge RTT
    assert len(workload.cloud) == 3 and workload.rate == pytest.approx(1.0)


def test_a_rate_replaces_the_recorded_arrivals():
    workload = Workload.from_trace(trace(steps((1e9, 20)), steps((1e9, 60)), duration_s=2.0), rate=4)
    assert workload.arrivals == pytest.approx(tuple(1000.125 + k * 0.25 for k in range(8)))
    with pytest.raises(ValueError):
        Workload.from_trace(trace(steps((1e9, 20)), steps((1e9, 60)), duration_s=2.0), rate=0)


def test_edge_rtts_can_be_scaled_for_what_ifs():
    workload = Workload.from_trace(trace(steps((1e9, 20)), steps((1e9, 60)), duration_s=1.0))
    slower = workload.with_edge_scaled(1.1)
    assert slower.edge.rtts_s[0] == pytest.approx(0.022) and slower.cloud == workload.cloud


def test_a_trace_without_one_backend_is_refused():
    with pytest.raises(TraceError, match="no usable edge samples"):
        Workload.from_trace(Trace.build([TraceSample(1.0, "cloud", 0.05, False)]))
    with pytest.raises(TraceError, match="no cloud samples"):
        Workload.from_trace(Trace.build([TraceSample(1.0, "edge", 0.05, False)]))


def test_the_probe_interval_shows_in_the_probes_start_times():
    # probes every 200 ms, except that a slow one made the gateway skip a tick
    starts = [0.0, 0.2, 0.4, 0.6, 1.0, 1.2, 1.4, 1.6, 1.8]
    probes = [TraceSample(s + 0.01, "edge", 0.01, True) for s in starts]
    assert probe_interval_ms(Trace.build(probes)) == 200.0
    assert probe_interval_ms(Trace.build(probes[:4])) is None
