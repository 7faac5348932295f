"""``edgecloud model build``: export, fuse, analyse, quantize, report; one model directory out.

Contract: ``build_model_dir(out_dir)`` returns ``out_dir`` holding model.json, model.fp32.onnx,
model.int8.onnx, tokenizer.json, report.json and report.txt (see ``manifest``). If
``out_dir/model.json`` exists and ``force`` is false it returns at once. Otherwise it builds in
a hidden staging directory beside ``out_dir`` and swaps it in with renames at the end, so a
reader never sees a half-built directory and a failed build leaves the old one in place.
Progress goes to ``progress`` as one line per step with its duration. ``add_arguments`` and
``run`` let a CLI expose the same options.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.build import manifest
from edge_agent.build.corpus import BENCH_SENTENCE, bench_batch, evaluation_corpus
from edge_agent.build.export import OPSET, export_fp32, max_abs_difference
from edge_agent.build.fusion import fuse_for_cpu
from edge_agent.build.groups import find_groups
from edge_agent.build.latency import interleaved, summary
from edge_agent.build.metrics import agreement
from edge_agent.build.quantize import Level, Recipe
from edge_agent.build.report import missed_targets, render_summary, write_report
from edge_agent.build.runners import OrtRunner, TorchRunner, default_tokenizer
from edge_agent.build.search import choose_levels, greedy, prefer_faster, sensitivity
from edge_agent.build.staging import staged
from edge_agent.build.targets import Targets
from edge_agent.build.trials import EvalSet, TrialBench
from edgecloud.reference_model import MODEL_NAME, tokenizer_file

DEFAULT_OUT = Path("models") / MODEL_NAME
SENSITIVITY_MODES = ("fast", "full")
PARITY_TOLERANCE = 1e-3


class BuildError(RuntimeError):
    pass


def console(line: str) -> None:
    """The default progress sink: print and flush, so piped or logged output keeps pace."""
    print(line, flush=True)


class _Steps:
    """Numbered progress lines with the time each step took."""

    def __init__(self, progress: Callable[[str], None]):
        self.progress = progress
        self.started = time.perf_counter()
        self._last = self.started

    def done(self, what: str) -> None:
        now = time.perf_counter()
        self.progress(f"  {what} ({now - self._last:.1f}s, {now - self.started:.0f}s total)")
        self._last = now

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started


def _spread(items: list[str], n: int) -> list[str]:
    if n >= len(items):
        return list(items)
    step = len(items) / n
    return [items[int(i * step)] for i in range(n)]


def _report_trials(bench: TrialBench, base: Recipe, final_recipe: Recipe, final_path: Path, mode: str,
                   iterations: int, progress: Callable[[str], None]) -> list[dict[str, Any]]:
    """The alternatives the report compares: each on the full corpus, then all timed side by
    side (one interleaved run, so their speed figures are comparable with each other)."""
    groups = bench.groups
    ffn = {g.name: Level.FLOAT for g in groups if g.family in ("ffn_up", "ffn_down")}
    matmuls_blockwise = {g.name: Level.BLOCKWISE for g in groups if g.blockwise_capable}
    candidates = [
        ("dynamic per-tensor, all groups", Recipe(per_channel=False)),
        ("dynamic per-channel, all groups", Recipe()),
        ("dynamic per-channel reduce_range, all groups", Recipe(reduce_range=True)),
        ("dynamic per-channel, embeddings FP32", Recipe(levels={"embeddings": Level.FLOAT})),
        ("blockwise all MatMuls, rest dynamic", Recipe(levels=matmuls_blockwise)),
        ("static (calibrated, smoothed), all groups", Recipe(default=Level.STATIC)),
        ("static without smoothing, all groups", Recipe(default=Level.STATIC, smooth_quantile=None)),
        ("search start: each group dynamic or static", base),
    ]
    if mode == "full":
        candidates += [
            ("dynamic per-channel, FFN FP32", Recipe(levels=ffn)),
            ("blockwise all MatMuls, QKV FP32",
             Recipe(levels={**matmuls_blockwise, **{g.name: Level.FLOAT for g in groups if g.family == "qkv"}})),
        ]
    trials = []
    try:
        for name, recipe in candidates:
            trials.append(bench.measure(name, recipe, full=True, keep=True))
            progress(f"    {name}")
        trials.append(bench.measure("final (greedy)", final_recipe, full=True, keep=True, path=final_path))
        speeds = bench.speed({t["name"]: t["path"] for t in trials}, iterations)
    finally:
        for trial in trials:
            path = trial.pop("path")
            if path != final_path:
                path.unlink(missing_ok=True)
    for trial in trials:
        trial.update(speeds[trial["name"]])
    return trials


def _latency(fp32: Path, fused: Path, int8: Path, encoder, tokenizer, iterations: int,
             threads: int = 1) -> dict[str, Any]:
    runners = {
        "torch-fp32": TorchRunner(tokenizer, threads=threads, encoder=encoder),
        "ort-fp32": OrtRunner(fp32, tokenizer, threads=threads),
        "ort-fp32-fused": OrtRunner(fused, tokenizer, threads=threads),
        "ort-int8": OrtRunner(int8, tokenizer, threads=threads),
    }
    one = tokenizer.encode([BENCH_SENTENCE])
    many = tokenizer.encode(bench_batch())
    b1 = interleaved({k: (lambda r=r: r.forward(one)) for k, r in runners.items()}, iterations)
    bn = interleaved({k: (lambda r=r: r.forward(many)) for k, r in runners.items()},
                     max(5, iterations // 10), warmup=1)
    rows = {k: {"b1_p50_ms": summary(b1[k])["p50_ms"], "b1_p99_ms": summary(b1[k])["p99_ms"],
                "bn_p50_ms": summary(bn[k])["p50_ms"]} for k in runners}
    p50 = {k: r["b1_p50_ms"] for k, r in rows.items()}
    return {
        "threads": threads,
        "batch1_tokens": int(one["input_ids"].shape[1]),
        "batch_n": int(many["input_ids"].shape[0]),
        "batchn_tokens": int(many["input_ids"].shape[1]),
        "iterations": iterations,
        "rows": rows,
        "ratios": {
            "int8_vs_ort_fp32_b1": p50["ort-fp32"] / p50["ort-int8"],
            "int8_vs_torch_b1": p50["torch-fp32"] / p50["ort-int8"],
            "int8_vs_ort_fp32_fused_b1": p50["ort-fp32-fused"] / p50["ort-int8"],
            "int8_vs_ort_fp32_bn": rows["ort-fp32"]["bn_p50_ms"] / rows["ort-int8"]["bn_p50_ms"],
        },
    }


def build_model_dir(out_dir: Path, *, force: bool = False, progress: Callable[[str], None] = console,
                    report_sentences: int = 200, sensitivity_mode: str = "fast",
                    calibration_sentences: int = 48, latency_iterations: int = 100,
                    targets: Targets | None = None) -> Path:
    """Build (or reuse) the edge model directory at ``out_dir``; see the module docstring.

    ``report_sentences`` sentences spread over the evaluation corpus are reported on;
    ``calibration_sentences`` of those drive the sensitivity analysis, the static level's
    activation ranges and the greedy search (``sensitivity_mode="full"`` analyses on all report
    sentences and also at blockwise level).
    """
    out_dir = Path(out_dir)
    if (out_dir / manifest.MANIFEST).exists() and not force:
        progress(f"model directory {out_dir} exists; reusing it (force to rebuild)")
        return out_dir
    if sensitivity_mode not in SENSITIVITY_MODES:
        raise ValueError(f"sensitivity_mode must be one of {SENSITIVITY_MODES}, not {sensitivity_mode!r}")
    targets = targets or Targets()
    with staged(out_dir) as staging:
        progress(f"building {MODEL_NAME} into {out_dir} (staging in {staging.name})")
        _build(staging, progress, report_sentences, sensitivity_mode, calibration_sentences,
               latency_iterations, targets)
    report = json.loads((out_dir / manifest.REPORT_JSON).read_text())
    for line in render_summary(report, out_dir / manifest.REPORT_TXT).rstrip("\n").split("\n"):
        progress(line)
    progress(f"model directory ready: {out_dir}")
    return out_dir


def _build(staging: Path, progress: Callable[[str], None], report_sentences: int, mode: str,
           calibration_sentences: int, latency_iterations: int, targets: Targets) -> None:
    from edgecloud.reference_model import load_torch_encoder

    steps = _Steps(progress)
    work = staging / ".work"
    work.mkdir()
    fp32_path = staging / manifest.FP32_FILE
    int8_path = staging / manifest.INT8_FILE
    fused_path = work / "model.fused.onnx"
    tokenizer = default_tokenizer()

    progress("[1/8] export FP32")
    encoder = load_torch_encoder()
    export_fp32(fp32_path, encoder)
    parity_batch = tokenizer.encode(["hi", BENCH_SENTENCE, evaluation_corpus()[-1]])
    diff = max_abs_difference(fp32_path, encoder, parity_batch)
    if diff > PARITY_TOLERANCE:
        raise BuildError(f"exported FP32 differs from torch by {diff:.2e} (> {PARITY_TOLERANCE})")
    steps.done(f"opset {OPSET}, {fp32_path.stat().st_size / 2**20:.1f} MiB, max |onnx - torch| {diff:.1e}")

    progress("[2/8] fuse transformer operators (onnxruntime.transformers.optimizer, bert)")
    fused_counts = fuse_for_cpu(fp32_path, fused_path)
    fused_diff = max_abs_difference(fused_path, encoder, parity_batch)
    if fused_diff > PARITY_TOLERANCE:
        raise BuildError(f"fused FP32 differs from torch by {fused_diff:.2e}")
    import onnx

    groups = find_groups(onnx.load(str(fused_path)))
    steps.done(f"{fused_counts}; {len(groups)} quantizable groups")

    progress("[3/8] torch FP32 reference embeddings")
    corpus = evaluation_corpus()
    texts = _spread(corpus, report_sentences)
    reference = TorchRunner(tokenizer, threads=1, encoder=encoder).embed(texts)
    n_cal = min(calibration_sentences, len(texts))
    calibration = [int(k * len(texts) / n_cal) for k in range(n_cal)]
    evalset = EvalSet(texts, reference, calibration)
    bench = TrialBench(fused_path, groups, evalset, work, fp32_path, tokenizer)
    steps.done(f"{len(texts)} sentences, {len(calibration)} for calibration")

    progress(f"[4/8] sensitivity analysis ({mode}): one group at a time at dynamic and at static INT8")
    rankings = {level: sensitivity(bench, targets, level, full=(mode == "full"), progress=progress)
                for level in (Level.DYNAMIC, Level.STATIC)}
    base, ranking = choose_levels(rankings)
    blockwise_ranking = (sensitivity(bench, targets, Level.BLOCKWISE, full=True, progress=progress)
                         if mode == "full" else [])
    steps.done(f"static for {sum(base.level(g) is Level.STATIC for g in groups)} groups; "
               f"top: {', '.join(f'{e.group} ({e.score:.2f})' for e in ranking[:4])}")

    progress("[5/8] greedy search: promote the most sensitive groups until the targets hold")
    recipe, greedy_steps = greedy(bench, ranking, targets.with_margin(), progress=progress, base=base)
    recipe, promotion_speed = prefer_faster(bench, recipe, ranking, targets.with_margin(),
                                            max(20, latency_iterations // 2), progress=progress)
    bench.build(recipe, int8_path)
    steps.done(f"{sum(not recipe.level(g).integer for g in groups)} groups promoted, "
               f"INT8 {int8_path.stat().st_size / 2**20:.1f} MiB")

    progress("[6/8] trials for the report (full corpus; batch-1 speed side by side)")
    trials = _report_trials(bench, base, recipe, int8_path, mode, max(20, latency_iterations // 2), progress)
    steps.done(f"{len(trials)} trials")

    progress("[7/8] final accuracy and latency")
    int8 = OrtRunner(int8_path, tokenizer)
    int8_embeddings = int8.embed(texts)
    held = evalset.heldout
    accuracy = {
        "ort-fp32 (all)": agreement(reference, OrtRunner(fp32_path, tokenizer).embed(texts)),
        "ort-int8 (all)": agreement(reference, int8_embeddings),
        "ort-int8 (held out)": agreement(reference[held], int8_embeddings[held]),
        "ort-int8 (batch 32, padded)": agreement(reference, int8.embed(texts, batch_size=32)),
    }
    latency = _latency(fp32_path, fused_path, int8_path, encoder, tokenizer, latency_iterations)
    steps.done(f"INT8 cos mean {accuracy['ort-int8 (all)']['cosine_mean']:.4f}, "
               f"b1 x{latency['ratios']['int8_vs_ort_fp32_b1']:.2f} vs ORT FP32")

    progress("[8/8] write model directory")
    shutil.copyfile(tokenizer_file(), staging / manifest.TOKENIZER_FILE)
    quantization = {**recipe.describe(groups), "fused_operators": fused_counts,
                    "sensitivity_mode": mode, "report": manifest.REPORT_JSON}
    manifest.write_manifest(staging, quantization)
    sizes = {"bytes": {manifest.FP32_FILE: fp32_path.stat().st_size, manifest.INT8_FILE: int8_path.stat().st_size},
             "ratio": int8_path.stat().st_size / fp32_path.stat().st_size}
    final = accuracy["ort-int8 (all)"]
    speedups = {"vs_ort_fp32": latency["ratios"]["int8_vs_ort_fp32_b1"],
                "vs_torch": latency["ratios"]["int8_vs_torch_b1"]}
    checks = targets.checks(final, sizes["ratio"], speedups)
    values = {**final, "size_ratio": sizes["ratio"], "speedup_vs_ort_fp32": speedups["vs_ort_fp32"],
              "speedup_vs_torch": speedups["vs_torch"]}
    token_counts = tokenizer.token_counts(texts)
    shutil.rmtree(work)
    report = {
        "format": manifest.FORMAT,
        "model": MODEL_NAME,
        "build_seconds": steps.elapsed,
        "sensitivity_mode": mode,
        "corpus": {"sentences": len(texts), "calibration": len(calibration), "heldout": len(held),
                   "tokens": {"min": int(min(token_counts)), "median": int(np.median(token_counts)),
                              "max": int(max(token_counts))}},
        "accuracy": accuracy,
        "sizes": sizes,
        "latency": latency,
        "targets": [{"target": k, "value": values[k], "threshold": getattr(targets, k), "met": v}
                    for k, v in checks.items()],
        "targets_met": all(checks.values()),
        "sensitivity": [e.as_dict() for e in rankings[Level.DYNAMIC]],
        "sensitivity_static": [e.as_dict() for e in rankings[Level.STATIC]],
        "sensitivity_chosen": [e.as_dict() for e in ranking],
        "sensitivity_blockwise": [e.as_dict() for e in blockwise_ranking],
        "greedy": greedy_steps,
        "promotion_speed": promotion_speed,
        "trials": trials,
        "quantization": quantization,
    }
    write_report(staging, report)
    steps.done("report written")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=None,
                        help=f"model directory to write (default: {DEFAULT_OUT}, or models/smollm2-135m-instruct)")
    parser.add_argument("--force", action="store_true", help="rebuild even if OUT/model.json exists")
    parser.add_argument("--sensitivity", choices=SENSITIVITY_MODES, default="fast",
                        help="fast: per-group analysis on the calibration subset (default); "
                             "full: on every report sentence, at dynamic and blockwise level")
    parser.add_argument("--report-sentences", type=int, default=200,
                        help="sentences of the evaluation corpus to report on (default: 200)")
    parser.add_argument("--calibration-sentences", type=int, default=48,
                        help="sentences that drive the sensitivity analysis and search (default: 48)")
    parser.add_argument("--latency-iterations", type=int, default=100,
                        help="batch-1 timing rounds in the report (default: 100)")
    parser.add_argument("--strict", action="store_true",
                        help="exit with status 3 when the built model misses a target")


def run(args: argparse.Namespace) -> int:
    out = build_model_dir(args.out or DEFAULT_OUT, force=args.force, report_sentences=args.report_sentences,
                          sensitivity_mode=args.sensitivity, calibration_sentences=args.calibration_sentences,
                          latency_iterations=args.latency_iterations)
    return missed_targets(out) if args.strict else 0
