"""What a recommendation must achieve: constraints on a run's figures, then as much edge as possible.

Contract: ``Goal.parse("p99<=250")`` reads comma-separated constraints ``METRIC OP VALUE`` with
``METRIC`` one of ``summary.METRICS`` (latencies in milliseconds, an optional ``ms`` suffix;
``edge_share``/``hedge_rate`` as fractions or with ``%``) and ``OP`` one of ``<= < >= >``; a
malformed goal raises ``GoalError`` saying which part. ``violations(summary)`` lists the
constraints a run breaks (empty: the run meets the goal). Among runs that meet it, the best serves
the most on the edge; runs within ``share_tolerance`` of the best share count as tied (the
ranking itself is ``search.recommend``'s).
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass

from gateway.tuning.summary import LATENCY_METRICS, METRICS, Summary

__all__ = ["Constraint", "Goal", "GoalError"]

_OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le, "<": operator.lt, ">=": operator.ge, ">": operator.gt}
_TERM = re.compile(r"^\s*([a-z0-9_]+)\s*(<=|>=|<|>)\s*([0-9]*\.?[0-9]+)\s*(ms|%)?\s*$")


class GoalError(ValueError):
    """A goal that cannot be parsed; the message names the offending part."""


@dataclass(frozen=True)
class Constraint:
    metric: str
    op: str
    limit: float
    """Milliseconds for latencies; a fraction (0..1) for shares and rates."""

    def holds(self, summary: Summary) -> bool:
        value = summary.metric(self.metric)
        return not math.isnan(value) and _OPS[self.op](value, self.limit)

    def __str__(self) -> str:
        if self.metric in ("edge_share", "hedge_rate"):
            return f"{self.metric} {self.op} {self.limit:.1%}"
        return f"{self.metric} {self.op} {self.limit:g} ms"

    @classmethod
    def parse(cls, text: str) -> Constraint:
        match = _TERM.match(text.lower())
        if match is None:
            raise GoalError(f"{text.strip()!r}: expected METRIC OP VALUE, e.g. p99<=250")
        metric, op, raw, unit = match.groups()
        if metric not in METRICS:
            raise GoalError(f"{text.strip()!r}: unknown metric {metric!r}; known: {', '.join(METRICS)}")
        value = float(raw)
        fraction = metric in ("edge_share", "hedge_rate")
        if (fraction and unit == "ms") or (not fraction and unit == "%"):
            raise GoalError(f"{text.strip()!r}: {metric} is not measured in {unit}")
        if unit == "%":
            value /= 100.0
        if fraction and not 0 <= value <= 1:
            raise GoalError(f"{text.strip()!r}: {metric} is a share between 0 and 1 (or 0% and 100%)")
        return cls(metric, op, value)


@dataclass(frozen=True)
class Goal:
    constraints: tuple[Constraint, ...]
    share_tolerance: float = 0.005
    """Edge shares this close to the best count as tied (then fewer transitions win)."""

    @classmethod
    def parse(cls, text: str, *, max_hedge_rate: float | None = None, share_tolerance: float = 0.005) -> Goal:
        """Constraints from ``text``; ``max_hedge_rate`` adds ``hedge_rate <= X`` unless the text has one."""
        terms = [t for t in re.split(r",|\band\b", text) if t.strip()]
        if not terms:
            raise GoalError("the goal is empty; e.g. p99<=250")
        constraints = [Constraint.parse(term) for term in terms]
        if max_hedge_rate is not None and not any(c.metric == "hedge_rate" for c in constraints):
            constraints.append(Constraint("hedge_rate", "<=", max_hedge_rate))
        if not 0 <= share_tolerance < 1:
            raise GoalError(f"share tolerance {share_tolerance}: must be in [0, 1)")
        return cls(tuple(constraints), share_tolerance)

    @property
    def latency_bound_ms(self) -> float | None:
        """The tightest upper bound the goal puts on a latency metric, if any (for defaults and plots)."""
        bounds = [c.limit for c in self.constraints if c.metric in LATENCY_METRICS and c.op in ("<=", "<")]
        return min(bounds) if bounds else None

    @property
    def latency_metric(self) -> str:
        """The latency metric of ``latency_bound_ms`` (``p99`` when the goal names none)."""
        bound = self.latency_bound_ms
        for c in self.constraints:
            if c.metric in LATENCY_METRICS and c.limit == bound and c.op in ("<=", "<"):
                return c.metric
        return "p99"

    def violations(self, summary: Summary) -> tuple[str, ...]:
        return tuple(f"{c.metric}={summary.metric(c.metric):.4g} (want {c.op} {c.limit:g})"
                     for c in self.constraints if not c.holds(summary))

    def __str__(self) -> str:
        return ", ".join(str(c) for c in self.constraints)
