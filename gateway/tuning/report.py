"""Text outputs of ``edgecloud tune``: the candidates table, the YAML snippet and a JSON record.

Contract: ``candidates_table(recommendation, top)`` returns the ranked candidates (best first,
the recommended one marked ``*``) as aligned plain text, at most ``top`` rows plus a line saying
how many were left out. ``yaml_snippet(settings, summary, goal)`` returns YAML with a ``routing:``
section carrying the tuned fields (a valid gateway config on its own, so
``edgecloud config check FILE`` accepts it; its indented lines paste under an
existing ``routing:``), headed by comments with the simulated figures. ``results_json`` is the
whole evaluation as plain data.
"""

from __future__ import annotations

from typing import Any

import yaml

from gateway.config import RoutingSettings
from gateway.tuning.goal import Goal
from gateway.tuning.search import Evaluation, Recommendation, describe, tuned_fields
from gateway.tuning.summary import Summary

__all__ = ["candidates_table", "results_json", "summary_line", "yaml_snippet"]

_COLUMNS = ("", "rank", "threshold", "hedge", "statistic", "recover", "edge %", "worst", "p50", "p95", "p99",
            "hedged %", "switches", "goal")


def _hedge(settings: RoutingSettings) -> str:
    return f"{settings.hedge_after_s * 1000:g}" if settings.hedging else "off"


def _row(rank: int, evaluation: Evaluation, chosen: bool) -> tuple[str, ...]:
    s, m = evaluation.settings, evaluation.summary
    return ("*" if chosen else "", str(rank), f"{s.threshold_ms:g}", _hedge(s), f"{s.statistic}/{s.window_ms:g}",
            f"{s.recover_ratio:g}x{s.recover_probes}", f"{m.edge_share * 100:.1f}",
            f"{evaluation.worst_edge_share * 100:.1f}" if evaluation.scenarios else "-", f"{m.p50_ms:.0f}",
            f"{m.p95_ms:.0f}", f"{m.p99_ms:.0f}", f"{m.hedge_rate * 100:.1f}", str(m.transitions),
            "ok" if evaluation.feasible else "; ".join(evaluation.violations))


def candidates_table(recommendation: Recommendation, top: int | None = 30) -> str:
    """The ranked candidates; threshold/hedge/latencies in ms; ``worst`` is the lowest edge share
    over the robustness what-ifs (``-``: not run, the candidate failed on the trace already)."""
    ranked = recommendation.ranked
    shown = ranked if top is None else ranked[:top]
    rows = [_COLUMNS] + [_row(i + 1, e, e is recommendation.best) for i, e in enumerate(shown)]
    widths = [max(len(row[c]) for row in rows) for c in range(len(_COLUMNS) - 1)]
    lines = ["  ".join(cell.rjust(width) for cell, width in zip(row[:-1], widths, strict=True)) + "  " + row[-1]
             for row in rows]
    if len(shown) < len(ranked):
        lines.append(f"... {len(ranked) - len(shown)} more candidates (--top to show them)")
    return "\n".join(line.rstrip() for line in lines)


def summary_line(summary: Summary) -> str:
    return (f"edge {summary.edge_share:.1%}, p50 {summary.p50_ms:.0f} ms, p95 {summary.p95_ms:.0f} ms, "
            f"p99 {summary.p99_ms:.0f} ms, hedged {summary.hedge_rate:.1%}, {summary.transitions} switches "
            f"over {summary.requests} requests")


def yaml_snippet(settings: RoutingSettings, summary: Summary, goal: Goal, *, met: bool = True,
                 source: str = "") -> str:
    fields = tuned_fields(settings)
    if fields["hedge_after_ms"] is None:
        fields.pop("hedge_after_ms")  # hedge at the threshold: the default
    header = [
        f"# edgecloud tune: goal {goal}" + ("" if met else " (NOT met by any candidate: closest shown)"),
        f"# simulated on {source or 'the trace'}: {summary_line(summary)}",
        f"# {describe(settings)}",
        "# Paste the indented lines under routing: in the gateway config (or check this file:",
        "#   edgecloud config check FILE).",
    ]
    body = yaml.safe_dump({"routing": fields}, sort_keys=False, default_flow_style=False)
    return "\n".join(header) + "\n" + body


def results_json(recommendation: Recommendation, goal: Goal) -> dict[str, Any]:
    def row(evaluation: Evaluation) -> dict[str, Any]:
        return {"settings": tuned_fields(evaluation.settings), "summary": vars(evaluation.summary),
                "what_ifs": [{"edge_factor": f, "summary": vars(s)} for f, s in evaluation.scenarios],
                "violations": list(evaluation.violations)}

    return {"goal": str(goal), "met": recommendation.met, "recommended": row(recommendation.best),
            "candidates": [row(e) for e in recommendation.ranked]}
