"""Candidate routing settings, their simulated figures, and the recommendation for a goal.

Contract: ``CandidateGrid`` is the cross product of the values to try for ``threshold_ms``,
hedging (``hedge_after_ms`` in ms, ``"threshold"`` for the default of hedging at the threshold,
``"off"`` for no hedging), ``recover_ratio``, ``recover_probes``, ``statistic`` and ``window_ms``;
every other setting comes from a base ``RoutingSettings``, and each candidate is validated as a
``RoutingSettings`` (``GridError`` names a bad value). ``default_grid`` derives thresholds from the
trace's edge RTTs and a hedge delay from the goal. ``evaluate`` simulates each candidate, and
those that meet the goal again with a slower and a faster edge (robustness what-ifs);
``recommend`` ranks them for the goal and returns the best; when none meets the goal, the closest
(smallest summed relative shortfall) with ``met=False``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from itertools import product

from pydantic import ValidationError

from gateway.config import RoutingSettings
from gateway.tuning.goal import Goal
from gateway.tuning.simulator import simulate
from gateway.tuning.summary import Summary, quantile
from gateway.tuning.workload import Workload

__all__ = ["CandidateGrid", "Evaluation", "GridError", "HedgeChoice", "Recommendation", "default_grid",
           "describe", "evaluate", "recommend", "tuned_fields"]

HedgeChoice = float | str
"""Milliseconds, ``"threshold"`` (hedge at ``threshold_ms``) or ``"off"`` (no hedging)."""

TUNED_FIELDS = ("threshold_ms", "hedging", "hedge_after_ms", "statistic", "window_ms", "recover_ratio",
                "recover_probes")


class GridError(ValueError):
    """A candidate value that is not a valid routing setting."""


def tuned_fields(settings: RoutingSettings) -> dict[str, object]:
    """The settings ``edgecloud tune`` chooses, by name (what the YAML snippet carries)."""
    return {name: getattr(settings, name) for name in TUNED_FIELDS}


def describe(settings: RoutingSettings) -> str:
    """A one-line label, e.g. ``threshold 250 ms, hedge 230 ms, p95/2000 ms, recover 0.7 x 3``."""
    hedge = f"hedge {settings.hedge_after_s * 1000:g} ms" if settings.hedging else "no hedge"
    return (f"threshold {settings.threshold_ms:g} ms, {hedge}, {settings.statistic}/{settings.window_ms:g} ms, "
            f"recover {settings.recover_ratio:g} x {settings.recover_probes}")


@dataclass(frozen=True)
class CandidateGrid:
    thresholds_ms: tuple[float, ...]
    hedge_after: tuple[HedgeChoice, ...] = ("threshold",)
    recover_ratios: tuple[float, ...] = ()
    """Empty: the base setting."""
    recover_probes: tuple[int, ...] = ()
    statistics: tuple[str, ...] = ()
    windows_ms: tuple[float, ...] = ()

    def __len__(self) -> int:
        return math.prod(max(1, len(values)) for values in (
            self.thresholds_ms, self.hedge_after, self.recover_ratios, self.recover_probes, self.statistics,
            self.windows_ms))

    def candidates(self, base: RoutingSettings) -> Iterator[RoutingSettings]:
        """Every distinct combination, validated, in a stable order (thresholds outermost); a hedge
        delay equal to the threshold is the same candidate as ``"threshold"``."""
        seen: set[tuple] = set()
        for threshold, hedge, ratio, probes, statistic, window in product(
                self.thresholds_ms, self.hedge_after or ("threshold",), self.recover_ratios or (base.recover_ratio,),
                self.recover_probes or (base.recover_probes,), self.statistics or (base.statistic,),
                self.windows_ms or (base.window_ms,)):
            update: dict[str, object] = {"threshold_ms": threshold, "recover_ratio": ratio,
                                         "recover_probes": probes, "statistic": statistic, "window_ms": window}
            if hedge == "off":
                update.update(hedging=False, hedge_after_ms=None)
            elif hedge == "threshold":
                update.update(hedging=True, hedge_after_ms=None)
            elif isinstance(hedge, int | float):
                update.update(hedging=True, hedge_after_ms=float(hedge))
            else:
                raise GridError(f"hedge_after {hedge!r}: expected milliseconds, 'threshold' or 'off'")
            try:
                settings = RoutingSettings.model_validate({**base.model_dump(), **update})
            except ValidationError as exc:
                problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
                raise GridError(f"candidate {update}: {problems}") from None
            key = (settings.threshold_ms, settings.hedging, settings.hedging and settings.hedge_after_s,
                   settings.statistic, settings.window_ms, settings.recover_ratio, settings.recover_probes)
            if key not in seen:
                seen.add(key)
                yield settings


def _round_to(value: float, step: float) -> float:
    return max(step, round(value / step) * step)


def _spread(derived: list[float], anchors: list[float], step: float = 5.0, gap: float = 0.05) -> tuple[float, ...]:
    """``anchors`` plus the ``derived`` values not within ``gap`` (relative) of a value already kept."""
    kept = sorted({_round_to(a, step) for a in anchors})
    for value in sorted(_round_to(d, step) for d in derived):
        if all(abs(value - k) > gap * k for k in kept):
            kept.append(value)
    return tuple(sorted(kept))


def default_grid(workload: Workload, goal: Goal, base: RoutingSettings, *,
                 recorded_threshold_ms: float | None = None) -> CandidateGrid:
    """The grid tried when none is given.

    Thresholds: above the edge RTT levels seen (1.1x and 1.3x its p50/p75/p90/p95/p99), a
    geometric ladder from 2x its p25 to 1.25x its p99 (which rarely leaves the edge), the base and
    recorded thresholds and the goal's latency bound. Hedging: at the threshold, and at 95% and
    80% of ``bound - cloud p90`` (a hedged request then still meets a latency bound). Recovery:
    ratios 0.5/0.7/0.9 and 3/5/8 probes. Statistic and window: the base's.
    """
    edge_ms = sorted(r * 1000.0 for r in workload.edge.rtts_s)
    low, high = 2.0 * quantile(edge_ms, 0.25), 1.25 * quantile(edge_ms, 0.99)
    steps = 5
    ladder = [low * (high / low) ** (k / (steps - 1)) for k in range(steps)] if high > low > 0 else [high]
    levels = [m * quantile(edge_ms, q) for q in (0.5, 0.75, 0.9, 0.95, 0.99) for m in (1.1, 1.3)]
    bound = goal.latency_bound_ms
    anchors = [base.threshold_ms] + [v for v in (bound, recorded_threshold_ms) if v is not None]
    hedges: list[HedgeChoice] = ["threshold"]
    if bound is not None:
        room = bound - quantile(sorted(r * 1000.0 for r in workload.cloud.rtts_s), 0.90)
        for fraction in (0.95, 0.8):
            if room * fraction >= 5:
                hedges.append(math.floor(room * fraction / 5) * 5.0)
    return CandidateGrid(_spread(ladder + levels, anchors), tuple(dict.fromkeys(hedges)), (0.5, 0.7, 0.9), (3, 5, 8))


@dataclass(frozen=True)
class Evaluation:
    index: int
    """Position in the grid's order."""
    settings: RoutingSettings
    summary: Summary
    """Simulated on the trace as recorded: the figures reported as "simulated"."""
    scenarios: tuple[tuple[float, Summary], ...]
    """``(edge RTT factor, figures)`` of the robustness what-ifs (empty when off, or when the
    candidate already fails on the trace as recorded)."""
    violations: tuple[str, ...]
    """The goal's constraints this candidate breaks, on the trace or in a what-if (empty: it meets the goal)."""

    @property
    def feasible(self) -> bool:
        return not self.violations

    @property
    def worst_edge_share(self) -> float:
        """The lowest edge share over the trace and the what-ifs."""
        return min([self.summary.edge_share] + [s.edge_share for _, s in self.scenarios])

    @property
    def worst_transitions(self) -> int:
        """The most route transitions over the trace and the what-ifs."""
        return max([self.summary.transitions] + [s.transitions for _, s in self.scenarios])


def evaluate(workload: Workload, grid: CandidateGrid, goal: Goal, base: RoutingSettings, *,
             robustness: float = 0.1, overhead_ms: float = 0.0,
             progress: Callable[[int, int], None] | None = None) -> list[Evaluation]:
    """Simulate every candidate of ``grid`` on ``workload``; ``progress(done, total)`` after each.

    With ``robustness`` r > 0, a candidate that meets the goal on the trace is simulated again with
    every edge RTT multiplied by ``1 - r`` and ``1 + r``, and must meet the goal there too: settings
    that only work because the edge's RTT sits just under a threshold on this one recording are
    not recommended.
    """
    if not 0 <= robustness < 1:
        raise ValueError(f"robustness {robustness}: must be in [0, 1)")
    factors = (1 - robustness, 1 + robustness) if robustness > 0 else ()
    variants = [(f, workload.with_edge_scaled(f)) for f in factors]
    candidates = list(grid.candidates(base))
    evaluations = []
    for index, settings in enumerate(candidates):
        summary = simulate(workload, settings, overhead_ms=overhead_ms).summary
        violations = goal.violations(summary)
        scenarios: list[tuple[float, Summary]] = []
        if not violations:
            for factor, variant in variants:
                figures = simulate(variant, settings, overhead_ms=overhead_ms).summary
                scenarios.append((factor, figures))
                violations += tuple(f"edge x{factor:g}: {v}" for v in goal.violations(figures))
        evaluations.append(Evaluation(index, settings, summary, tuple(scenarios), violations))
        if progress is not None:
            progress(index + 1, len(candidates))
    return evaluations


@dataclass(frozen=True)
class Recommendation:
    best: Evaluation
    met: bool
    """Whether ``best`` meets the goal (False: none did; ``best`` is the closest)."""
    ranked: tuple[Evaluation, ...]
    """Every evaluation, best first (see ``recommend``)."""


def _shortfall(goal: Goal, summary: Summary) -> float:
    total = 0.0
    for c in goal.constraints:
        if not c.holds(summary):
            value = summary.metric(c.metric)
            total += math.inf if math.isnan(value) else abs(value - c.limit) / max(abs(c.limit), 1e-9)
    return total


def recommend(evaluations: Sequence[Evaluation], goal: Goal, current: RoutingSettings | None = None) -> Recommendation:
    """Rank ``evaluations`` and pick the best.

    Those meeting the goal come first: the most edge share (the worst over the trace and the
    what-ifs) wins, shares within ``goal.share_tolerance`` of the best count as tied, and ties go
    to fewer route transitions (worst case), then fewer hedges, then lower p99; among candidates
    whose figures are the same, to the ``current`` setting (what runs now: no change without a
    reason), then to the most lenient threshold (the trace showed nothing that needs a tight one),
    then grid order. The rest follow by their summed relative shortfall against the goal.
    """
    if not evaluations:
        raise ValueError("no candidates were evaluated")
    feasible = [e for e in evaluations if e.feasible]
    rest = sorted((e for e in evaluations if not e.feasible),
                  key=lambda e: (_shortfall(goal, e.summary), -e.summary.edge_share, e.index))
    if feasible:
        best_share = max(e.worst_edge_share for e in feasible)

        running = tuned_fields(current) if current is not None else None

        def key(e: Evaluation) -> tuple:
            tied = e.worst_edge_share >= best_share - goal.share_tolerance - 1e-12
            is_current = running is not None and tuned_fields(e.settings) == running
            return (0 if tied else 1, 0.0 if tied else -e.worst_edge_share, e.worst_transitions,
                    e.summary.hedge_rate, e.summary.p99_ms, -e.worst_edge_share, not is_current,
                    -e.settings.threshold_ms, e.index)

        feasible.sort(key=key)
    ranked = tuple(feasible + rest)
    return Recommendation(ranked[0], bool(feasible), ranked)
