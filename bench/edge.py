"""Edge encoder latency: torch FP32 vs ONNX Runtime FP32 vs ONNX Runtime INT8, side by side.

``python -m bench.edge [--iterations N] [--model-dir DIR]``: for intra-op threads 1 and 2, and
for batch 1 (a 13-token sentence) and batch 32 (short everyday sentences, padded), the three
runtimes are called in turn (interleaved, so noise from other processes hits all alike). Prints
p50/p99 per case and the ratios the edge-model targets name; writes bench/results/edge.json.
Builds the model directory first if it is missing.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from bench.common import print_table, ratio, summarize, write_result
from edge_agent.build import build_model_dir
from edge_agent.build.corpus import BENCH_SENTENCE, bench_batch
from edge_agent.build.latency import interleaved
from edge_agent.build.manifest import FP32_FILE, INT8_FILE
from edge_agent.build.pipeline import DEFAULT_OUT
from edge_agent.build.runners import OrtRunner, TorchRunner, default_tokenizer
from edge_agent.build.targets import Targets

REPO = Path(__file__).resolve().parents[1]
RUNTIMES = ("torch-fp32", "ort-fp32", "ort-int8")


def _case(runners: dict[str, Any], batch: dict, iterations: int, budget_s: float) -> dict[str, dict]:
    samples = interleaved({name: (lambda r=r: r.forward(batch)) for name, r in runners.items()},
                          iterations, warmup=3, budget_s=budget_s)
    return {name: summarize(s) for name, s in samples.items()}


def run_bench(model_dir: Path, iterations: int, batch_iterations: int, budget_s: float,
              threads: tuple[int, ...] = (1, 2)) -> dict[str, Any]:
    tokenizer = default_tokenizer(model_dir / "tokenizer.json")
    one = tokenizer.encode([BENCH_SENTENCE])
    many = tokenizer.encode(bench_batch(32))
    encoder = TorchRunner(tokenizer).model
    rows, ratios = [], {}
    for n_threads in threads:
        runners = {
            "torch-fp32": TorchRunner(tokenizer, threads=n_threads, encoder=encoder),
            "ort-fp32": OrtRunner(model_dir / FP32_FILE, tokenizer, threads=n_threads),
            "ort-int8": OrtRunner(model_dir / INT8_FILE, tokenizer, threads=n_threads),
        }
        cases = {1: _case(runners, one, iterations, budget_s),
                 32: _case(runners, many, batch_iterations, budget_s)}
        for batch, stats in cases.items():
            for name in RUNTIMES:
                rows.append({"threads": n_threads, "batch": batch, "runtime": name, **stats[name]})
        ratios[f"threads_{n_threads}"] = {
            f"int8_vs_{ref}_b{batch}": ratio(cases[batch][ref.replace("_", "-")]["p50_ms"],
                                             cases[batch]["ort-int8"]["p50_ms"])
            for batch in cases for ref in ("ort_fp32", "torch_fp32")
        }
    return {
        "model_dir": str(model_dir),
        "batch1_sentence": BENCH_SENTENCE,
        "batch1_tokens": int(one["input_ids"].shape[1]),
        "batch32_tokens": int(many["input_ids"].shape[1]),
        "rows": rows,
        "ratios": ratios,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.edge", description=__doc__.split("\n")[0])
    parser.add_argument("--iterations", type=int, default=200, help="batch-1 rounds per case (default 200)")
    parser.add_argument("--batch-iterations", type=int, default=None,
                        help="batch-32 rounds per case (default: iterations / 10, at least 5)")
    parser.add_argument("--budget-seconds", type=float, default=25.0,
                        help="stop a case early after this long (default 25)")
    parser.add_argument("--model-dir", type=Path, default=REPO / DEFAULT_OUT)
    args = parser.parse_args(argv)
    model_dir = build_model_dir(args.model_dir)
    load_before = os.getloadavg()
    result = run_bench(model_dir, args.iterations,
                       args.batch_iterations or max(5, args.iterations // 10), args.budget_seconds)
    result["load_average"] = {"before": load_before, "after": os.getloadavg()}
    targets = Targets()
    result["targets"] = {"int8_vs_ort_fp32_b1": targets.speedup_vs_ort_fp32,
                         "int8_vs_torch_fp32_b1": targets.speedup_vs_torch}
    print_table([{k: v for k, v in row.items() if k in ("threads", "batch", "runtime", "n", "p50_ms", "p99_ms")}
                 for row in result["rows"]], title=f"edge encoder latency ({result['batch1_tokens']} tokens at batch 1)")
    print_table([{"threads": t.split("_")[1], **{k: round(v, 2) for k, v in r.items()}}
                 for t, r in result["ratios"].items()],
                title=f"p50 ratios (targets: x{targets.speedup_vs_ort_fp32} vs ORT FP32, "
                      f"x{targets.speedup_vs_torch} vs torch at batch 1)")
    print(f"\nload average before {load_before}, after {result['load_average']['after']}")
    print(f"wrote {write_result('edge', result)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
