"""What every benchmark shares: latency summaries, a printed table, a JSON result file.

Contract: ``summarize(samples_s)`` gives median/p99/mean in milliseconds; ``print_table`` prints
rows of dicts as an aligned table; ``write_result(name, payload)`` writes
``bench/results/{name}.json`` with the machine's facts and returns the path; ``paired_ratios``
compares two servers rep by rep (``spread`` prints its range) and ``alternating`` orders a rep's
windows (for noisy machines).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def summarize(samples_s: Sequence[float]) -> dict[str, float]:
    """Latency samples in seconds -> {"n", "p50_ms", "p99_ms", "mean_ms", "max_ms"}."""
    arr = np.asarray(samples_s, dtype=np.float64) * 1000.0
    if arr.size == 0:
        return {"n": 0, "p50_ms": float("nan"), "p99_ms": float("nan"), "mean_ms": float("nan"), "max_ms": float("nan")}
    return {
        "n": int(arr.size),
        "p50_ms": float(np.percentile(arr, 50)),
        "p99_ms": float(np.percentile(arr, 99)),
        "mean_ms": float(arr.mean()),
        "max_ms": float(arr.max()),
    }


def time_calls(fn, *, iterations: int, warmup: int = 3) -> list[float]:
    """Call ``fn()`` ``warmup`` times untimed, then ``iterations`` times; per-call seconds."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(iterations):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return samples


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"
    return str(value)


def print_table(rows: Sequence[dict[str, Any]], title: str | None = None) -> None:
    if not rows:
        return
    columns: list[str] = []
    for row in rows:
        for key in row:
            if key not in columns:
                columns.append(key)
    cells = [[_fmt(row.get(col, "")) for col in columns] for row in rows]
    widths = [max(len(col), *(len(r[i]) for r in cells)) for i, col in enumerate(columns)]
    if title:
        print(f"\n{title}")
    print("  ".join(col.ljust(w) for col, w in zip(columns, widths)))
    print("  ".join("-" * w for w in widths))
    for r in cells:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)))


def machine_facts() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "median_of": "per-request latencies",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def write_result(name: str, payload: dict[str, Any], results_dir: Path = RESULTS_DIR) -> Path:
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{name}.json"
    path.write_text(json.dumps({"benchmark": name, "machine": machine_facts(), **payload}, indent=2) + "\n")
    return path


def stop_all(services: Sequence[Any]) -> None:
    """Stop started services, last first; one that fails to stop does not keep the rest running."""
    for service in reversed(services):
        try:
            service.stop()
        except Exception:  # noqa: BLE001 - stop the rest regardless
            pass


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def ratio(a: float, b: float) -> float:
    return float(a / b) if b else float("nan")


def paired_ratios(mine: Sequence[float], base: Sequence[float]) -> dict[str, float]:
    """``mine[i] / base[i]`` for each rep ``i`` (both measured in the same rep, back to back):
    their median, min and max. On a shared machine whose speed drifts between reps (seen here:
    one rep 30% slower than the next for every server), the ratio within a rep is what the drift
    leaves alone; the spread says how far one rep's ratio can be trusted."""
    if len(mine) != len(base) or not mine:
        raise ValueError(f"paired_ratios needs reps of equal, non-zero count, got {len(mine)} and {len(base)}")
    values = [ratio(a, b) for a, b in zip(mine, base)]
    return {"median": float(statistics.median(values)), "min": min(values), "max": max(values)}


def spread(ratios: dict[str, float]) -> str:
    """``paired_ratios``' range as printed beside its median: ``"min-max"``."""
    return f"{ratios['min']:.2f}-{ratios['max']:.2f}"


def alternating(items: Sequence[Any], rep: int) -> list[Any]:
    """``items`` in order on even reps and reversed on odd ones, so no item always runs first
    (right after the warm-up) or always follows the same neighbour."""
    return list(items) if rep % 2 == 0 else list(reversed(items))


__all__ = ["summarize", "time_calls", "print_table", "write_result", "machine_facts", "ratio", "paired_ratios",
           "spread", "alternating", "stop_all"]
