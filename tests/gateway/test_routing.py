"""Routing policy, latency monitor, retry budget and outlier ejection on a fake clock."""

from __future__ import annotations

import pytest

from edgecloud.clock import FakeClock
from gateway.config import OutlierDetectionSettings, RoutingSettings
from gateway.latency import LatencyStats
from gateway.outlier import OutlierDetector
from gateway.retry_budget import RetryBudget
from gateway.routing import Reason, Route, RouteState, RoutingPolicy


def make_policy(**overrides) -> tuple[RoutingPolicy, LatencyStats, FakeClock]:
    clock = FakeClock()
    settings = RoutingSettings(**overrides)
    stats = LatencyStats(clock, window_s=settings.window_ms / 1000, ewma_alpha=settings.ewma_alpha)
    return RoutingPolicy(settings, stats, clock), stats, clock


def feed(policy, stats, clock, rtt_ms: float, n: int, every_s: float = 0.05, probe: bool = False):
    for _ in range(n):
        clock.advance(every_s)
        stats.record(rtt_ms / 1000, probe=probe)
        if probe:
            policy.observe_probe(rtt_ms / 1000)
        else:
            policy.observe_edge()


def test_prefers_the_edge_while_it_is_fast():
    policy, stats, clock = make_policy()
    feed(policy, stats, clock, 20, 50)
    decision = policy.decide(edge_up=True, cloud_up=True)
    assert decision.route is Route.EDGE and decision.reason == Reason.EDGE_FAST and decision.hedge


def test_moves_to_cloud_when_p95_exceeds_threshold():
    policy, stats, clock = make_policy(threshold_ms=200, min_samples=3)
    feed(policy, stats, clock, 20, 20)
    feed(policy, stats, clock, 300, 1)
    assert policy.state is RouteState.EDGE_PREFERRED  # 1 slow of 21: p95 still fast
    feed(policy, stats, clock, 300, 1)
    assert policy.state is RouteState.CLOUD_FALLBACK
    decision = policy.decide(edge_up=True, cloud_up=True)
    assert decision.route is Route.CLOUD and decision.reason == Reason.EDGE_SLOW


def test_a_single_outlier_does_not_switch_with_enough_fast_samples():
    policy, stats, clock = make_policy(threshold_ms=200, statistic="p95")
    feed(policy, stats, clock, 20, 39)
    feed(policy, stats, clock, 900, 1)
    assert policy.state is RouteState.EDGE_PREFERRED


def test_hysteresis_needs_consecutive_good_probes_under_the_recover_ratio():
    policy, stats, clock = make_policy(threshold_ms=200, recover_ratio=0.7, recover_probes=5)
    feed(policy, stats, clock, 300, 5)
    assert policy.state is RouteState.CLOUD_FALLBACK
    feed(policy, stats, clock, 150, 10, probe=True)  # under threshold but above 140 ms: not enough
    assert policy.state is RouteState.CLOUD_FALLBACK
    feed(policy, stats, clock, 100, 4, probe=True)
    feed(policy, stats, clock, 190, 1, probe=True)  # one bad probe resets the count
    feed(policy, stats, clock, 100, 4, probe=True)
    assert policy.state is RouteState.CLOUD_FALLBACK
    feed(policy, stats, clock, 100, 1, probe=True)
    assert policy.state is RouteState.EDGE_PREFERRED
    assert policy.transitions == 2


def test_no_flapping_right_after_recovery():
    """Samples from before the switch back must not send traffic away again."""
    policy, stats, clock = make_policy(threshold_ms=200, window_ms=10_000, recover_probes=3)
    feed(policy, stats, clock, 300, 10)
    feed(policy, stats, clock, 50, 3, probe=True)
    assert policy.state is RouteState.EDGE_PREFERRED
    feed(policy, stats, clock, 50, 3)
    assert policy.state is RouteState.EDGE_PREFERRED and policy.transitions == 2


def test_failed_probe_resets_recovery():
    policy, stats, clock = make_policy(recover_probes=2)
    feed(policy, stats, clock, 300, 5)
    policy.observe_probe(0.01)
    policy.observe_probe(None)
    policy.observe_probe(0.01)
    assert policy.state is RouteState.CLOUD_FALLBACK
    policy.observe_probe(0.01)
    assert policy.state is RouteState.EDGE_PREFERRED


@pytest.mark.parametrize(
    "slow, edge_up, cloud_up, route, reason",
    [
        (False, False, True, Route.CLOUD, Reason.EDGE_DOWN),
        (True, True, False, Route.EDGE, Reason.CLOUD_DOWN),
        (False, False, False, Route.NONE, Reason.NO_BACKEND),
        (True, False, False, Route.NONE, Reason.NO_BACKEND),
    ],
)
def test_availability_overrides(slow, edge_up, cloud_up, route, reason):
    policy, stats, clock = make_policy()
    if slow:
        feed(policy, stats, clock, 500, 5)
    decision = policy.decide(edge_up=edge_up, cloud_up=cloud_up)
    assert (decision.route, decision.reason) == (route, reason)


def test_ewma_statistic_and_window_expiry():
    policy, stats, clock = make_policy(statistic="ewma", ewma_alpha=0.5, min_samples=1, window_ms=1000)
    stats.record(0.1)
    stats.record(0.3)
    assert stats.statistic("ewma") == pytest.approx(0.2)
    clock.advance(2.0)
    assert stats.statistic("p95") is None and stats.samples_in_window() == 0


def test_nearest_rank_quantiles():
    clock = FakeClock()
    stats = LatencyStats(clock, window_s=10)
    for value in range(1, 101):
        stats.record(value / 1000)
    assert stats.quantile(0.95) == pytest.approx(0.095)
    assert stats.quantile(0.5) == pytest.approx(0.050)
    assert stats.statistic("max") == pytest.approx(0.100)


def test_retry_budget_caps_extra_attempts_at_the_ratio():
    budget = RetryBudget(ratio=0.2, burst=5)
    allowed = 0
    for _ in range(1000):
        budget.on_request()
        if budget.try_spend():
            allowed += 1
    assert 195 <= allowed <= 205  # 20% of 1000, plus at most the burst
    assert budget.refused > 0


def test_retry_budget_burst():
    budget = RetryBudget(ratio=0.2, burst=3)
    assert [budget.try_spend() for _ in range(4)] == [True, True, True, False]


def test_outlier_ejection_envoy_semantics():
    clock = FakeClock()
    detector = OutlierDetector(OutlierDetectionSettings(consecutive_5xx=3, base_ejection_time_ms=1000,
                                                        max_ejection_time_ms=2500, max_ejection_percent=50,
                                                        interval_ms=10_000), clock)
    detector.set_hosts(["a", "b", "c", "d"])
    assert not detector.on_failure("a") and not detector.on_failure("a")
    assert detector.on_failure("a") and detector.is_ejected("a")
    clock.advance(1.01)
    assert not detector.is_ejected("a")  # base_ejection_time x 1
    for _ in range(3):
        detector.on_failure("a")
    clock.advance(1.5)
    assert detector.is_ejected("a")  # second ejection lasts 2 s
    clock.advance(0.6)
    assert not detector.is_ejected("a")
    for _ in range(3):
        detector.on_failure("a")
    clock.advance(2.49)
    assert detector.is_ejected("a")  # capped at 2.5 s, not 3 s
    clock.advance(0.02)
    assert not detector.is_ejected("a")


def test_max_ejection_percent_and_success_reset():
    clock = FakeClock()
    detector = OutlierDetector(OutlierDetectionSettings(consecutive_5xx=2, max_ejection_percent=50), clock)
    detector.set_hosts(["a", "b", "c", "d"])
    for host in "abc":
        detector.on_failure(host)
        detector.on_failure(host)
    assert detector.ejected_count() == 2  # 50% of 4
    detector.on_failure("d")
    detector.on_success("d")
    assert not detector.on_failure("d")


def test_ejection_multiplier_decays_after_healthy_interval():
    clock = FakeClock()
    detector = OutlierDetector(OutlierDetectionSettings(consecutive_5xx=1, base_ejection_time_ms=1000,
                                                        interval_ms=5000), clock)
    detector.set_hosts(["a", "b"])
    detector.on_failure("a")
    clock.advance(1.01)
    assert not detector.is_ejected("a")
    clock.advance(5.0)
    detector.is_ejected("a")  # healthy for an interval: multiplier back to 0
    detector.on_failure("a")
    clock.advance(1.01)
    assert not detector.is_ejected("a")  # ejected for 1 s again, not 2 s


def test_a_single_slow_sample_in_a_small_window_never_moves_traffic():
    policy, stats, clock = make_policy(threshold_ms=200, min_samples=3, min_slow_samples=2)
    feed(policy, stats, clock, 20, 2)
    feed(policy, stats, clock, 900, 1)  # p95 of 3 samples is this one sample
    assert policy.edge_statistic() > 0.2 and policy.state is RouteState.EDGE_PREFERRED
    feed(policy, stats, clock, 900, 1)
    assert policy.state is RouteState.CLOUD_FALLBACK


def test_a_cold_edge_is_not_judged_by_its_warm_up_samples():
    """The first probes of a freshly started edge (connection set-up, cold caches) are discarded."""
    clock = FakeClock()
    settings = RoutingSettings(threshold_ms=200, min_samples=3, warmup_samples=2)
    stats = LatencyStats(clock, window_s=2.0, warmup=settings.warmup_samples)
    policy = RoutingPolicy(settings, stats, clock)
    for rtt_ms in (831, 640, 12, 11, 13):  # as seen right after `make up`
        clock.advance(0.2)
        stats.record(rtt_ms / 1000, probe=True)
        policy.observe_probe(rtt_ms / 1000)
    assert policy.state is RouteState.EDGE_PREFERRED and stats.count == 3
    stats.restart_warmup()  # the edge reconnected: its next samples are discarded again
    assert not stats.record(0.9) and not stats.record(0.9) and stats.record(0.01)


def test_the_cloud_statistic_is_only_consulted_in_fallback_and_at_most_every_reevaluation():
    asked = []

    def cloud():
        asked.append(1)
        return 0.5

    clock = FakeClock()
    settings = RoutingSettings(threshold_ms=200)
    stats = LatencyStats(clock, window_s=2.0)
    policy = RoutingPolicy(settings, stats, clock, cloud_statistic=cloud)
    for _ in range(10):
        policy.decide(edge_up=True, cloud_up=True)
    assert not asked
    feed(policy, stats, clock, 300, 5)
    for _ in range(10):
        decision = policy.decide(edge_up=True, cloud_up=True)
    assert len(asked) == 1 and decision.route is Route.EDGE and decision.reason == Reason.CLOUD_SLOWER
    clock.advance(0.06)
    policy.decide(edge_up=True, cloud_up=True)
    assert len(asked) == 2


def test_a_lowered_threshold_counts_the_samples_already_in_the_window():
    policy, stats, clock = make_policy(threshold_ms=200, min_samples=3)
    feed(policy, stats, clock, 120, 10)
    assert policy.state is RouteState.EDGE_PREFERRED and stats.over_watched() == 0
    policy.update_settings(RoutingSettings(threshold_ms=100, min_samples=3))
    assert stats.over_watched() == 10  # recounted against the new threshold, not only new samples
    clock.advance(0.1)
    policy.observe_edge()
    assert policy.state is RouteState.CLOUD_FALLBACK


def test_a_window_with_fewer_slow_samples_than_needed_is_not_evaluated():
    policy, stats, clock = make_policy(threshold_ms=200, min_samples=3, min_slow_samples=2, statistic="p50")
    feed(policy, stats, clock, 20, 3)
    feed(policy, stats, clock, 900, 1)  # one slow sample: the p50 is fast anyway, but no pass is made
    calls = []
    policy.edge_statistic = lambda: calls.append(1)  # type: ignore[method-assign]
    clock.advance(0.1)
    policy.observe_edge(0.9)
    assert calls == [] and policy.state is RouteState.EDGE_PREFERRED
