"""The replay through the gateway's own RoutingPolicy, on workloads whose outcome is worked out by hand."""

from __future__ import annotations

import dataclasses

import pytest

from gateway.config import RoutingSettings
from gateway.routing import Reason
from gateway.tuning.simulator import simulate
from tests.gateway.tuning.synthetic import steps, workload

START = 1000.0


def test_a_fast_edge_serves_everything():
    result = simulate(workload(steps((1e9, 20)), steps((1e9, 60))), RoutingSettings())
    summary = result.summary
    assert summary.requests == 200 and summary.edge_share == 1.0 and summary.hedge_rate == 0.0
    assert summary.p50_ms == pytest.approx(20) and summary.p99_ms == pytest.approx(20)
    assert result.transitions == 0 and [s for _, s in result.states] == ["edge_preferred"]
    assert {r.reason for r in result.requests} == {Reason.EDGE_FAST}


@pytest.mark.parametrize("probe_only_when_idle, switch_at", [(False, 5.36), (True, 5.31)])
def test_a_slow_edge_is_hedged_until_enough_slow_samples_move_traffic(probe_only_when_idle, switch_at):
    # Edge 20 ms, then 400 ms from t=5 s; cloud 60 ms; a request every 50 ms; hedge at 200 ms.
    # The hedges win at 200+60 ms and their cancelled edge attempts are recorded as 260 ms samples at
    # t=5.26, 5.31, 5.36. Probed under traffic, the 2 s window also holds a fast probe every 200 ms:
    # with 41 fast samples, the third slow one makes the p95 (rank 42 of 44) slow and traffic moves
    # at 5.36, so the requests of 5.00..5.35 (8) were hedged. Probed only when idle (the default),
    # the edge's traffic is its only sample: 34 fast ones, and the second slow one makes the p95
    # (rank 35 of 36) slow at 5.31 (7 hedged).
    settings = RoutingSettings(threshold_ms=200, probe_only_when_idle=probe_only_when_idle)
    result = simulate(workload(steps((5.0, 20), (1e9, 400)), steps((1e9, 60))), settings)
    by_reason = {reason: [r for r in result.requests if r.reason == reason]
                 for reason in {r.reason for r in result.requests}}
    assert len(by_reason[Reason.EDGE_FAST]) == 100
    hedged = by_reason[Reason.HEDGE_WON]
    expected = [round(5.0 + 0.05 * k, 2) for k in range(8)]
    assert [round(r.arrival - START, 2) for r in hedged] == [t for t in expected if t < switch_at]
    assert all(r.served_by == "cloud" and r.hedged and r.latency_s == pytest.approx(0.26) for r in hedged)
    assert len(by_reason[Reason.EDGE_SLOW]) == 100 - len(hedged)
    assert all(r.latency_s == pytest.approx(0.06) for r in by_reason[Reason.EDGE_SLOW])
    assert [(round(t - START, 2), s) for t, s in result.states] == [(0.0, "edge_preferred"), (switch_at, "cloud_fallback")]
    summary = result.summary
    assert (summary.edge_share, summary.hedge_rate, summary.transitions) == (0.5, len(hedged) / 200, 1)
    assert summary.p50_ms == pytest.approx(20) and summary.p99_ms == pytest.approx(260)


def test_recovery_needs_consecutive_good_probes_under_the_recover_ratio():
    # Edge 390 ms until t=3 s, then 20 ms. Probes every 200 ms from t=0 (one in flight blocks the
    # next): 390 ms probes start at 0.0, 0.4, ... 2.8; then 3.2, 3.4, 3.6 answer in 20 ms, and the
    # third good one (done at 3.62) brings traffic back.
    settings = RoutingSettings(threshold_ms=200, recover_ratio=0.7, recover_probes=3, probe_interval_ms=200)
    result = simulate(workload(steps((3.0, 390), (1e9, 20)), steps((1e9, 60))), settings)
    assert [(round(t - START, 2), s) for t, s in result.states] == [
        (0.0, "edge_preferred"), (0.36, "cloud_fallback"), (3.62, "edge_preferred")]
    served = [(round(r.arrival - START, 2), r.served_by) for r in result.requests]
    assert served[:8] == [(t, "cloud") for t in (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35)]
    assert {s for t, s in served if 0.4 <= t <= 3.6} == {"cloud"} and {s for t, s in served if t >= 3.65} == {"edge"}
    assert result.summary.edge_share == pytest.approx(127 / 200) and result.transitions == 2


def test_a_recover_ratio_too_low_for_the_recovered_edge_keeps_traffic_on_the_cloud():
    settings = RoutingSettings(threshold_ms=200, recover_ratio=0.05, recover_probes=3)  # probes must beat 10 ms
    result = simulate(workload(steps((3.0, 390), (1e9, 20)), steps((1e9, 60))), settings)
    assert result.transitions == 1 and result.summary.edge_share == 0.0


def test_probes_slower_than_their_timeout_mark_the_edge_down():
    # Probes time out at 1.93 s and 3.93 s: with failures_to_down=2 the edge is down from 3.93 s,
    # so requests (only from t=5 s here) go to the cloud as edge_down, whatever the statistic says.
    base = workload(steps((1e9, 3000)), steps((1e9, 60)))
    late = dataclasses.replace(base, arrivals=tuple(a for a in base.arrivals if a >= START + 5.0))
    settings = RoutingSettings(probe_timeout_ms=1930, failures_to_down=2, min_samples=10_000, hedging=False)
    result = simulate(late, settings)
    assert {(r.served_by, r.reason) for r in result.requests} == {("cloud", Reason.EDGE_DOWN)}


def test_without_hedging_the_slow_edge_answers_at_its_own_pace():
    settings = RoutingSettings(threshold_ms=200, hedging=False)
    result = simulate(workload(steps((5.0, 20), (1e9, 400)), steps((1e9, 60))), settings)
    slow = [r for r in result.requests if r.served_by == "edge" and r.latency_s > 0.1]
    assert slow and all(r.latency_s == pytest.approx(0.4) and not r.hedged for r in slow)
    assert result.summary.hedge_rate == 0.0 and result.transitions == 1


def test_a_hedge_the_edge_beats_is_served_by_the_edge():
    # Edge 230 ms, hedge at 200 ms, cloud 60 ms: the edge answers first (230 < 260).
    result = simulate(workload(steps((1e9, 230)), steps((1e9, 60))), RoutingSettings(threshold_ms=250,
                                                                                      hedge_after_ms=200))
    assert {(r.served_by, r.hedged) for r in result.requests} == {("edge", True)}
    assert result.summary.p99_ms == pytest.approx(230)


def test_overhead_is_added_and_the_statistic_can_be_kept_for_plots():
    result = simulate(workload(steps((1e9, 20)), steps((1e9, 60))), RoutingSettings(), overhead_ms=3,
                      keep_statistic=True)
    assert result.summary.p50_ms == pytest.approx(23)
    assert len(result.statistic) == 200 and result.statistic[0][1] is None  # too few samples at first
    assert result.statistic[-1][1] == pytest.approx(0.02)
