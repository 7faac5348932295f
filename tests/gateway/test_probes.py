"""Active probes on virtual time: RTTs recorded, backends marked down and back up, the warm-up
restarted on the way back, and edge probes driving routing's recovery."""

from __future__ import annotations

import asyncio

import pytest

from edgecloud.errors import NotFound, Unavailable
from gateway.config import RoutingSettings
from gateway.latency import LatencyMonitor
from gateway.probes import Prober
from gateway.routing import RouteState, RoutingPolicy
from tests.gateway.fakes import edge, worker
from tests.support.virtual_clock import VirtualClock


def make_prober(clock, backends, **routing):
    settings = RoutingSettings(**{"probe_interval_ms": 100, "probe_timeout_ms": 500, "warmup_samples": 0, **routing})
    monitor = LatencyMonitor(clock, window_s=settings.window_ms / 1000, warmup=settings.warmup_samples)
    policy = RoutingPolicy(settings, monitor.stats("edge"), clock)
    rounds = []
    prober = Prober(lambda: backends, monitor, policy, settings, clock=clock, sleep=clock.sleep,
                    on_round=lambda: rounds.append(clock.now()))
    return prober, monitor, policy, rounds


async def test_every_backend_is_probed_every_interval_and_a_slow_one_delays_no_other():
    clock = VirtualClock()
    fast, slow = edge(clock, latency_s=0.01), worker(clock, latency_s=0.35)
    prober, monitor, _, rounds = make_prober(clock, [fast, slow])
    task = asyncio.ensure_future(prober.run())
    await clock.advance(1.05)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert len(rounds) == 11 and fast.probes == 11
    assert slow.probes == 3  # one at a time: 0, 0.4, 0.8
    assert monitor.stats("edge").last_probe_s == pytest.approx(0.01)
    assert monitor.stats(slow.name).last_probe_s == pytest.approx(0.35)
    assert prober.request.model_name == "all-MiniLM-L6-v2" and prober.request.wire  # encoded once


async def test_a_backend_that_fails_probes_goes_down_and_comes_back_with_a_fresh_warm_up():
    clock = VirtualClock()
    w = worker(clock, error=Unavailable("a backend is unavailable"))
    prober, monitor, _, _ = make_prober(clock, [w], failures_to_down=2, warmup_samples=1)
    w.failures_to_down = 2
    assert await clock.run(prober.probe(w)) is None and w.up
    assert await clock.run(prober.probe(w)) is None and not w.up
    w.error = None
    assert await clock.run(prober.probe(w)) == pytest.approx(0.01) and w.up
    assert monitor.stats(w.name).count == 0  # the first answer after coming back is warm-up
    await clock.run(prober.probe(w))
    assert monitor.stats(w.name).count == 1


async def test_a_probe_answered_with_a_request_error_means_the_backend_is_up():
    clock = VirtualClock()
    w = worker(clock, error=NotFound("unknown model 'all-MiniLM-L6-v2'"))
    w.up = False
    prober, monitor, _, _ = make_prober(clock, [w])
    assert await clock.run(prober.probe(w)) == pytest.approx(0.01) and w.up


async def test_edge_probes_bring_routing_back_after_enough_fast_ones():
    clock = VirtualClock()
    e = edge(clock, latency_s=0.5)
    prober, monitor, policy, _ = make_prober(clock, [e], threshold_ms=200, recover_probes=3)
    for _ in range(5):
        await clock.run(prober.probe(e))
    assert policy.state is RouteState.CLOUD_FALLBACK
    e.latency_s = 0.05
    for _ in range(2):
        await clock.run(prober.probe(e))
    assert policy.state is RouteState.CLOUD_FALLBACK
    await clock.run(prober.probe(e))
    assert policy.state is RouteState.EDGE_PREFERRED


async def run_rounds(clock, prober, seconds: float, between=None) -> None:
    """Run the prober for ``seconds`` of virtual time; ``between(t)`` runs every 50 ms (traffic)."""
    task = asyncio.ensure_future(prober.run())
    try:
        for step in range(round(seconds / 0.05)):
            if between is not None:
                between(step * 0.05)
            await clock.advance(0.05)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_backend_that_traffic_keeps_answering_is_not_probed_until_the_traffic_stops():
    clock = VirtualClock()
    e, w = edge(clock), worker(clock)
    prober, _, _, rounds = make_prober(clock, [e, w])

    def traffic(t: float) -> None:
        if t < 0.5:  # the worker answers a real request every 50 ms for half a second
            w.answered_at = clock.now()

    await run_rounds(clock, prober, 1.0, traffic)
    assert len(rounds) == 10 and e.probes == 10
    assert 4 <= w.probes <= 6  # only once its traffic stopped (a round at 0 came before any traffic)
    assert w.probes < e.probes


async def test_the_edge_is_probed_while_routing_prefers_the_cloud_and_down_backends_always():
    clock = VirtualClock()
    e, w = edge(clock), worker(clock)
    w.up = False  # the fake answers probes: it comes back up at its first
    prober, _, policy, _ = make_prober(clock, [e, w], recover_probes=3)
    policy.state = RouteState.CLOUD_FALLBACK

    def traffic(t: float) -> None:
        e.answered_at = clock.now()  # hedges that the edge answered
        w.answered_at = clock.now()

    await run_rounds(clock, prober, 1.0, traffic)
    # Probed despite its answers until its probes brought routing back; then its traffic measures it.
    assert e.probes == 3 and policy.state is RouteState.EDGE_PREFERRED
    assert w.probes == 1 and w.up  # probed while down; once up, its traffic measures it


async def test_probes_can_be_kept_under_traffic():
    clock = VirtualClock()
    w = worker(clock)
    prober, _, _, _ = make_prober(clock, [w], probe_only_when_idle=False)
    await run_rounds(clock, prober, 1.0, lambda t: setattr(w, "answered_at", clock.now()))
    assert w.probes == 10
