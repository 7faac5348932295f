"""What the simulator replays, derived from a trace: when requests arrived, and how long an
attempt on each backend took at any moment.

Contract: ``Workload.from_trace(trace)`` returns
- ``edge`` and ``cloud``: ``LatencySeries`` giving the RTT of an attempt *started* at time ``t``
  as the nearest uncensored sample by start time (probes and real requests alike);
- ``arrivals``: the start times of the trace's real requests (one per request: a hedged request's
  cloud attempt is not a second request), or, with ``rate``, evenly spaced arrivals at that rate.

A cancelled edge attempt (one that lost a hedge) is only a lower bound on the edge's RTT, so it is
left out of the edge series. The gateway's trace does not mark those samples (unless a sample
says ``censored``), so they are recognised by their shape: a passive edge sample recorded within
``pair_tolerance_s`` after a passive cloud sample whose attempt started after the edge attempt
did — the hedge that beat it. Each cloud sample explains at most one edge sample.
"""

from __future__ import annotations

import bisect
import dataclasses
from dataclasses import dataclass
from itertools import pairwise

from gateway.tuning.trace import Trace, TraceError, TraceSample

__all__ = ["LatencySeries", "Workload", "find_hedge_pairs", "probe_interval_ms"]


@dataclass(frozen=True)
class LatencySeries:
    """RTTs by attempt start time; ``at(t)`` is the sample whose start is nearest ``t``."""

    starts: tuple[float, ...]
    rtts_s: tuple[float, ...]

    @classmethod
    def of(cls, samples: list[TraceSample]) -> LatencySeries:
        ordered = sorted(samples, key=lambda s: (s.started, s.t))
        return cls(tuple(s.started for s in ordered), tuple(s.rtt_s for s in ordered))

    def __len__(self) -> int:
        return len(self.starts)

    def scaled(self, factor: float) -> LatencySeries:
        """The same samples, every RTT multiplied by ``factor``."""
        return LatencySeries(self.starts, tuple(r * factor for r in self.rtts_s))

    def at(self, t: float) -> float:
        """The RTT of an attempt started at ``t`` (ties go to the earlier sample)."""
        if not self.starts:
            raise TraceError("no samples to take an RTT from")
        i = bisect.bisect_left(self.starts, t)
        if i == 0:
            return self.rtts_s[0]
        if i == len(self.starts):
            return self.rtts_s[-1]
        before, after = self.starts[i - 1], self.starts[i]
        return self.rtts_s[i - 1] if t - before <= after - t else self.rtts_s[i]


def find_hedge_pairs(samples: tuple[TraceSample, ...], pair_tolerance_s: float) -> dict[int, int]:
    """``{edge sample index: cloud sample index}`` for edge attempts cancelled by a winning hedge.

    Samples the gateway marked ``censored`` are paired with the cloud sample just before them when
    there is one (else with -1); samples it marked uncensored are never paired.
    """
    pairs: dict[int, int] = {}
    used: set[int] = set()
    clouds = [i for i, s in enumerate(samples) if s.backend == "cloud" and not s.probe]
    cloud_ts = [samples[i].t for i in clouds]
    for i, edge in enumerate(samples):
        if edge.backend != "edge" or edge.probe or edge.censored is False:
            continue
        # the latest unused cloud sample recorded at most pair_tolerance_s before this edge sample,
        # whose attempt began after this edge attempt did
        j = bisect.bisect_right(cloud_ts, edge.t) - 1
        match = -1
        while j >= 0 and edge.t - cloud_ts[j] <= pair_tolerance_s:
            cloud = samples[clouds[j]]
            if clouds[j] not in used and cloud.started >= edge.started:
                match = clouds[j]
                break
            j -= 1
        if match >= 0:
            used.add(match)
            pairs[i] = match
        elif edge.censored:
            pairs[i] = -1
    return pairs


@dataclass(frozen=True)
class Workload:
    """Arrivals and per-backend RTTs over ``[start, end]`` (gateway clock)."""

    start: float
    end: float
    arrivals: tuple[float, ...]
    edge: LatencySeries
    cloud: LatencySeries
    censored: int
    """Edge samples left out as cancelled hedge losers."""

    @classmethod
    def from_trace(cls, trace: Trace, *, rate: float | None = None, pair_tolerance_s: float = 0.025) -> Workload:
        """The workload of ``trace``; ``rate`` (requests/s) replaces the recorded arrivals."""
        pairs = find_hedge_pairs(trace.samples, pair_tolerance_s)
        partners = set(pairs.values())
        edge = [s for i, s in enumerate(trace.samples) if s.backend == "edge" and i not in pairs]
        cloud = trace.of("cloud")
        if not edge:
            raise TraceError("samples: the trace has no usable edge samples (was an edge agent configured?)")
        if not cloud:
            raise TraceError("samples: the trace has no cloud samples (was a cloud worker configured?)")
        if rate is not None:
            if rate <= 0:
                raise ValueError("rate must be positive")
            count = int(trace.duration_s * rate)
            arrivals = tuple(trace.start + (k + 0.5) / rate for k in range(count))
        else:
            starts = [s.started for i, s in enumerate(trace.samples)
                      if not s.probe and i not in partners]
            arrivals = tuple(sorted(t for t in starts if trace.start <= t <= trace.end))
        return cls(trace.start, trace.end, arrivals, LatencySeries.of(edge), LatencySeries.of(cloud), len(pairs))

    def with_edge_scaled(self, factor: float) -> Workload:
        """This workload with every edge RTT multiplied by ``factor`` (a what-if for robustness)."""
        return dataclasses.replace(self, edge=self.edge.scaled(factor))

    @property
    def duration_s(self) -> float:
        return self.end - self.start

    @property
    def rate(self) -> float:
        """Mean arrival rate, requests per second."""
        return len(self.arrivals) / self.duration_s if self.duration_s > 0 else 0.0


def probe_interval_ms(trace: Trace) -> float | None:
    """The gateway's probe interval as the trace shows it: the lower quartile of the spacing of the
    edge probes' start times (a probe still in flight skips a tick, doubling some gaps), to the
    millisecond; None with fewer than five probes."""
    starts = sorted(s.started for s in trace.of("edge", probe=True))
    if len(starts) < 5:
        return None
    gaps = sorted(b - a for a, b in pairwise(starts))
    return float(round(gaps[len(gaps) // 4] * 1000.0))
