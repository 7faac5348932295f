"""The quality, size and speed targets an INT8 build is held to (from the edge-model issue).

Contract: ``Targets`` holds the thresholds; ``accuracy_met(metrics)`` checks a metrics dict from
``metrics.agreement``; ``Targets.with_margin()`` is the stricter set the greedy search uses on
its small calibration set, so that the choice still holds on the full corpus.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Targets:
    cosine_mean: float = 0.995
    """Mean cosine of INT8 vs torch FP32 sentence embeddings, at least."""
    cosine_min: float = 0.98
    """Worst single sentence's cosine, at least."""
    spearman: float = 0.99
    """Spearman correlation of all pairwise similarities, at least."""
    size_ratio: float = 0.35
    """INT8 file bytes / FP32 file bytes, at most."""
    speedup_vs_ort_fp32: float = 2.5
    """Batch-1 p50 of ORT FP32 / ORT INT8, at least."""
    speedup_vs_torch: float = 6.0
    """Batch-1 p50 of torch FP32 / ORT INT8, at least."""

    def with_margin(self) -> Targets:
        return Targets(
            cosine_mean=1 - (1 - self.cosine_mean) * 0.8,
            cosine_min=1 - (1 - self.cosine_min) * 0.75,
            spearman=1 - (1 - self.spearman) * 0.7,
            size_ratio=self.size_ratio,
            speedup_vs_ort_fp32=self.speedup_vs_ort_fp32,
            speedup_vs_torch=self.speedup_vs_torch,
        )

    def accuracy_met(self, metrics: dict[str, float]) -> bool:
        return (metrics["cosine_mean"] >= self.cosine_mean
                and metrics["cosine_min"] >= self.cosine_min
                and metrics["spearman"] >= self.spearman)

    def checks(self, metrics: dict[str, float], size_ratio: float,
               speedups: dict[str, float]) -> dict[str, bool]:
        """One pass/fail per target, for the report."""
        return {
            "cosine_mean": metrics["cosine_mean"] >= self.cosine_mean,
            "cosine_min": metrics["cosine_min"] >= self.cosine_min,
            "spearman": metrics["spearman"] >= self.spearman,
            "size_ratio": size_ratio <= self.size_ratio,
            "speedup_vs_ort_fp32": speedups.get("vs_ort_fp32", 0.0) >= self.speedup_vs_ort_fp32,
            "speedup_vs_torch": speedups.get("vs_torch", 0.0) >= self.speedup_vs_torch,
        }

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
