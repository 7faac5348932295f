"""``edgecloud tune`` through its argparse front: files written, table printed, exit statuses."""

from __future__ import annotations

import argparse
import io
import json

import pytest

from gateway.tuning import cli
from tests.gateway.tuning.synthetic import steps, trace

PROFILE = steps((3, 20), (6, 160), (7.5, 300), (1e9, 20))


def tune(*argv: str) -> tuple[int, str]:
    parser = argparse.ArgumentParser(prog="edgecloud tune")
    cli.add_arguments(parser)
    out = io.StringIO()
    return cli.run(parser.parse_args(argv), out), out.getvalue()


@pytest.fixture
def trace_file(tmp_path):
    path = tmp_path / "trace.json"
    trace(PROFILE, steps((1e9, 50))).save(path)
    return path


def test_recommend_prints_the_table_and_writes_yaml_json_and_png(trace_file, tmp_path):
    pytest.importorskip("matplotlib")
    status, out = tune("recommend", "--trace", str(trace_file), "--goal", "p99<=300", "--max-hedge-rate", "0.1",
                       "--thresholds", "150,200,250", "--hedge-after", "threshold,230", "--recover-ratios", "0.9",
                       "--recover-probes", "3,5", "--yaml", str(tmp_path / "r.yaml"), "--plot",
                       str(tmp_path / "r.png"), "--json", str(tmp_path / "r.json"))
    assert status == 0
    assert "200 requests (20.0/s)" in out and "probe_interval_ms 200 (as the trace shows)" in out
    assert "simulating 12 candidates" in out and "\nrecommended: threshold 200 ms" in out
    assert out.rstrip().endswith("recover_probes: 3")  # the snippet closes the output
    assert (tmp_path / "r.yaml").read_text() in out
    assert len(json.loads((tmp_path / "r.json").read_text())["candidates"]) == 12
    assert (tmp_path / "r.png").stat().st_size > 0


def test_an_unreachable_goal_exits_2_with_the_closest_candidate(trace_file, tmp_path):
    status, out = tune("recommend", "--trace", str(trace_file), "--goal", "p99<=30", "--thresholds", "150,250",
                       "--yaml", str(tmp_path / "r.yaml"), "--plot", "-")
    assert status == 2 and "NO candidate meets the goal; closest:" in out
    assert "NOT met" in (tmp_path / "r.yaml").read_text()


def test_the_base_settings_can_come_from_the_gateway_config(trace_file, tmp_path):
    (tmp_path / "gateway.yaml").write_text("routing:\n  probe_interval_ms: 100\n  min_samples: 5\n")
    status, out = tune("recommend", "--trace", str(trace_file), "--goal", "p99<=300", "--thresholds", "200",
                       "--config", str(tmp_path / "gateway.yaml"), "--yaml", "-", "--plot", "-")
    assert status == 0 and f"base settings: routing of {tmp_path / 'gateway.yaml'}" in out


@pytest.mark.parametrize(("argv", "message"), [
    (["--goal", "p97<=1"], "unknown metric"),
    (["--goal", "p99<=300", "--statistics", "p42"], "statistic"),
    (["--goal", "p99<=300", "--robustness", "2"], "robustness"),
])
def test_bad_input_exits_1_and_says_why(trace_file, argv, message, capsys):
    status, _ = tune("recommend", "--trace", str(trace_file), "--yaml", "-", "--plot", "-", *argv)
    assert status == 1 and message in capsys.readouterr().err


def test_a_bad_trace_or_an_unreachable_gateway_exits_1(tmp_path, capsys):
    (tmp_path / "bad.json").write_text('{"samples": [{"t": 1}]}')
    assert tune("recommend", "--trace", str(tmp_path / "bad.json"), "--goal", "p99<=1")[0] == 1
    assert "samples[0].backend: missing" in capsys.readouterr().err
    assert tune("recommend", "--goal", "p99<=1")[0] == 1
    assert "give --gateway-http URL to record from or --trace FILE" in capsys.readouterr().err
    status, _ = tune("record", "--gateway-http", "127.0.0.1:9", "--duration", "0", "--poll-s", "0.01",
                     "--out", str(tmp_path / "t.json"))
    assert status == 1 and "127.0.0.1:9" in capsys.readouterr().err and not (tmp_path / "t.json").exists()


def test_list_options_are_checked_by_argparse(capsys):
    parser = argparse.ArgumentParser(prog="edgecloud tune")
    cli.add_arguments(parser)
    for bad in (["--thresholds", "1,x"], ["--hedge-after", "soon"], ["--recover-probes", "2.5"]):
        with pytest.raises(SystemExit):
            parser.parse_args(["recommend", "--trace", "t", "--goal", "p99<=1", *bad])
    assert "expected" in capsys.readouterr().err


def test_a_bad_gateway_config_is_left_to_the_edgecloud_command(trace_file, tmp_path):
    from edgecloud.config import ConfigError

    (tmp_path / "gateway.yaml").write_text("routing:\n  threshold_ms: -1\n")
    with pytest.raises(ConfigError, match=r"routing\.threshold_ms"):
        tune("recommend", "--trace", str(trace_file), "--goal", "p99<=300", "--config", str(tmp_path / "gateway.yaml"))


def test_a_trace_of_probes_only_says_what_to_do_instead_of_recommending_nonsense(tmp_path, capsys):
    """``tune record`` on an idle gateway records probes and no requests: nothing to simulate."""
    from gateway.tuning.trace import Trace, TraceSample

    idle = Trace.build([TraceSample(1000.0 + i * 0.2, backend, 0.015, True) for i in range(40)
                        for backend in ("edge", "cloud")], source="idle", recorded_threshold_ms=200)
    path = tmp_path / "idle.json"
    idle.save(path)
    status, _ = tune("recommend", "--trace", str(path), "--goal", "p99<=250", "--yaml", "-", "--plot", "-")
    assert status == 1 and "holds no requests, only probes" in capsys.readouterr().err
    status, out = tune("recommend", "--trace", str(path), "--goal", "p99<=250", "--yaml", "-", "--plot", "-",
                       "--rate", "10")
    assert status == 0 and "no slow period to learn from" in out and "\nrecommended: threshold 200 ms" in out
