"""Goals: parsing, and which constraints a run breaks."""

from __future__ import annotations

import pytest

from gateway.tuning.goal import Constraint, Goal, GoalError
from gateway.tuning.summary import Summary, quantile


def figures(p99_ms=200.0, edge_share=0.8, hedge_rate=0.02, transitions=2) -> Summary:
    return Summary(100, edge_share, hedge_rate, transitions, 10, 50, 100, p99_ms, p99_ms, p99_ms, 30)


@pytest.mark.parametrize(("text", "expected"), [
    ("p99<=250", [Constraint("p99", "<=", 250)]),
    (" P99 <= 250 ms ", [Constraint("p99", "<=", 250)]),
    ("p99<=250, p50<40", [Constraint("p99", "<=", 250), Constraint("p50", "<", 40)]),
    ("p999<=900 and mean<=30", [Constraint("p999", "<=", 900), Constraint("mean", "<=", 30)]),
    ("edge_share>=80%", [Constraint("edge_share", ">=", 0.8)]),
    ("hedge_rate<=0.1", [Constraint("hedge_rate", "<=", 0.1)]),
])
def test_goals_parse(text, expected):
    assert list(Goal.parse(text).constraints) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("", "the goal is empty"),
    ("p99", "expected METRIC OP VALUE"),
    ("p97<=250", "unknown metric 'p97'"),
    ("p99<=25%", "p99 is not measured in %"),
    ("edge_share>=80ms", "edge_share is not measured in ms"),
    ("edge_share>=2", "a share between 0 and 1"),
])
def test_bad_goals_say_what_is_wrong(text, message):
    with pytest.raises(GoalError, match=message):
        Goal.parse(text)


def test_a_hedge_budget_is_added_unless_the_goal_has_one():
    assert Goal.parse("p99<=250", max_hedge_rate=0.05).constraints[-1] == Constraint("hedge_rate", "<=", 0.05)
    assert Goal.parse("p99<=250,hedge_rate<=0.2", max_hedge_rate=0.05).constraints[-1].limit == 0.2
    with pytest.raises(GoalError):
        Goal.parse("p99<=250", share_tolerance=1.5)


def test_violations_list_what_a_run_breaks():
    goal = Goal.parse("p99<=250,edge_share>=0.5", max_hedge_rate=0.05)
    assert goal.violations(figures()) == ()
    assert goal.violations(figures(p99_ms=260, hedge_rate=0.1)) == (
        "p99=260 (want <= 250)", "hedge_rate=0.1 (want <= 0.05)")
    assert str(goal) == "p99 <= 250 ms, edge_share >= 50.0%, hedge_rate <= 5.0%"
    assert (goal.latency_bound_ms, goal.latency_metric) == (250, "p99")
    assert Goal.parse("edge_share>=0.5").latency_bound_ms is None


def test_summary_uses_nearest_rank_quantiles_like_the_gateway():
    assert quantile([5, 1, 4, 2, 3], 0.5) == 3 and quantile([1, 2, 3, 4], 0.99) == 4 and quantile([1], 0.01) == 1
    summary = Summary.of([(0.01, "edge", False), (0.02, "cloud", True), (0.03, "edge", False), (0.04, "cloud", False)],
                         transitions=3)
    assert (summary.requests, summary.edge_share, summary.hedge_rate, summary.transitions) == (4, 0.5, 0.25, 3)
    assert summary.p50_ms == pytest.approx(20) and summary.max_ms == pytest.approx(40)
    assert summary.mean_ms == pytest.approx(25) and summary.metric("p99") == summary.p99_ms
    with pytest.raises(KeyError):
        summary.metric("p97")
