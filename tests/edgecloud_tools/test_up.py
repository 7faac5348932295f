"""``edgecloud up``: the whole stack from one command, a sample call, a clean stop."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from edgecloud_tools.stack import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_up_brings_the_stack_up_and_a_sample_call_succeeds(model_dir, generative_model_dir, image_model_dir):
    url = f"redis://127.0.0.1:{free_port()}"  # nothing listens there: the in-process cache is used
    proc = subprocess.run(
        [sys.executable, "-m", "edgecloud_tools", "up", "--model-dir", str(model_dir), "--random-ports",
         "--exit-after-ready", "--redis-url", url, "--generative-model-dir", str(generative_model_dir),
         "--image-model-dir", str(image_model_dir)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "edgecloud is up" in out and "tritonclient" in out and "curl" in out
    assert "using the in-process LRU cache" in out
    # Served by the edge on a quiet machine; a busy one may make the cold edge's first probes slower
    # than the default 200 ms threshold, and then the cloud answers: either way the stack works.
    assert re.search(r"sample call: embedding \[1, 384\] served by (edge|cloud)\b", out), out[-2000:]
    assert "generate_stream" in out
    assert re.search(r"sample generation through the gateway \(OpenAI API, served by (edge|cloud)\): '.+' "
                     r"\(\d+ tokens, (stop|length)\)", out), out[-2000:]
    assert re.search(r"sample classification through the gateway \(served by (edge|cloud), \w+\): "
                     r"coffee.png -> espresso 0\.\d\d", out), out[-2000:]
    assert out.rstrip().endswith("stopped")


def test_a_port_in_use_is_named_before_anything_starts(model_dir, monkeypatch, capsys):
    import socket

    from edgecloud_tools import up

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        ports = {"http": free_port(), "grpc": port, "gateway_metrics": free_port(), "edge": free_port(),
                 "edge_http": free_port(), "cloud": free_port(), "cloud_http": free_port(), "metrics": free_port()}
        monkeypatch.setattr(up, "_ports", lambda random_ports: ports)
        launched = []
        monkeypatch.setattr(up, "launch", lambda *a, **k: launched.append(a))
        args = type("Args", (), {"model_dir": str(model_dir), "random_ports": False, "no_cloud": False,
                                 "exit_after_ready": True, "redis_url": None})()
        assert up.run(args) == 2
    err = capsys.readouterr().err
    assert f"port {port} (gateway gRPC) is in use" in err and "--random-ports" in err
    assert len(err.strip().splitlines()) == 1 and not launched
