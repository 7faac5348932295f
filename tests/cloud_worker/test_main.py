"""Entry points: ``serve`` in-process, ``python -m cloud_worker`` as a real process with SIGTERM."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import numpy as np
import pytest

import cloud_worker
from cloud_worker.main import serve
from tests.support.cloud_fakes import embedding_of, text_request
from protos import inference_pb2 as pb
from protos import inference_pb2_grpc as pb_grpc

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def identity_dir(tmp_path):
    """A TorchScript identity program: x FP32 [-1, 2] -> x."""
    import json

    import torch

    directory = tmp_path / "identity"
    directory.mkdir()
    torch.jit.script(torch.nn.Identity()).save(str(directory / "model.pt"))
    (directory / "model.json").write_text(json.dumps({
        "name": "identity", "format": "torchscript", "max_batch_size": 4,
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 2]}],
        "outputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 2]}]}))
    return directory


async def test_serve_runs_until_stopped(identity_dir, make_config, monkeypatch):
    import edgecloud.lifecycle
    from edgecloud.allocator import COMPUTE_THRESHOLD_BYTES

    thresholds = []  # recorded, not applied: the setting would outlive this test in the test process
    monkeypatch.setattr(edgecloud.lifecycle, "release_large_buffers", thresholds.append)
    monkeypatch.delenv("TOKENIZERS_PARALLELISM", raising=False)
    config = make_config(models=[{"kind": "program", "path": str(identity_dir)}])
    started = asyncio.get_running_loop().create_future()
    stop = asyncio.Event()
    serving = asyncio.create_task(serve(config, ready=started.set_result, stop_event=stop))
    worker = await asyncio.wait_for(asyncio.shield(started), 60)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{worker.port}") as channel:
        msg = pb.ModelInferRequest(model_name="identity")
        msg.inputs.add(name="x", datatype="FP32", shape=[1, 2]).contents.fp32_contents.extend([1.5, -2.0])
        response = await pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(msg)
        assert np.frombuffer(response.raw_output_contents[0], "<f4").tolist() == [1.5, -2.0]
    stop.set()
    await asyncio.wait_for(serving, 30)
    assert not worker.dataplane.ready()
    assert thresholds == [COMPUTE_THRESHOLD_BYTES]  # a torch process: tensors from the heap
    assert os.environ["TOKENIZERS_PARALLELISM"] == "false"


def test_a_bad_config_exits_2_naming_the_field(tmp_path):
    path = tmp_path / "cloud.yaml"
    path.write_text("batching:\n  max_batch_size: 0\n")
    proc = subprocess.run([sys.executable, "-m", "cloud_worker", "--config", str(path)], capture_output=True,
                          text=True, timeout=60, cwd=REPO)
    assert proc.returncode == 2
    assert "batching.max_batch_size" in proc.stderr


@pytest.mark.slow
def test_python_m_cloud_worker_serves_the_reference_model_until_sigterm(tmp_path):
    path = tmp_path / "cloud.yaml"
    path.write_text("server: {port: 0, metrics_port: 0, grace_s: 2}\nruntime: {device: cpu, intra_op_threads: 1}\n")
    env = {**os.environ, "EDGECLOUD_CLOUD_BATCHING__MAX_QUEUE_DELAY_US": "500", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "cloud_worker", "--config", str(path)], cwd=REPO, env=env,
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    try:
        port = None
        deadline = time.monotonic() + 120
        seen = []
        while port is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            seen.append(line)
            match = re.search(r"cloud worker serving .* on [\d.]+:(\d+)", line)
            if match:
                port = int(match.group(1))
        assert port, "".join(seen)

        async def infer():
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                return await pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(text_request(["hello"]), timeout=30)

        response = asyncio.run(infer())
        assert embedding_of(response).shape == (1, 384)
        assert response.parameters["variant"].string_param == "fp32"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()


def test_exports_are_honest():
    import importlib

    for name in cloud_worker.__all__:
        assert getattr(cloud_worker, name) is not None, name
    for module in ("batcher", "bucketing", "config", "device", "encoder", "main", "manifest", "metrics",
                   "models", "programs", "reference", "runtime", "worker"):
        mod = importlib.import_module(f"cloud_worker.{module}")
        assert mod.__all__, module
        for name in mod.__all__:
            assert hasattr(mod, name), f"cloud_worker.{module}.{name}"


@pytest.mark.parametrize("policy, expected", [
    ("passive", ["PASSIVE", "-"]), ("active", ["ACTIVE", "-"]), ("brief", ["-", "300000"]), ("inherit", ["ACTIVE", "7"])])
def test_the_openmp_wait_policy_is_exported_before_torch_loads(policy, expected):
    code = ("import os, sys; os.environ.update(OMP_WAIT_POLICY='ACTIVE', GOMP_SPINCOUNT='7')\n"
            "from cloud_worker.main import apply_openmp_wait_policy\n"
            f"apply_openmp_wait_policy({policy!r})\n"
            "env = os.environ.get\n"
            "print(env('OMP_WAIT_POLICY', '-'), env('GOMP_SPINCOUNT', '-'), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.split() == [*expected, "False"]


def test_the_openmp_wait_policy_warns_when_torch_is_already_loaded(caplog, monkeypatch):
    import torch  # noqa: F401

    from cloud_worker.main import apply_openmp_wait_policy

    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    apply_openmp_wait_policy("active")
    assert "no effect" in caplog.text
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"


def test_a_metrics_port_in_use_is_one_clear_line_before_any_model_loads(tmp_path):
    """Two workers on one host with the same metrics port: the second says which port, and why."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = tmp_path / "cloud.yaml"
        config.write_text(f"server: {{port: 0, metrics_port: {port}}}\nruntime: {{device: cpu, intra_op_threads: 1}}\n")
        started = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "edgecloud_tools", "serve", "cloud", "--config", str(config)],
                              capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("edgecloud serve: cannot start: ") and f"127.0.0.1:{port}" in lines[-1]
    assert "address already in use" in lines[-1] and "Traceback" not in proc.stderr
    assert "loaded" not in proc.stderr and time.monotonic() - started < 60  # no model was loaded first


_TOKENIZE = """
import os, sys
from cloud_worker.main import keep_tokenizers_serial
from edgecloud.reference_model import tokenizer_file
from edgecloud.tokenization import TextTokenizer

if sys.argv[1] == "serial":
    keep_tokenizers_serial()
tokenizer = TextTokenizer.from_file(tokenizer_file(), 256)
before = len(os.listdir("/proc/self/task"))
tokenizer.encode([f"sentence number {i} of a batch" for i in range(64)])
print(os.environ.get("TOKENIZERS_PARALLELISM", "-"), len(os.listdir("/proc/self/task")) - before)
"""


@pytest.mark.parametrize("mode, preset, value, starts_threads", [
    ("serial", None, "false", False),
    ("serial", "true", "true", None),  # the operator's value is kept (threads: the tokenizer's business)
    ("default", None, "-", (os.cpu_count() or 1) > 1),
])
def test_the_tokenizer_encodes_a_batch_without_threads_of_its_own(mode, preset, value, starts_threads):
    """In a process of its own: after ``keep_tokenizers_serial`` a 64-text batch starts no thread;
    an operator's own ``TOKENIZERS_PARALLELISM`` is kept; without either, the tokenizer starts its
    pool (one thread per core), which is what the setting avoids."""
    env = {key: val for key, val in os.environ.items() if key != "TOKENIZERS_PARALLELISM"}
    if preset is not None:
        env["TOKENIZERS_PARALLELISM"] = preset
    proc = subprocess.run([sys.executable, "-c", _TOKENIZE, mode], capture_output=True, text=True, timeout=60,
                          cwd=REPO, env=env)
    assert proc.returncode == 0, proc.stderr
    seen, started = proc.stdout.split()
    assert seen == value
    if starts_threads is not None:
        assert (int(started) > 0) == starts_threads, started
