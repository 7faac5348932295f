"""What the hostile corpus saw, gathered while it runs and printed at the end of the session.

Contract: the corpus test appends one ``Outcome`` per request to ``OUTCOMES`` (before asserting, so
failures and xfails are counted too) and puts memory readings in ``MEMORY``; ``render()`` turns
them into the summary table (requests, share with the right status, crashes, leaks, answer-time
percentiles per target) and ``as_dict()`` into the same numbers as JSON.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class Outcome:
    target: str
    case: str
    expected: str
    got: str
    right_status: bool
    field_named: bool
    elapsed_s: float
    crash: bool
    """5xx / INTERNAL / UNKNOWN, or a server logged an unexpected exception for it."""
    leaks: list[str]
    still_serving: bool
    known_bug: bool


OUTCOMES: list[Outcome] = []
MEMORY: dict[str, dict[str, int]] = {}
"""process -> {"rss_before", "rss_after", "hwm_before", "hwm_after"} in bytes."""


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def as_dict() -> dict[str, Any]:
    by_target: dict[str, list[Outcome]] = defaultdict(list)
    for outcome in OUTCOMES:
        by_target[outcome.target].append(outcome)

    def stats(rows: list[Outcome]) -> dict[str, Any]:
        times = [row.elapsed_s for row in rows]
        return {
            "requests": len(rows),
            "right_status_pct": round(100.0 * sum(r.right_status for r in rows) / max(1, len(rows)), 1),
            "field_named_pct": round(100.0 * sum(r.field_named for r in rows) / max(1, len(rows)), 1),
            "crashes": sum(r.crash for r in rows),
            "leaks": sum(bool(r.leaks) for r in rows),
            "not_serving_after": sum(not r.still_serving for r in rows),
            "known_bugs": sum(r.known_bug for r in rows),
            "p50_ms": round(1000 * _quantile(times, 0.50), 2),
            "p99_ms": round(1000 * _quantile(times, 0.99), 2),
            "max_ms": round(1000 * max(times, default=0.0), 2),
        }

    return {
        "total": stats(OUTCOMES),
        "targets": {name: stats(rows) for name, rows in sorted(by_target.items())},
        "memory": MEMORY,
        "wrong": [asdict(o) for o in OUTCOMES if not (o.right_status and o.field_named) or o.crash or o.leaks],
        "slowest": [{"target": o.target, "case": o.case, "ms": round(1000 * o.elapsed_s, 1)}
                    for o in sorted(OUTCOMES, key=lambda o: o.elapsed_s, reverse=True)[:8]],
    }


def render() -> list[str]:
    if not OUTCOMES:
        return []
    data = as_dict()
    lines = [f"{'target':<14} {'requests':>8} {'status ok':>9} {'field':>6} {'crashes':>7} {'leaks':>5} "
             f"{'known bugs':>10} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7}"]
    for name, row in [*data["targets"].items(), ("TOTAL", data["total"])]:
        lines.append(f"{name:<14} {row['requests']:>8} {row['right_status_pct']:>8.1f}% "
                     f"{row['field_named_pct']:>5.1f}% {row['crashes']:>7} {row['leaks']:>5} {row['known_bugs']:>10} "
                     f"{row['p50_ms']:>7.1f} {row['p99_ms']:>7.1f} {row['max_ms']:>7.1f}")
    for process, reading in sorted(MEMORY.items()):
        if {"rss_before", "rss_after"} <= reading.keys():
            lines.append(f"memory {process}: RSS {reading['rss_before'] / 2**20:.0f} -> "
                         f"{reading['rss_after'] / 2**20:.0f} MiB, peak {reading['hwm_before'] / 2**20:.0f} -> "
                         f"{reading['hwm_after'] / 2**20:.0f} MiB")
    lines.append("slowest: " + "; ".join(f"{row['target']} {row['case']} {row['ms']} ms" for row in data["slowest"]))
    for row in data["wrong"]:
        lines.append(f"  {'known bug' if row['known_bug'] else 'WRONG':<9} {row['target']:<13} {row['case']}: "
                     f"expected {row['expected']}, got {row['got']}"
                     + (f"; leaks {row['leaks']}" if row["leaks"] else "") + ("; crash" if row["crash"] else ""))
    return lines
