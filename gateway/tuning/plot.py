"""The PNG ``edgecloud tune`` writes: what the trace looked like and why the threshold was chosen.

Contract: ``write_plot(path, workload, recommendation, replay, goal)`` draws three panels —
the trace over time (edge and cloud RTTs, the chosen threshold and hedge delay, the spans the
replay of the recommendation spent on the cloud), the RTT distribution per backend with the chosen
threshold, and edge share and p99 against threshold (the recommendation's other settings held) —
and saves them as PNG. It needs matplotlib (the ``tune`` extra); without it ``PlotUnavailable``
is raised and nothing is written. matplotlib's pyplot (global state, GUI backends) is not used.
"""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

from gateway.tuning.goal import Goal
from gateway.tuning.search import Recommendation, tuned_fields
from gateway.tuning.simulator import SimResult
from gateway.tuning.workload import Workload

__all__ = ["PlotUnavailable", "write_plot"]

EDGE_COLOUR, CLOUD_COLOUR, CHOSEN_COLOUR = "tab:green", "tab:blue", "tab:red"


class PlotUnavailable(RuntimeError):
    """matplotlib is not installed."""


def _sweep(recommendation: Recommendation) -> list[tuple[float, float, float, bool]]:
    """``(threshold, edge share %, p99 ms, meets the goal)`` of the candidates that differ from the
    best only in threshold."""
    best = tuned_fields(recommendation.best.settings)
    best.pop("threshold_ms")
    rows = {}
    for evaluation in recommendation.ranked:
        fields = tuned_fields(evaluation.settings)
        threshold = fields.pop("threshold_ms")
        if fields == best:
            rows[threshold] = (threshold, evaluation.summary.edge_share * 100, evaluation.summary.p99_ms,
                               evaluation.feasible)
    return [rows[t] for t in sorted(rows)]


def write_plot(path: str | Path, workload: Workload, recommendation: Recommendation, replay: SimResult,
               goal: Goal) -> None:
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise PlotUnavailable("the plot needs matplotlib: pip install 'edgecloud[tune]'") from exc

    settings = recommendation.best.settings
    threshold = settings.threshold_ms
    hedge_ms = settings.hedge_after_s * 1000 if settings.hedging else None
    t0 = workload.start
    fig = Figure(figsize=(12, 8), layout="constrained")
    grid = fig.add_gridspec(2, 2)
    timeline, dist, sweep = fig.add_subplot(grid[0, :]), fig.add_subplot(grid[1, 0]), fig.add_subplot(grid[1, 1])

    # the trace over time, with where the replayed policy sent traffic
    for series, colour, name in ((workload.edge, EDGE_COLOUR, "edge RTT"), (workload.cloud, CLOUD_COLOUR, "cloud RTT")):
        timeline.scatter([s - t0 for s in series.starts], [r * 1000 for r in series.rtts_s], s=4, c=colour,
                         label=name, alpha=0.6)
    shaded = False
    for (start, state), (end, _) in pairwise([*replay.states, (workload.end, "")]):
        if state == "cloud_fallback":
            timeline.axvspan(start - t0, end - t0, color=CLOUD_COLOUR, alpha=0.12, lw=0,
                             label=None if shaded else "replay routes to the cloud")
            shaded = True
    timeline.axhline(threshold, color=CHOSEN_COLOUR, lw=1.2, label=f"threshold {threshold:g} ms")
    if hedge_ms is not None and hedge_ms != threshold:
        timeline.axhline(hedge_ms, color=CHOSEN_COLOUR, lw=1, ls="--", label=f"hedge after {hedge_ms:g} ms")
    timeline.set(xlabel="seconds into the trace", ylabel="RTT (ms)",
                 title="trace: shaded = the recommendation's replay routes to the cloud" if shaded else
                 "trace: the recommendation's replay keeps all traffic on the edge")
    timeline.legend(loc="upper left", fontsize="small")

    # distribution per backend
    edge_ms = [r * 1000 for r in workload.edge.rtts_s]
    cloud_ms = [r * 1000 for r in workload.cloud.rtts_s]
    top = max(edge_ms + cloud_ms + [threshold]) * 1.05
    bins = [top * k / 60 for k in range(61)]
    dist.hist(edge_ms, bins=bins, color=EDGE_COLOUR, alpha=0.6, label=f"edge ({len(edge_ms)})")
    dist.hist(cloud_ms, bins=bins, color=CLOUD_COLOUR, alpha=0.6, label=f"cloud ({len(cloud_ms)})")
    dist.axvline(threshold, color=CHOSEN_COLOUR, lw=1.2, label="chosen threshold")
    dist.set(xlabel="RTT (ms)", ylabel="samples", title="latency distribution per backend", yscale="log")
    dist.legend(fontsize="small")

    # edge share and p99 against threshold
    rows = _sweep(recommendation)
    if rows:
        xs = [r[0] for r in rows]
        sweep.plot(xs, [r[1] for r in rows], "o-", color=EDGE_COLOUR, label="edge share")
        sweep.set(xlabel="threshold (ms)", ylabel="edge share (%)", title="simulated, other settings as chosen")
        p99 = sweep.twinx()
        p99.plot(xs, [r[2] for r in rows], "s--", color=CLOUD_COLOUR, label="p99")
        p99.set_ylabel("p99 latency (ms)")
        failing = [r for r in rows if not r[3]]
        if failing:
            sweep.scatter([r[0] for r in failing], [r[1] for r in failing], s=120, facecolors="none",
                          edgecolors=CHOSEN_COLOUR, label="fails the goal", zorder=3)
        bound = goal.latency_bound_ms
        if bound is not None:
            p99.axhline(bound, color="grey", lw=1, ls=":", label=f"goal {goal.latency_metric} {bound:g} ms")
        sweep.axvline(threshold, color=CHOSEN_COLOUR, lw=1.2)
        handles = sweep.get_legend_handles_labels()
        more = p99.get_legend_handles_labels()
        # Below the axes: inside, it would cover points of one of the two axes (it can only avoid its own).
        sweep.legend(handles[0] + more[0], handles[1] + more[1], fontsize="small", loc="upper center",
                     bbox_to_anchor=(0.5, -0.2), ncol=2)
    fig.savefig(Path(path), dpi=100, format="png")
