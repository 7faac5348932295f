"""The candidates table, the YAML snippet (a valid gateway config), the JSON record and the PNG."""

from __future__ import annotations

import json
import sys

import pytest

from gateway.config import RoutingSettings, load_gateway_config
from gateway.tuning.goal import Goal
from gateway.tuning.plot import PlotUnavailable, write_plot
from gateway.tuning.report import candidates_table, results_json, yaml_snippet
from gateway.tuning.search import CandidateGrid, evaluate, recommend
from gateway.tuning.simulator import simulate
from tests.gateway.tuning.synthetic import steps, workload

WORKLOAD = workload(steps((3, 20), (6, 160), (7.5, 300), (1e9, 20)), steps((1e9, 50)))
GOAL = Goal.parse("p99<=300", max_hedge_rate=0.1)


@pytest.fixture(scope="module")
def recommendation():
    grid = CandidateGrid((150, 200, 250, 400), ("threshold", 230.0, "off"), (0.5, 0.9), (3,))
    return recommend(evaluate(WORKLOAD, grid, GOAL, RoutingSettings()), GOAL)


def test_the_table_ranks_marks_the_choice_and_says_what_was_left_out(recommendation):
    table = candidates_table(recommendation, top=5).splitlines()
    assert table[0].split() == ["rank", "threshold", "hedge", "statistic", "recover", "edge", "%", "worst", "p50",
                                "p95", "p99", "hedged", "%", "switches", "goal"]
    assert table[1].startswith("*") and table[1].split()[1:4] == ["1", "200", "200"]
    assert table[1].endswith("ok") and len(table) == 7
    assert table[-1] == f"... {len(recommendation.ranked) - 5} more candidates (--top to show them)"
    everything = candidates_table(recommendation, top=None)
    assert "hedge_rate=" in everything and " off " in everything and "more candidates" not in everything


def test_the_yaml_snippet_is_a_gateway_config_with_the_tuned_routing(recommendation, tmp_path):
    best = recommendation.best
    snippet = yaml_snippet(best.settings, best.summary, GOAL, source="trace.json")
    assert snippet.startswith("# edgecloud tune: goal p99 <= 300 ms, hedge_rate <= 10.0%\n# simulated on trace.json")
    assert "\nrouting:\n  threshold_ms: 200.0\n  hedging: true\n" in snippet
    assert "hedge_after_ms" not in snippet  # hedging at the threshold is the default
    (tmp_path / "routing.yaml").write_text(snippet)
    routing = load_gateway_config(tmp_path / "routing.yaml").routing
    assert routing == best.settings.model_copy(update={"probe_interval_ms": routing.probe_interval_ms})
    hedged = best.settings.model_copy(update={"hedge_after_ms": 180.0})
    assert "  hedge_after_ms: 180.0\n" in yaml_snippet(hedged, best.summary, GOAL, met=False)
    assert "NOT met" in yaml_snippet(hedged, best.summary, GOAL, met=False)


def test_the_json_record_has_every_candidate(recommendation):
    record = json.loads(json.dumps(results_json(recommendation, GOAL)))
    assert record["met"] and record["goal"] == str(GOAL)
    assert record["recommended"]["settings"]["threshold_ms"] == 200
    assert len(record["candidates"]) == len(recommendation.ranked)
    assert [w["edge_factor"] for w in record["recommended"]["what_ifs"]] == [0.9, 1.1]


def test_the_plot_is_a_png(recommendation, tmp_path):
    pytest.importorskip("matplotlib")
    replay = simulate(WORKLOAD, recommendation.best.settings)
    write_plot(tmp_path / "tune.png", WORKLOAD, recommendation, replay, GOAL)
    assert (tmp_path / "tune.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_without_matplotlib_the_plot_says_so(recommendation, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    replay = simulate(WORKLOAD, recommendation.best.settings)
    with pytest.raises(PlotUnavailable, match="edgecloud\\[tune\\]"):
        write_plot(tmp_path / "tune.png", WORKLOAD, recommendation, replay, GOAL)
    assert not (tmp_path / "tune.png").exists()
