"""Sensitivity analysis and the greedy choice of which node groups leave fast integer INT8.

Contract:
- ``sensitivity(bench, level)`` quantizes one group at a time at ``level`` (all others FP32)
  and returns one ``GroupError`` per group, most damaging first. ``score`` is the error in
  units of the target budgets: max(mean-cosine drop / (1 - cosine_mean target),
  min-cosine drop / (1 - cosine_min target)).
- ``choose_levels(rankings)`` takes one ``sensitivity`` ranking per fast integer level
  (``dynamic``, ``static``) and gives each group the level where it scored lowest (ties go to
  the first ranking's level). It returns that recipe (the search's start) and the ranking of
  each group's error at its chosen level, most damaging first.
- ``greedy(bench, ranking, targets, base)`` starts from the recipe ``base`` (default: every
  group at dynamic INT8) and promotes groups, most sensitive first, until the calibration
  metrics meet ``targets``, both at batch 1 and in padded batches. MatMul groups are promoted
  to blockwise INT8 first (in sensitivity order); only when none is left are other groups kept
  in FP32, and only while the size target holds. Each round promotes as many groups as the summed single-group mean drops predict are
  needed, then verifies with a real build; it returns the recipe and every verified step.
- ``prefer_faster(bench, recipe, ranking, targets, iterations)`` weighs the greedy's blockwise
  groups against keeping them FP32 on the machine that builds: the candidates keep the most
  sensitive ``k`` of them FP32 (``k`` from as many as the size target allows down to one), the first
  that meets ``targets`` is timed side by side with ``recipe`` (``TrialBench.speed``), and it is
  chosen only when faster by more than ``SPEED_MARGIN``. Blockwise INT8 runs on INT8 dot products:
  with VNNI the built model is 2.7x ORT FP32; on a Zen 1-class CPU (AVX2 on half-width units) it was
  0.87x, and the same recipe with those groups FP32 1.08x. Returns the chosen recipe and what was
  compared (None when ``recipe`` has no blockwise group).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from edge_agent.build.groups import Group
from edge_agent.build.quantize import Level, Recipe
from edge_agent.build.targets import Targets
from edge_agent.build.trials import TrialBench

BYTES_FLOAT, BYTES_INT8 = 4, 1
SPEED_MARGIN = 0.03
"""How much faster (batch-1 p50) the FP32 candidate must be to replace blockwise INT8: less is noise."""


@dataclass(frozen=True)
class GroupError:
    group: str
    family: str
    layer: int | None
    level: str
    cosine_mean_drop: float
    cosine_min_drop: float
    spearman_drop: float
    score: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def choose_levels(rankings: dict[Level, list[GroupError]]) -> tuple[Recipe, list[GroupError]]:
    if not rankings:
        raise ValueError("no sensitivity ranking to choose from")
    best: dict[str, GroupError] = {}
    for ranking in rankings.values():
        for error in ranking:
            if error.group not in best or error.score < best[error.group].score:
                best[error.group] = error
    default = next(iter(rankings))
    levels = {name: Level(e.level) for name, e in best.items() if Level(e.level) is not default}
    return Recipe(default=default, levels=levels), sorted(best.values(), key=lambda e: -e.score)


def sensitivity(bench: TrialBench, targets: Targets, level: Level = Level.DYNAMIC,
                full: bool = False, progress: Callable[[str], None] = lambda _: None,
                ) -> list[GroupError]:
    errors = []
    for group in bench.groups:
        if level is Level.BLOCKWISE and not group.blockwise_capable:
            continue
        recipe = Recipe(default=Level.FLOAT, levels={group.name: level})
        trial = bench.measure(f"only {group.name} {level.value}", recipe, batched=False, full=full)
        m = trial["full" if full else "calibration"]
        mean_drop, min_drop = 1 - m["cosine_mean"], 1 - m["cosine_min"]
        score = max(mean_drop / (1 - targets.cosine_mean), min_drop / (1 - targets.cosine_min))
        errors.append(GroupError(group.name, group.family, group.layer, level.value, mean_drop,
                                 min_drop, 1 - m["spearman"], score))
        progress(f"    {group.name:12s} mean drop {mean_drop:.5f}  min drop {min_drop:.5f}")
    return sorted(errors, key=lambda e: -e.score)


def _promotion(group: Group) -> Level:
    return Level.BLOCKWISE if group.blockwise_capable else Level.FLOAT


def _extra_float_bytes(group: Group) -> int:
    return group.weight_params * (BYTES_FLOAT - BYTES_INT8)


def _met(targets: Targets, trial: dict[str, Any]) -> bool:
    return targets.accuracy_met(trial["calibration"]) and targets.accuracy_met(trial["calibration_batched"])


def greedy(bench: TrialBench, ranking: list[GroupError], targets: Targets,
           progress: Callable[[str], None] = lambda _: None,
           base: Recipe | None = None) -> tuple[Recipe, list[dict[str, Any]]]:
    by_name = {g.name: g for g in bench.groups}
    recipe = base or Recipe(default=Level.DYNAMIC)
    start = {level for level in (recipe.level(g) for g in bench.groups)}
    trial = bench.measure(f"greedy start: {'/'.join(sorted(level.value for level in start))}", recipe)
    steps = [{**trial, "promoted": []}]
    budget = targets.size_ratio * bench.fp32_bytes
    # Blockwise INT8 keeps file size (and, with VNNI, most of the speed); FP32 costs both, so it
    # is the fallback once no blockwise-capable group is left.
    pending = ([e for e in ranking if by_name[e.group].blockwise_capable]
               + [e for e in ranking if not by_name[e.group].blockwise_capable])
    while not _met(targets, trial) and pending:
        current = trial["calibration"]["cosine_mean"]
        batch: list[GroupError] = []
        predicted = current
        size = trial["int8_bytes"]
        for error in list(pending):
            group = by_name[error.group]
            if _promotion(group) is Level.FLOAT:
                if size + _extra_float_bytes(group) > budget:
                    pending.remove(error)
                    continue
                size += _extra_float_bytes(group)
            batch.append(error)
            pending.remove(error)
            predicted += error.cosine_mean_drop
            if predicted >= targets.cosine_mean:
                break
        if not batch:
            break
        for error in batch:
            recipe = recipe.with_level(error.group, _promotion(by_name[error.group]))
        names = [e.group for e in batch]
        trial = bench.measure(f"greedy +{','.join(names)}", recipe)
        steps.append({**trial, "promoted": names})
        m, mb = trial["calibration"], trial["calibration_batched"]
        progress(f"    +{len(names)} -> {sum(not recipe.level(g).integer for g in bench.groups)} "
                 f"promoted: calibration mean {m['cosine_mean']:.4f} min {m['cosine_min']:.4f} "
                 f"spearman {m['spearman']:.4f}; batched min {mb['cosine_min']:.4f}")
    return recipe, steps


def prefer_faster(bench: TrialBench, recipe: Recipe, ranking: list[GroupError], targets: Targets,
                  iterations: int, progress: Callable[[str], None] = lambda _: None,
                  ) -> tuple[Recipe, dict[str, Any] | None]:
    order = {e.group: i for i, e in enumerate(ranking)}
    blockwise = sorted((g for g in bench.groups if recipe.level(g) is Level.BLOCKWISE),
                       key=lambda g: order.get(g.name, len(order)))
    if not blockwise:
        return recipe, None
    kept = []
    try:
        built = bench.measure("greedy (blockwise)", recipe, keep=True)
        kept.append(built)
        budget = targets.size_ratio * bench.fp32_bytes
        count = len(blockwise)
        while count and built["int8_bytes"] + sum(_extra_float_bytes(g) for g in blockwise[:count]) > budget:
            count -= 1
        candidate = None
        for k in range(count, 0, -1):
            names = [g.name for g in blockwise[:k]]
            alternative = recipe
            for name in names:
                alternative = alternative.with_level(name, Level.FLOAT)
            trial = bench.measure(f"greedy, {k} blockwise kept FP32", alternative, keep=True)
            kept.append(trial)
            progress(f"    {', '.join(names)} FP32: size {trial['size_ratio']:.3f}, calibration min "
                     f"{trial['calibration']['cosine_min']:.4f}")
            if _met(targets, trial) and trial["size_ratio"] <= targets.size_ratio:
                candidate = (alternative, trial, names)
                break
        comparison: dict[str, Any] = {"blockwise": [g.name for g in blockwise], "float": [], "chosen": "blockwise"}
        if candidate is None:
            comparison["why"] = "no FP32 candidate meets the targets within the size budget"
            return recipe, comparison
        alternative, trial, names = candidate
        speeds = bench.speed({"blockwise": built["path"], "float": trial["path"]}, iterations)
        faster = speeds["blockwise"]["b1_p50_ms"] > speeds["float"]["b1_p50_ms"] * (1 + SPEED_MARGIN)
        comparison.update(float=names, chosen="float" if faster else "blockwise",
                          b1_p50_ms={name: v["b1_p50_ms"] for name, v in speeds.items()},
                          speedup_vs_ort_fp32={name: v["speedup_vs_ort_fp32_b1"] for name, v in speeds.items()})
        progress(f"    batch-1 p50: blockwise {speeds['blockwise']['b1_p50_ms']:.2f} ms, with {len(names)} FP32 "
                 f"{speeds['float']['b1_p50_ms']:.2f} ms: {comparison['chosen']}")
        return (alternative if faster else recipe), comparison
    finally:
        for trial in kept:
            trial.pop("path").unlink(missing_ok=True)
