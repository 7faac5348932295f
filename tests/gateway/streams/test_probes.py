"""TTFT probes bring streams back to the edge, on a fake edge and virtual time."""

from __future__ import annotations

import asyncio

from gateway.config import RoutingSettings
from gateway.latency import LatencyMonitor
from gateway.routing import RouteState, RoutingPolicy
from gateway.streams.probes import StreamProber
from tests.gateway.streams.fake_streams import FakeStreamBackend
from tests.support.virtual_clock import VirtualClock


def _setup(first_s: float):
    clock = VirtualClock()
    settings = RoutingSettings(warmup_samples=0, probe_interval_ms=100, recover_probes=3)
    ttft = LatencyMonitor(clock)
    policy = RoutingPolicy(settings, ttft.stats("edge"), clock)
    edge = FakeStreamBackend.edge(clock, first_s=first_s)
    prober = StreamProber(lambda: edge, policy, settings, clock=clock, sleep=clock.sleep, monitor=ttft)
    return clock, policy, edge, prober, ttft


async def _run_for(clock, prober, seconds: float) -> None:
    task = asyncio.ensure_future(prober.run())
    await clock.advance(seconds)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_fast_first_tokens_bring_streams_back_to_the_edge():
    clock, policy, edge, prober, ttft = _setup(first_s=0.02)
    policy.fall_back("test")
    prober.saw("gen", "1")
    await _run_for(clock, prober, 1.0)
    assert policy.state is RouteState.EDGE_PREFERRED
    request = edge.requests[0]
    assert request.sampling.max_tokens == 1 and request.sampling.greedy
    assert ttft.stats("edge").last_probe_s is not None  # recorded for `edgecloud tune --kind ttft`


async def test_slow_first_tokens_keep_streams_on_the_cloud():
    clock, policy, edge, prober, _ = _setup(first_s=0.5)  # over threshold * recover_ratio (140 ms)
    policy.fall_back("test")
    prober.saw("gen", "1")
    await _run_for(clock, prober, 3.0)
    assert policy.state is RouteState.CLOUD_FALLBACK and edge.calls >= 3


async def test_nothing_is_probed_before_a_stream_or_while_streams_prefer_the_edge():
    clock, policy, edge, prober, _ = _setup(first_s=0.02)
    policy.fall_back("test")
    await _run_for(clock, prober, 1.0)  # no model seen yet
    assert edge.calls == 0
    clock, policy, edge, prober, _ = _setup(first_s=0.02)
    prober.saw("gen", "1")
    await _run_for(clock, prober, 1.0)  # edge preferred: real streams are the samples
    assert edge.calls == 0
