"""The figures a run is judged by, computed the same way for a simulation and a live run.

Contract: ``Summary.of(outcomes, transitions=...)`` takes ``(latency_s, served_by, hedged)`` per
request and returns the request count, the share served by the edge (``served_by == "edge"``; a
hedge the cloud won counts as cloud), the hedge rate, the route transitions, and latency quantiles
in milliseconds by nearest rank (the smallest value with at least ``q`` of the requests at or
below it — the rule ``LatencyStats`` uses). ``metric(name)`` reads one figure by its goal name.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = ["LATENCY_METRICS", "METRICS", "Summary", "quantile"]

LATENCY_METRICS = {"p50": 0.50, "p90": 0.90, "p95": 0.95, "p99": 0.99, "p999": 0.999, "max": 1.0}
"""Latency metrics (milliseconds) a goal can name, with their quantile; ``mean`` too."""
METRICS = (*LATENCY_METRICS, "mean", "edge_share", "hedge_rate")


def quantile(values: Sequence[float], q: float) -> float:
    """Nearest-rank quantile of ``values`` (NaN when empty)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


@dataclass(frozen=True)
class Summary:
    requests: int
    edge_share: float
    """Share of requests the edge answered (0..1)."""
    hedge_rate: float
    """Share of requests that were also sent to the cloud after ``hedge_after`` (0..1)."""
    transitions: int
    """Route state changes (edge_preferred <-> cloud_fallback) over the run."""
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    mean_ms: float

    @classmethod
    def of(cls, outcomes: Iterable[tuple[float, str, bool]], *, transitions: int = 0) -> Summary:
        rows = list(outcomes)
        latencies = [latency * 1000.0 for latency, _, _ in rows]
        n = len(rows)
        edge = sum(1 for _, served_by, _ in rows if served_by == "edge")
        hedged = sum(1 for _, _, was_hedged in rows if was_hedged)
        q = {name: quantile(latencies, level) for name, level in LATENCY_METRICS.items()}
        return cls(n, edge / n if n else math.nan, hedged / n if n else math.nan, transitions,
                   q["p50"], q["p90"], q["p95"], q["p99"], q["p999"], q["max"],
                   sum(latencies) / n if n else math.nan)

    def metric(self, name: str) -> float:
        """A figure by goal name: ``p50``..``p999``, ``max``, ``mean`` (ms), ``edge_share``, ``hedge_rate``."""
        if name in LATENCY_METRICS or name == "mean":
            return getattr(self, f"{name}_ms")
        if name in ("edge_share", "hedge_rate"):
            return getattr(self, name)
        raise KeyError(f"unknown metric {name!r}; known: {', '.join(METRICS)}")
