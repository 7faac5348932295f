"""``edgecloud demo``: its summary on known outcomes, and a short real run on its own stack."""

from __future__ import annotations

import argparse
import io
import random
import re

import pytest

from edgecloud_tools import demo
from edgecloud_tools.demo import DemoResult, Outcome


def _result(pattern: list[tuple[str, int]]) -> DemoResult:
    """One request every 0.1 s; ``pattern`` gives who served the next ``n`` of them."""
    outcomes, at = [], 0.0
    for served_by, count in pattern:
        for _ in range(count):
            phase = 0 if at < 4 else 1 if at < 8 else 2
            outcomes.append(Outcome(at, 0.3 if served_by == "cloud" else 0.01, served_by, phase))
            at += 0.1
    return DemoResult(12.0, ((0, 4), (4, 8), (8, 12)), outcomes, threshold_ms=200)


def test_the_summary_shows_the_phases_and_the_path_the_traffic_took():
    result = _result([("edge", 42), ("cloud", 1), ("edge", 1), ("cloud", 40), ("cache", 3), ("edge", 33)])
    assert [p.dominant for p in result.phases()] == ["edge", "cloud", "edge"]
    assert result.path() == ["edge", "cloud", "edge"]  # a one-bucket blip is not a move
    text = result.summary()
    assert text.splitlines()[0] == "summary: 12 s, 120 requests, 0 failed, threshold 200 ms; latencies in ms"
    assert max(len(line) for line in text.splitlines()) <= 80
    rows = text.splitlines()[2:5]
    assert [row.split()[-1] for row in rows] == ["edge", "cloud", "edge"]
    assert rows[1].startswith("edge slowed") and "0-4 s" in rows[0]
    assert "traffic moved: edge -> cloud -> edge" in text and "cache hit ratio: 2%" in text


def test_a_timeline_bucket_expects_three_requests_at_least():
    """At 3 streams/s a 0.5 s bucket would hold one or two, and one stream would decide it."""
    assert demo._bucket_s(demo.DemoOptions(duration_s=18, rate=15)) == 0.5
    assert demo._bucket_s(demo.DemoOptions(duration_s=18, rate=3)) == 1.0
    assert demo._bucket_s(demo.DemoOptions(duration_s=24, rate=2)) == 1.5
    assert demo._bucket_s(demo.DemoOptions(duration_s=120, rate=15)) == 2.0


def test_failures_are_counted():
    result = _result([("edge", 10)])
    result.outcomes.append(Outcome(1.05, 10.0, None, 0, "Unavailable: no backend"))
    assert result.failed == 1 and "1 failed" in result.summary()


def test_the_workload_repeats_popular_sentences():
    pick = demo.sentences(0.5, random.Random(1))
    texts = [pick(n) for n in range(200)]
    popular = [t for t in texts if t in demo.POPULAR]
    assert 60 < len(popular) < 140 and len(set(texts) - set(demo.POPULAR)) == len(texts) - len(popular)


def run_demo_cli(*argv: str) -> tuple[int, str]:
    parser = argparse.ArgumentParser(prog="edgecloud demo")
    demo.add_arguments(parser)
    out = io.StringIO()
    return demo.run(parser.parse_args(argv), out), out.getvalue()


def test_bad_options_exit_2(capsys):
    assert run_demo_cli("--duration", "1")[0] == 2
    assert run_demo_cli("--gateway", "127.0.0.1:9")[0] == 2
    assert "--edge HOST:PORT and --proxy-port" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_short_demo_moves_traffic_edge_cloud_edge_with_no_failures(model_dir):
    # A higher threshold and a bigger slowdown than the defaults keep the phases clear of the noise
    # of a busy shared CPU box (tens of ms of scheduling delay); 6 s phases leave the move back to
    # the edge (probes in flight, then five fast ones) seconds to spare; 10 requests/s keeps the load
    # modest.
    status, out = run_demo_cli("--duration", "18", "--rate", "10", "--slow-ms", "800", "--threshold-ms", "300",
                               "--model-dir", str(model_dir), "--no-live")
    assert status == 0, out
    summary = out[out.index("summary:"):].splitlines()
    assert ", 0 failed" in summary[0]
    assert [row.split()[-1] for row in summary[2:5]] == ["edge", "cloud", "edge"], "\n".join(summary)
    path = next(line for line in summary if line.startswith("traffic moved:"))
    moves = path.removeprefix("traffic moved: ").split(" -> ")
    assert moves[0] == "edge" and "cloud" in moves and moves[-1] == "edge", path


@pytest.mark.parametrize("width", [80, 110, 200])
def test_the_live_view_fits_the_terminal_however_long_the_run(width):
    """At any width, every redrawn line fits: the where-served timeline shows its latest part."""
    result = _result([("edge", 400), ("cloud", 400), ("edge", 400)])
    result.duration_s, result.bucket_s = 120.0, 0.1
    out = io.StringIO()
    view = demo.LiveView(out, live=True, width=width)
    for now in (10.0, 60.0, 119.0):
        view.draw(result, now, 1, 500.0, "edge p95 812.5 ms over the last 2 s (a long line from the gateway " * 3)
    view.close()
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.getvalue())  # the cursor moves of the redraw
    lines = [line for line in text.replace("\r", "\n").split("\n") if line.strip()]
    assert lines and max(len(line) for line in lines) <= width
    assert any(line.lstrip().startswith("where served") and line.rstrip().endswith("E") for line in lines)


def test_without_a_terminal_the_view_prints_plain_phase_lines():
    out = io.StringIO()
    view = demo.LiveView(out, live=False)
    result = _result([("edge", 10)])
    for phase in (0, 0, 1, 2):
        view.draw(result, 1.0 + phase, phase, 500.0, "")
    view.close()
    assert out.getvalue().splitlines() == ["[  1.0 s] edge fast", "[  2.0 s] edge slowed (+500 ms on the edge)",
                                           "[  3.0 s] edge recovered"]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_short_streams_demo_moves_streams_edge_cloud_edge(model_dir, generative_model_dir):
    # The stream margins (``demo.STREAM_MARGINS``: a busy CI box's edge TTFT reached 356 ms, a slower
    # CPU's 520-570 ms p50, and its loaded cloud 0.9-2 s, so +800 ms / 300 ms raced, and at 500 ms
    # the slower CPU's recovered phase stayed on the cloud); checked with three and four busy loops beside.
    status, out = run_demo_cli("--streams", "--duration", "24", "--rate", "2", "--slow-ms", "2500",
                               "--threshold-ms", "1000", "--max-tokens", "6", "--model-dir", str(model_dir), "--no-live")
    assert status == 0, out
    summary = out[out.index("summary:"):].splitlines()
    assert ", 0 failed" in summary[0]
    assert [row.split()[-1] for row in summary[2:5]] == ["edge", "cloud", "edge"], "\n".join(summary)
    path = next(line for line in summary if line.startswith("traffic moved:"))
    moves = path.removeprefix("traffic moved: ").split(" -> ")
    # Out to the cloud and back to the edge, in that order. Not "ends on the edge": on a slow box the
    # recovered edge's TTFT sits near the threshold (p50 0.9 s, p95 1.4 s once under the whole suite),
    # and a late move back to the cloud is routing doing its job; the phase table above still has to
    # say edge, cloud, edge.
    back = moves.index("cloud", 1) if "cloud" in moves[1:] else None
    assert moves[0] == "edge" and back is not None and "edge" in moves[back + 1:], "\n".join(summary)
