"""``prefer_faster``: the greedy's blockwise groups against keeping them FP32, on a fake trial bench
(accuracy, size and speed are whatever the test says; no model is built)."""

from __future__ import annotations

from pathlib import Path

from edge_agent.build.groups import Group
from edge_agent.build.quantize import Level, Recipe
from edge_agent.build.search import GroupError, prefer_faster
from edge_agent.build.targets import Targets

PARAMS = 1000
GROUPS = [Group(f"L{i}.ffn_down", "ffn_down", i, f"/m/encoder/layer.{i}/output/dense/MatMul", "MatMul", PARAMS)
          for i in range(3)] + [Group("L0.qkv", "qkv", 0, "Attention_0", "Attention", PARAMS)]
RANKING = [GroupError(name, "ffn_down", None, "dynamic", 0.001, 0.01, 0.001, score)
           for name, score in (("L2.ffn_down", 0.9), ("L0.ffn_down", 0.5), ("L1.ffn_down", 0.2))]
GREEDY = Recipe(levels={"L0.ffn_down": Level.BLOCKWISE, "L1.ffn_down": Level.BLOCKWISE,
                        "L2.ffn_down": Level.BLOCKWISE})
GOOD = {"cosine_mean": 0.999, "cosine_min": 0.995, "spearman": 0.999}
BAD = {"cosine_mean": 0.999, "cosine_min": 0.90, "spearman": 0.999}


class FakeBench:
    """``int8_bytes``: 1 byte per weight, 4 per FP32 one; ``accurate(floats)`` and ``p50(floats)``
    say how a recipe with those groups FP32 does."""

    groups = GROUPS
    fp32_bytes = 4 * PARAMS * len(GROUPS)

    def __init__(self, tmp: Path, accurate=lambda floats: True, p50=lambda floats: 10.0):
        self.tmp, self.accurate, self.p50 = tmp, accurate, p50
        self.measured: list[frozenset[str]] = []
        self.timed: list[dict[str, Path]] = []
        self._floats: dict[Path, frozenset[str]] = {}

    def measure(self, name: str, recipe: Recipe, *, keep: bool = False, **_) -> dict:
        floats = frozenset(g.name for g in GROUPS if recipe.level(g) is Level.FLOAT)
        self.measured.append(floats)
        size = sum(4 * PARAMS if g.name in floats else PARAMS for g in GROUPS)
        path = self.tmp / f"trial-{len(self.measured)}.onnx"
        path.write_bytes(b"x")
        self._floats[path] = floats
        metrics = GOOD if self.accurate(floats) else BAD
        return {"name": name, "int8_bytes": size, "size_ratio": size / self.fp32_bytes, "calibration": metrics,
                "calibration_batched": metrics, "path": path}

    def speed(self, models: dict[str, Path], iterations: int) -> dict:
        self.timed.append(models)
        return {name: {"b1_p50_ms": self.p50(self._floats[path]),
                       "speedup_vs_ort_fp32_b1": 10.0 / self.p50(self._floats[path])}
                for name, path in models.items()}


def targets(size_ratio: float = 1.0) -> Targets:
    return Targets(size_ratio=size_ratio)


def test_fp32_groups_replace_blockwise_when_faster_and_the_targets_hold(tmp_path):
    bench = FakeBench(tmp_path, p50=lambda floats: 12.0 - len(floats))  # blockwise slower: no VNNI
    recipe, comparison = prefer_faster(bench, GREEDY, RANKING, targets(), 20)
    assert {g.name for g in GROUPS if recipe.level(g) is Level.FLOAT} == {"L0.ffn_down", "L1.ffn_down",
                                                                          "L2.ffn_down"}
    assert comparison["chosen"] == "float" and comparison["b1_p50_ms"] == {"blockwise": 12.0, "float": 9.0}
    assert not list(tmp_path.iterdir()), "every candidate file is deleted"


def test_blockwise_stays_when_fp32_is_not_faster_by_the_margin(tmp_path):
    bench = FakeBench(tmp_path, p50=lambda floats: 10.0 - 0.02 * len(floats) / 3)  # 2% faster: noise
    recipe, comparison = prefer_faster(bench, GREEDY, RANKING, targets(), 20)
    assert recipe == GREEDY and comparison["chosen"] == "blockwise"
    assert not list(tmp_path.iterdir())


def test_the_size_budget_keeps_the_most_sensitive_groups_fp32_first(tmp_path):
    # FP32 weights cost 3 bytes more each: the budget takes two of the three groups
    budget = (4 * PARAMS + 2 * 3 * PARAMS) / FakeBench.fp32_bytes
    bench = FakeBench(tmp_path, p50=lambda floats: 12.0 - len(floats))
    recipe, comparison = prefer_faster(bench, GREEDY, RANKING, targets(budget), 20)
    assert comparison["float"] == ["L2.ffn_down", "L0.ffn_down"]
    assert recipe.levels["L1.ffn_down"] is Level.BLOCKWISE and recipe.levels["L2.ffn_down"] is Level.FLOAT


def test_a_candidate_that_misses_the_accuracy_targets_gives_way_to_a_smaller_one(tmp_path):
    bench = FakeBench(tmp_path, accurate=lambda floats: len(floats) != 3, p50=lambda floats: 12.0 - len(floats))
    recipe, comparison = prefer_faster(bench, GREEDY, RANKING, targets(), 20)
    assert comparison["float"] == ["L2.ffn_down", "L0.ffn_down"] and comparison["chosen"] == "float"
    assert bench.measured[1] == {"L0.ffn_down", "L1.ffn_down", "L2.ffn_down"}


def test_no_candidate_meets_the_targets_keeps_the_greedy_recipe_untimed(tmp_path):
    bench = FakeBench(tmp_path, accurate=lambda floats: not floats)
    recipe, comparison = prefer_faster(bench, GREEDY, RANKING, targets(), 20)
    assert recipe == GREEDY and comparison["chosen"] == "blockwise" and "size budget" in comparison["why"]
    assert bench.timed == [] and not list(tmp_path.iterdir())


def test_a_recipe_without_blockwise_groups_is_returned_as_it_is(tmp_path):
    bench = FakeBench(tmp_path)
    recipe = Recipe(levels={"L0.qkv": Level.FLOAT})
    assert prefer_faster(bench, recipe, RANKING, targets(), 20) == (recipe, None)
    assert bench.measured == []
