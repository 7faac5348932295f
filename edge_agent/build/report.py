"""The quantization report: ``report.json`` (everything) and ``report.txt`` (the readable tables).

Contract: ``render_text(report)`` turns the dict that ``pipeline`` assembles into aligned plain
text tables; ``write_report(out_dir, report)`` writes both files and returns the text.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edge_agent.build.manifest import REPORT_JSON, REPORT_TXT

MIB = 2 ** 20


def table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    def fmt(value: Any) -> str:
        if isinstance(value, bool):
            return "yes" if value else "NO"
        if isinstance(value, float):
            return f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}"
        return "" if value is None else str(value)

    cells = [[fmt(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in cells]
    return "\n".join(lines)


def _accuracy_rows(accuracy: dict[str, dict[str, float]]) -> list[list[Any]]:
    return [[name, m["cosine_mean"], m["cosine_min"], m["cosine_p1"], m["spearman"], m["nn_agreement"]]
            for name, m in accuracy.items()]


def _trial_row(t: dict[str, Any]) -> list[Any]:
    m = t.get("full") or t["calibration"]
    return [t["name"], t["int8_bytes"] / MIB, t["size_ratio"], m["cosine_mean"], m["cosine_min"],
            m["spearman"], m["nn_agreement"], t.get("speedup_vs_ort_fp32_b1")]


def render_text(report: dict[str, Any]) -> str:
    out = []
    corpus = report["corpus"]
    out.append(f"Quantization report: {report['model']} ({report['format']})")
    out.append(f"built in {report['build_seconds']:.1f} s, sensitivity mode {report['sensitivity_mode']}, "
               f"{corpus['sentences']} sentences ({corpus['calibration']} calibration, "
               f"{corpus['heldout']} held out), tokens min/median/max "
               f"{corpus['tokens']['min']}/{corpus['tokens']['median']}/{corpus['tokens']['max']}")
    out.append("\nAccuracy vs torch FP32 sentence embeddings (batch 1 unless named)")
    out.append(table(_accuracy_rows(report["accuracy"]),
                     ["variant", "cos mean", "cos min", "cos p1", "spearman", "nn agree"]))
    sizes = report["sizes"]
    out.append("\nFiles")
    out.append(table([[k, v / MIB] for k, v in sizes["bytes"].items()] + [["int8 / fp32", sizes["ratio"]]],
                     ["file", "MiB"]))
    lat = report["latency"]
    out.append(f"\nLatency, threads {lat['threads']}, interleaved; batch 1 = {lat['batch1_tokens']} tokens, "
               f"batch {lat['batch_n']} padded to {lat['batchn_tokens']} tokens")
    out.append(table([[name, r["b1_p50_ms"], r["b1_p99_ms"], r["bn_p50_ms"]] for name, r in lat["rows"].items()],
                     ["runtime", "b1 p50 ms", "b1 p99 ms", f"b{lat['batch_n']} p50 ms"]))
    out.append(table([[k, v] for k, v in lat["ratios"].items()], ["ratio (p50)", "x"]))
    out.append("\nTargets")
    out.append(table([[t["target"], t["value"], t["threshold"], t["met"]] for t in report["targets"]],
                     ["target", "value", "threshold", "met"]))
    static = {e["group"]: e["score"] for e in report.get("sensitivity_static", [])}
    chosen = {e["group"]: e["level"] for e in report.get("sensitivity_chosen", [])}
    out.append("\nSensitivity: one group at dynamic INT8, all others FP32 (most damaging first); its score "
               "at static INT8, and the level the search starts it at")
    out.append(table([[e["group"], e["cosine_mean_drop"] * 1e4, e["cosine_min_drop"] * 1e4,
                       e["spearman_drop"] * 1e4, e["score"], static.get(e["group"], ""),
                       chosen.get(e["group"], e["level"])] for e in report["sensitivity"]],
                     ["group", "mean drop e-4", "min drop e-4", "spearman drop e-4", "score", "static score",
                      "start"]))
    out.append("\nGreedy search (calibration set)")
    out.append(table([[", ".join(s["promoted"]) or "(start)", s["calibration"]["cosine_mean"],
                       s["calibration"]["cosine_min"], s["calibration"]["spearman"],
                       s["calibration_batched"]["cosine_min"], s["size_ratio"]]
                      for s in report["greedy"]],
                     ["promoted", "cos mean", "cos min", "spearman", "batched cos min", "size ratio"]))
    speed = report.get("promotion_speed")
    if speed and speed.get("b1_p50_ms"):
        p50 = speed["b1_p50_ms"]
        out.append(f"\nPromoted groups on this machine: blockwise INT8 {p50['blockwise']:.2f} ms at batch 1, with "
                   f"{', '.join(speed['float'])} FP32 {p50['float']:.2f} ms: "
                   f"{'those groups FP32' if speed['chosen'] == 'float' else 'blockwise'} chosen")
    elif speed:
        out.append(f"\nPromoted groups stay blockwise INT8: {speed.get('why', '')}")
    out.append("\nTrials (full corpus, batch 1; search speedup = ORT FP32 p50 / trial p50 in the search's own "
               "interleaved timing run, for comparing trials with each other. The built model's speed-up is "
               "the one in Targets, from the Latency run above.)")
    out.append(table([_trial_row(t) for t in report["trials"]],
                     ["trial", "MiB", "ratio", "cos mean", "cos min", "spearman", "nn", "search speedup"]))
    q = report["quantization"]
    out.append(f"\nRecipe: {q['method']}; per_channel={q['per_channel']} reduce_range={q['reduce_range']}; "
               f"static {q.get('static_nodes', 0)}, dynamic {q['dynamic_nodes']}, blockwise {q['blockwise_nodes']}, "
               f"float {q['excluded_nodes']} groups")
    for level, names in q["groups"].items():
        if names:
            out.append(f"  {level}: {', '.join(names)}")
    return "\n".join(out) + "\n"


def render_summary(report: dict[str, Any], report_path: Path) -> str:
    """The few lines a console shows after a build (the whole report is in the file)."""
    int8 = report["accuracy"].get("ort-int8 (all)") or next(iter(report["accuracy"].values()))
    ratios = report["latency"]["ratios"]
    missed = [t["target"] for t in report["targets"] if not t["met"]]
    return "\n".join([
        f"INT8 vs torch FP32: cos mean {int8['cosine_mean']:.4f}, min {int8['cosine_min']:.4f}, "
        f"spearman {int8['spearman']:.4f}; file {report['sizes']['ratio']:.3f} of FP32",
        f"INT8 speed-up at batch 1: {ratios['int8_vs_ort_fp32_b1']:.2f}x ORT FP32, "
        f"{ratios['int8_vs_torch_b1']:.2f}x torch",
        "targets: all met" if not missed else f"targets missed: {', '.join(missed)}",
        f"full report: {report_path}",
    ]) + "\n"


def write_report(out_dir: Path, report: dict[str, Any]) -> str:
    (out_dir / REPORT_JSON).write_text(json.dumps(report, indent=2) + "\n")
    text = render_text(report)
    (out_dir / REPORT_TXT).write_text(text)
    return text


def missed_targets(out_dir: Path) -> int:
    """``--strict``: print the targets a built directory's ``report.json`` says it missed; 3 when
    any was, else 0."""
    report = json.loads((Path(out_dir) / REPORT_JSON).read_text())
    missed = [t["target"] for t in report["targets"] if not t["met"]]
    if missed:
        print(f"targets missed: {', '.join(missed)}")
        return 3
    return 0
