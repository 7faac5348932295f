"""Synthetic traces and workloads with known latencies, for the tuning unit tests."""

from __future__ import annotations

from collections.abc import Callable

from gateway.tuning.trace import Trace, TraceSample
from gateway.tuning.workload import LatencySeries, Workload

Profile = Callable[[float], float]
"""Seconds since the start -> RTT in milliseconds."""


def steps(*phases: tuple[float, float]) -> Profile:
    """``(until_s, rtt_ms)`` phases: the RTT is ``rtt_ms`` until ``until_s`` (the last one holds after)."""
    def rtt(t: float) -> float:
        for until, value in phases:
            if t < until:
                return value
        return phases[-1][1]
    return rtt


def workload(edge: Profile, cloud: Profile, *, duration_s: float = 10.0, every_s: float = 0.05,
             start: float = 1000.0, grid_s: float = 0.01) -> Workload:
    """Arrivals every ``every_s``; RTTs known on a ``grid_s`` grid of attempt start times."""
    points = [k * grid_s for k in range(int(duration_s / grid_s) + 1)]
    series = [LatencySeries(tuple(start + p for p in points), tuple(f(p) / 1000.0 for p in points))
              for f in (edge, cloud)]
    arrivals = tuple(start + k * every_s for k in range(round(duration_s / every_s)))
    return Workload(start, start + duration_s, arrivals, series[0], series[1], 0)


def trace(edge: Profile, cloud: Profile, *, duration_s: float = 10.0, every_s: float = 0.05,
          probe_every_s: float = 0.2, start: float = 1000.0) -> Trace:
    """What a gateway that sent every request to the edge would record, plus probes of both backends."""
    samples = []
    for k in range(round(duration_s / every_s)):
        t = k * every_s
        samples.append(TraceSample(start + t + edge(t) / 1000, "edge", edge(t) / 1000, False))
    for k in range(round(duration_s / probe_every_s)):
        t = k * probe_every_s
        samples.append(TraceSample(start + t + edge(t) / 1000, "edge", edge(t) / 1000, True))
        samples.append(TraceSample(start + t + cloud(t) / 1000, "cloud", cloud(t) / 1000, True))
    return Trace.build(samples, start=start, end=start + duration_s, source="synthetic", recorded_threshold_ms=200)
