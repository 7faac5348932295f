"""Build one candidate INT8 model from a recipe and measure it against the torch FP32 reference.

Contract: ``EvalSet`` is the report corpus with its torch FP32 embeddings and which rows form
the calibration subset (the rest is held out). ``TrialBench.ranges`` are the activation ranges
of the fused graph over the calibration rows at batch 1, which the ``static`` level needs.
``TrialBench.measure(name, recipe, ...)`` builds the candidate in a scratch directory, embeds
the calibration rows at batch 1 and (``batched``) in padded batches, with ``full=True`` all
rows at batch 1, deletes the candidate (unless ``keep``), and returns a JSON-ready dict.
``TrialBench.speed(models)`` times kept candidates side by side with the FP32 ONNX model.
Nothing here decides anything; ``search`` does.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.build.calibration import ChannelRange, collect_ranges
from edge_agent.build.corpus import BENCH_SENTENCE
from edge_agent.build.groups import Group
from edge_agent.build.latency import interleaved, summary
from edge_agent.build.metrics import agreement
from edge_agent.build.quantize import Level, Recipe, apply_recipe
from edge_agent.build.runners import OrtRunner

CALIBRATION_BATCH = 16
"""Calibration rows are also embedded in padded batches of this size: dynamic per-tensor
activation scales span the whole batch, so padding and batch-mates move the result."""


@dataclass(frozen=True)
class EvalSet:
    texts: list[str]
    reference: np.ndarray
    calibration: list[int]

    @property
    def heldout(self) -> list[int]:
        chosen = set(self.calibration)
        return [i for i in range(len(self.texts)) if i not in chosen]

    def subset(self, indices: Sequence[int]) -> tuple[list[str], np.ndarray]:
        return [self.texts[i] for i in indices], self.reference[list(indices)]


def recipe_summary(recipe: Recipe, groups: Sequence[Group]) -> dict[str, Any]:
    levels = {level.value: [g.name for g in groups if recipe.level(g) is level] for level in Level}
    return {
        "per_channel": recipe.per_channel,
        "reduce_range": recipe.reduce_range,
        "smooth_quantile": recipe.smooth_quantile,
        **{f"{k}_groups": v for k, v in levels.items() if v and len(v) < len(groups)},
        "counts": {k: len(v) for k, v in levels.items()},
    }


class TrialBench:
    def __init__(self, fused: Path, groups: Sequence[Group], evalset: EvalSet, workdir: Path,
                 fp32_path: Path, tokenizer):
        self.fused = fused
        self.groups = list(groups)
        self.evalset = evalset
        self.workdir = workdir
        self.tokenizer = tokenizer
        self.fp32_bytes = fp32_path.stat().st_size
        self._fp32 = OrtRunner(fp32_path, tokenizer, threads=1)
        self._bench_batch = tokenizer.encode([BENCH_SENTENCE])
        self._count = 0
        self._ranges: dict[str, ChannelRange] | None = None

    @property
    def ranges(self) -> dict[str, ChannelRange]:
        """Per-channel ranges of every group's input over the calibration rows at batch 1
        (computed on first use, on the fused FP32 graph)."""
        if self._ranges is None:
            import onnx

            nodes = {n.name: n for n in onnx.load(str(self.fused), load_external_data=False).graph.node}
            texts, _ = self.evalset.subset(self.evalset.calibration)
            feeds = (self.tokenizer.encode([text]) for text in texts)
            inputs = sorted({nodes[g.node].input[0] for g in self.groups if g.static_capable})
            self._ranges = collect_ranges(self.fused, inputs, feeds)
        return self._ranges

    def build(self, recipe: Recipe, out: Path) -> Path:
        static = any(recipe.level(g) is Level.STATIC and g.static_capable for g in self.groups)
        return apply_recipe(self.fused, self.groups, recipe, out, self.ranges if static else None)

    def measure(self, name: str, recipe: Recipe, *, batched: bool = True, full: bool = False,
                keep: bool = False, path: Path | None = None) -> dict[str, Any]:
        """Metrics of ``recipe`` (built fresh, or read from ``path`` if given).

        With ``keep`` the built file stays and its path is returned under ``"path"`` (the
        caller deletes it); otherwise a freshly built candidate is deleted before returning.
        """
        started = time.perf_counter()
        self._count += 1
        model = path or self.build(recipe, self.workdir / f"trial-{self._count}.onnx")
        try:
            runner = OrtRunner(model, self.tokenizer, threads=1)
            texts, reference = self.evalset.subset(self.evalset.calibration)
            result: dict[str, Any] = {
                "name": name,
                "recipe": recipe_summary(recipe, self.groups),
                "int8_bytes": model.stat().st_size,
                "size_ratio": model.stat().st_size / self.fp32_bytes,
                "calibration": agreement(reference, runner.embed(texts)),
            }
            if batched:
                result["calibration_batched"] = agreement(
                    reference, runner.embed(texts, batch_size=CALIBRATION_BATCH))
            if full:
                embeddings = runner.embed(self.evalset.texts)
                result["full"] = agreement(self.evalset.reference, embeddings)
                held = self.evalset.heldout
                result["heldout"] = agreement(self.evalset.reference[held], embeddings[held])
            if keep:
                result["path"] = model
        finally:
            if path is None and not keep:
                model.unlink(missing_ok=True)
        result["seconds"] = time.perf_counter() - started
        return result

    def speed(self, models: dict[str, Path], iterations: int) -> dict[str, dict[str, float]]:
        """Batch-1 latency of every model and of the FP32 ONNX model, all in one interleaved run.

        Each entry gets ``b1_p50_ms`` and ``speedup_vs_ort_fp32_b1`` (FP32 p50 / model p50).
        """
        batch = self._bench_batch
        runners = {name: OrtRunner(path, self.tokenizer, threads=1) for name, path in models.items()}
        calls = {name: (lambda r=r: r.forward(batch)) for name, r in runners.items()}
        samples = interleaved({**calls, "ort-fp32": lambda: self._fp32.forward(batch)}, iterations)
        base = summary(samples["ort-fp32"])["p50_ms"]
        return {name: {"b1_p50_ms": summary(samples[name])["p50_ms"],
                       "speedup_vs_ort_fp32_b1": base / summary(samples[name])["p50_ms"]}
                for name in models}
