"""Each example runs as its own process against a real edge agent and exits 0."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


@pytest.mark.parametrize(("script", "expect"), [
    ("embed.py", "shape (3, 384)"),
    ("embed_async.py", "3 texts -> (3, 384)"),
    ("infer_any.py", "embedding: FP32 [2, 384]"),
])
def test_example_runs_against_a_real_edge(edge, script, expect):
    proc = subprocess.run([sys.executable, str(EXAMPLES / script), "--address", edge.address],
                          capture_output=True, text=True, timeout=120, cwd=EXAMPLES.parent)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert expect in proc.stdout, proc.stdout


def test_an_example_reports_an_unreachable_server_and_exits_1(closed_port_address):
    proc = subprocess.run([sys.executable, str(EXAMPLES / "embed.py"), "--address", closed_port_address,
                           "--timeout", "2"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "error (unavailable)" in proc.stderr
