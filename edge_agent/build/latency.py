"""Side-by-side latency measurement: candidates are called in turn, so machine noise (other
processes on a shared box) lands on all of them alike.

Contract: ``interleaved(fns, iterations)`` warms each callable up, then runs ``iterations``
rounds (fewer if ``budget_s`` runs out) calling every callable once per round (order rotated
each round), and returns per-call seconds per name. ``summary(samples)`` gives p50/p99/mean
in milliseconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np


def interleaved(fns: Mapping[str, Callable[[], object]], iterations: int,
                warmup: int = 3, budget_s: float | None = None) -> dict[str, list[float]]:
    """Per-call seconds per name; stops after fewer rounds once ``budget_s`` has passed."""
    names = list(fns)
    deadline = None if budget_s is None else time.perf_counter() + budget_s
    for name in names:
        for _ in range(warmup):
            fns[name]()
    samples: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(iterations):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            fns[name]()
            samples[name].append(time.perf_counter() - start)
        if deadline is not None and time.perf_counter() > deadline:
            break
    return samples


def summary(samples: Sequence[float]) -> dict[str, float]:
    ms = np.asarray(samples, dtype=np.float64) * 1000.0
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
            "mean_ms": float(ms.mean()), "n": int(ms.size)}
