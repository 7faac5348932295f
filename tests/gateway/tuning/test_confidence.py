"""``edgecloud tune confidence`` on traces: the curve, the recommendation, the held-out check, the
files it writes and its exit status. Pure logic; the servers' side is tested in
tests/gateway/test_images_through_the_gateway.py."""

from __future__ import annotations

import argparse
import io

import numpy as np
import pytest

from gateway.tuning.confidence import Pairs, add_arguments, best_rule, curve, evaluate, recommend, run


def pairs(top1, edge_class, cloud_class) -> Pairs:
    top1 = np.asarray(top1, float)
    return Pairs(top1, (1 - top1) / 2, np.asarray(edge_class), np.asarray(cloud_class))


SAMPLE = pairs([0.9, 0.8, 0.7, 0.4, 0.3, 0.2], [1, 2, 3, 4, 5, 6], [1, 2, 3, 9, 5, 9])


def test_the_curve_runs_from_no_escalation_to_all():
    points = curve(SAMPLE)
    assert points[0][1:] == (0.0, pytest.approx(4 / 6)) and points[-1][1:] == (1.0, 1.0)
    shares = [share for _, share, _ in points]
    assert shares == sorted(shares)


def test_recommend_takes_the_lowest_bar_that_reaches_the_target():
    bar, share, agreement = recommend(SAMPLE, 1.0)
    assert bar == 0.4001 and share == pytest.approx(3 / 6) and agreement == 1.0
    assert evaluate(SAMPLE, bar) == (share, agreement)
    bar, share, agreement = recommend(SAMPLE, 0.8)
    assert share == pytest.approx(1 / 6) and agreement == pytest.approx(5 / 6)  # only the 0.2 one goes


def test_the_margin_rule_keeps_sure_but_low_answers_on_the_edge():
    # low top-1 with a clear lead (the edge right), and one near-tie (the edge wrong)
    sample = Pairs(np.array([0.3, 0.3, 0.3]), np.array([0.05, 0.05, 0.29]), np.array([1, 2, 3]), np.array([1, 2, 9]))
    assert recommend(sample, 1.0, "confidence")[1] == pytest.approx(1.0)
    bar, share, agreement = recommend(sample, 1.0, "margin")
    assert share == pytest.approx(1 / 3) and agreement == 1.0
    assert best_rule(sample, 1.0)[0] == "margin"


def _args(tmp_path, trace, **extra) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    argv = ["--trace", str(trace), "--yaml", str(tmp_path / "bar.yaml"), "--plot", "-",
            "--json", str(tmp_path / "curve.json")]
    for key, value in extra.items():
        argv += [f"--{key.replace('_', '-')}", str(value)]
    return parser.parse_args(argv + ["--rule", "confidence"] if "rule" not in extra else argv)


def test_run_recommends_on_one_half_checks_on_the_other_and_writes_the_snippet(tmp_path):
    trace = tmp_path / "trace.jsonl"
    doubled = Pairs(*(np.concatenate([a, a]) for a in (SAMPLE.top1, SAMPLE.top2, SAMPLE.edge_class,
                                                       SAMPLE.cloud_class)))
    trace.write_text("\n".join(doubled.lines()) + "\n")
    out = io.StringIO()
    assert run(_args(tmp_path, trace, target=1.0), out) == 0
    assert "recommended min_confidence 0.4001" in out.getvalue()
    assert (tmp_path / "bar.yaml").read_text() == \
        "routing:\n  escalation:\n    efficientnet-lite0:\n      min_confidence: 0.4001\n"


def test_a_held_out_half_that_misses_the_target_exits_2(tmp_path):
    chosen_on = pairs([0.9, 0.3], [1, 2], [1, 5])
    held_out = pairs([0.9, 0.3], [1, 2], [7, 5])  # the edge is sure and wrong here
    trace = tmp_path / "trace.jsonl"
    trace.write_text("\n".join(chosen_on.lines() + held_out.lines()) + "\n")
    assert run(_args(tmp_path, trace, target=1.0), io.StringIO()) == 2


def test_an_unreadable_trace_exits_1(tmp_path, capsys):
    trace = tmp_path / "trace.jsonl"
    trace.write_text('{"edge": {"top1": 0.5}}\n')
    assert run(_args(tmp_path, trace), io.StringIO()) == 1
    assert "line 1" in capsys.readouterr().err
