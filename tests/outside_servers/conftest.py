"""Outside Open Inference Protocol servers, unmodified from PyPI, started as real processes to
stand in for edgecloud's cloud worker behind a real gateway.

- ``start_mlserver(name)``: Seldon MLServer (from ``.venv-mlserver``, its own environment:
  MLServer pins protobuf < 7) serving the reference embedding model through the custom runtime in
  ``mlserver_model/`` on free HTTP and gRPC ports, metrics off; returns a
  ``edgecloud_tools.stack.ServiceProcess`` once MLServer's ``ServerReady`` says true. Every server
  started is stopped at teardown, by its pid.
- ``mlserver``: one such server shared by the module.
- ``project_cloud``: edgecloud's own cloud worker (torch FP32), the reference the answers are
  compared with and a peer in a mixed pool.
- ``redis_url``: a throwaway ``redis-server`` of the module's own.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from edgecloud_tools.stack import (ServiceProcess, cloud_config, free_port, launch, launch_redis, wait_ready,
                                   wait_redis)
from tests.conftest import REPO_ROOT

MLSERVER_VENV = REPO_ROOT / ".venv-mlserver"
MLSERVER = MLSERVER_VENV / "bin" / "mlserver"
MODEL_SOURCE = Path(__file__).resolve().parent / "mlserver_model"
MODEL_NAME = "all-MiniLM-L6-v2"


def mlserver_repository(root: Path, model_dir: Path, *, http_port: int, grpc_port: int) -> Path:
    """A model repository for ``mlserver start``: ``settings.json`` (loopback, the given ports,
    metrics off, no worker pool: inference runs in the server process, on its threads) and the
    model's folder (``model-settings.json`` with ``parameters.uri`` pointing at ``model_dir``, and
    the runtime module, which MLServer imports from that folder)."""
    root.mkdir(parents=True, exist_ok=True)
    settings = {
        "host": "127.0.0.1", "http_port": http_port, "grpc_port": grpc_port,
        "metrics_endpoint": None, "parallel_workers": 0, "debug": False,
        "metrics_dir": str(root / ".metrics"), "environments_dir": str(root / ".envs"),
    }
    (root / "settings.json").write_text(json.dumps(settings, indent=2))
    folder = root / MODEL_NAME
    folder.mkdir(exist_ok=True)
    shutil.copy2(MODEL_SOURCE / "embedding_runtime.py", folder / "embedding_runtime.py")
    model_settings = json.loads((MODEL_SOURCE / "model-settings.json").read_text())
    model_settings["parameters"]["uri"] = str(model_dir)
    (folder / "model-settings.json").write_text(json.dumps(model_settings, indent=2))
    return root


def launch_mlserver(workdir: Path, model_dir: Path, name: str = "mlserver") -> ServiceProcess:
    """``mlserver start`` on a fresh repository under ``workdir/name``, output in ``name.log``;
    not waited for."""
    if not MLSERVER.exists():
        pytest.fail(f"MLServer is missing ({MLSERVER.relative_to(REPO_ROOT)}): run `make test-setup` "
                    "(creates .venv-mlserver from tests/outside_servers/requirements.txt)")
    http_port, grpc_port = free_port(), free_port()
    root = mlserver_repository(workdir / name, model_dir, http_port=http_port, grpc_port=grpc_port)
    log_path = workdir / f"{name}.log"
    # MLServer reads MLSERVER_* variables as settings: none of this machine's may leak in.
    env = {key: value for key, value in os.environ.items() if not key.startswith("MLSERVER")}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([str(MLSERVER), "start", str(root)], cwd=root, env=env,
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    service = ServiceProcess(name, proc, f"127.0.0.1:{grpc_port}", root / "settings.json", log_path)
    service.http_address = f"127.0.0.1:{http_port}"
    return service


@pytest.fixture(scope="module")
def outside_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("outside-servers")


@pytest.fixture(scope="module")
def start_mlserver(outside_dir, model_dir):
    started: list[ServiceProcess] = []

    def start(name: str) -> ServiceProcess:
        service = launch_mlserver(outside_dir, model_dir, f"{name}-{time.monotonic_ns()}")
        started.append(service)
        wait_ready(service, 60)
        return service

    yield start
    for service in started:
        service.stop()


@pytest.fixture(scope="module")
def mlserver(start_mlserver) -> ServiceProcess:
    return start_mlserver("mlserver")


@pytest.fixture(scope="module")
def project_cloud(outside_dir) -> ServiceProcess:
    service = launch("cloud", cloud_config(free_port(), threads=1), outside_dir, name="project-cloud")
    try:
        wait_ready(service, 120)
        yield service
    finally:
        service.stop()


@pytest.fixture(scope="module")
def redis_url(outside_dir) -> str:
    port = free_port()
    service = launch_redis(outside_dir, port, name="outside-redis")
    try:
        wait_redis(service)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        service.stop()
