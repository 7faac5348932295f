"""Small pieces of the build that need no model: targets, recipes, timing, CLI wiring, reuse."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from edge_agent.build import add_arguments, build_model_dir
from edge_agent.build.groups import Group
from edge_agent.build.latency import interleaved, summary
from edge_agent.build.quantize import Level, Recipe, apply_recipe
from edge_agent.build.targets import Targets

GROUPS = [
    Group("embeddings", "embeddings", None, "EmbedLayerNormalization_0", "EmbedLayerNormalization", 10),
    Group("L0.qkv", "qkv", 0, "Attention_0", "Attention", 10),
    Group("L0.ffn_down", "ffn_down", 0, "/m/encoder/layer.0/output/dense/MatMul", "MatMul", 10),
]


def test_margin_targets_are_stricter():
    base, strict = Targets(), Targets().with_margin()
    assert strict.cosine_mean > base.cosine_mean
    assert strict.cosine_min > base.cosine_min
    assert strict.spearman > base.spearman
    good = {"cosine_mean": 0.9955, "cosine_min": 0.981, "spearman": 0.991}
    assert base.accuracy_met(good) and not strict.accuracy_met(good)


def test_target_checks_name_every_target():
    checks = Targets().checks({"cosine_mean": 1.0, "cosine_min": 1.0, "spearman": 1.0}, 0.5,
                              {"vs_ort_fp32": 3.0, "vs_torch": 5.0})
    assert checks == {"cosine_mean": True, "cosine_min": True, "spearman": True,
                      "size_ratio": False, "speedup_vs_ort_fp32": True, "speedup_vs_torch": False}


def test_recipe_levels_and_description():
    recipe = Recipe().with_level("L0.ffn_down", Level.BLOCKWISE).with_level("L0.qkv", Level.FLOAT)
    assert [recipe.level(g) for g in GROUPS] == [Level.DYNAMIC, Level.FLOAT, Level.BLOCKWISE]
    described = recipe.describe(GROUPS)
    assert described["groups"] == {"float": ["L0.qkv"], "dynamic": ["embeddings"], "blockwise": ["L0.ffn_down"],
                                   "static": []}
    assert (described["excluded_nodes"], described["blockwise_nodes"], described["dynamic_nodes"]) == (1, 1, 1)
    assert described["static_nodes"] == 0


def test_static_level_needs_calibration_ranges(tmp_path):
    with pytest.raises(ValueError, match="calibration ranges"):
        apply_recipe(tmp_path / "missing.onnx", GROUPS, Recipe(default=Level.STATIC), tmp_path / "out.onnx")


def test_integer_levels():
    assert {level for level in Level if level.integer} == {Level.DYNAMIC, Level.STATIC}


def test_blockwise_is_refused_for_non_matmul_groups(tmp_path):
    recipe = Recipe(levels={"L0.qkv": Level.BLOCKWISE})
    with pytest.raises(ValueError, match="L0.qkv"):
        apply_recipe(tmp_path / "missing.onnx", GROUPS, recipe, tmp_path / "out.onnx")


def test_interleaved_calls_everyone_every_round_and_honours_budget():
    calls = []
    samples = interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, 5, warmup=1)
    assert calls.count("a") == calls.count("b") == 6
    assert len(samples["a"]) == len(samples["b"]) == 5
    cut = interleaved({"a": lambda: None}, 10_000_000, warmup=0, budget_s=0.0)
    assert len(cut["a"]) == 1
    assert set(summary([0.001, 0.002, 0.003])) == {"p50_ms", "p99_ms", "mean_ms", "n"}


def test_cli_arguments_defaults():
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args([])
    assert args.out is None  # each model's own default directory, chosen by `edgecloud model build --model`
    assert (args.force, args.sensitivity, args.report_sentences, args.strict) == (False, "fast", 200, False)
    args = parser.parse_args(["--out", "x", "--force", "--sensitivity", "full"])
    assert (args.out, args.force, args.sensitivity) == (Path("x"), True, "full")


def test_the_cli_builds_each_model_into_its_own_default_directory(monkeypatch):
    from edge_agent.build import generative, pipeline
    from edgecloud_tools.cli import main

    built: list[tuple[str, Path]] = []
    monkeypatch.setattr(pipeline, "build_model_dir", lambda out, **kw: built.append(("minilm", out)) or out)
    monkeypatch.setattr(generative, "build_generative_dir", lambda out, **kw: built.append(("smollm2", out)) or out)
    assert main(["model", "build"]) == 0
    assert main(["model", "build", "--model", "smollm2"]) == 0
    assert main(["model", "build", "--model", "smollm2", "--out", "elsewhere"]) == 0
    assert built == [("minilm", Path("models/all-MiniLM-L6-v2")), ("smollm2", Path("models/smollm2-135m-instruct")),
                     ("smollm2", Path("elsewhere"))]


def test_existing_model_dir_is_reused_without_building(tmp_path):
    (tmp_path / "model.json").write_text("{}")
    lines: list[str] = []
    assert build_model_dir(tmp_path, progress=lines.append) == tmp_path
    assert len(lines) == 1 and "reusing" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.json"]


def test_cli_wiring_imports_without_the_build_toolchain():
    import subprocess
    import sys

    script = """
import sys
for name in ("torch", "onnx", "onnxruntime", "transformers", "onnxscript"):
    sys.modules[name] = None
import argparse
from edge_agent.build import add_arguments, build_model_dir, run
add_arguments(argparse.ArgumentParser())
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
