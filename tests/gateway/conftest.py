"""Real edge agent and cloud worker processes, a fault proxy in front of the edge, and an
in-process gateway on port 0 — plus a bounded load generator."""

from __future__ import annotations

import os
import signal
import time

import pytest

from bench.load import Outcome, closed_loop
from edgecloud_tools.fault_proxy import FaultProxy
from edgecloud_tools.stack import cloud_config, edge_config, free_port, launch, launch_redis, wait_ready
from gateway.config import GatewayConfig
from gateway.server import GatewayServer



@pytest.fixture(scope="module")
def stack_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("stack")


@pytest.fixture(scope="module")
def edge_process(model_dir, stack_dir):
    service = launch("edge", edge_config(model_dir, free_port(), threads=1), stack_dir)
    try:
        wait_ready(service, 60)
        yield service
    finally:
        service.stop()


@pytest.fixture
def start_cloud_workers(stack_dir):
    started = []

    def start(count: int, **kwargs):
        services = [launch("cloud", cloud_config(free_port(), threads=1, **kwargs), stack_dir,
                           name=f"cloud-{len(started) + i}-{time.monotonic_ns()}") for i in range(count)]
        started.extend(services)
        for service in services:
            wait_ready(service, 120)
        return services

    yield start
    for service in started:
        service.stop()


@pytest.fixture(scope="module")
def shared_cloud(stack_dir):
    service = launch("cloud", cloud_config(free_port(), threads=1), stack_dir, name="cloud-shared")
    try:
        wait_ready(service, 120)
        yield service
    finally:
        service.stop()


@pytest.fixture
async def edge_proxy(edge_process):
    host, port = edge_process.address.rsplit(":", 1)
    proxy = FaultProxy(host, int(port))
    await proxy.start()
    yield proxy
    await proxy.stop()


def in_process_gateway_config(edge: str | None, workers: list[str], *, cloud: dict | None = None,
                              cache: dict | None = None, http: bool = False, **routing) -> GatewayConfig:
    """An in-process test gateway's config: gRPC on port 0 (``http``: HTTP on port 0 too), probes every 100 ms and
    — routing not being what most tests are about — a threshold no busy machine reaches (tests of
    routing set their own); ``cloud`` adds cloud pool settings, ``cache`` a cache section."""
    routing.setdefault("probe_interval_ms", 100)
    routing.setdefault("threshold_ms", 60_000)
    sections = {
        "server": {"port": 0, "metrics_port": None, "http_port": 0 if http else None, "grace_s": 1},
        "edge": {"address": edge},
        "cloud": {"workers": workers, **(cloud or {})},
        "routing": routing,
    }
    if cache is not None:
        sections["cache"] = cache
    return GatewayConfig.model_validate(sections)


@pytest.fixture
async def start_gateway():
    servers = []

    async def start(edge: str | None, workers: list[str], cloud: dict | None = None, **routing) -> GatewayServer:
        """An in-process gateway (``in_process_gateway_config``); stopped at teardown."""
        server = GatewayServer(in_process_gateway_config(edge, workers, cloud=cloud, **routing))
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop(0.5)


async def run_load(address: str, *, duration_s: float | None, concurrency: int, timeout_s: float = 10.0,
                   on_tick=None) -> list[Outcome]:
    """``concurrency`` closed-loop clients for ``duration_s`` (``None``: until ``on_tick``'s
    scenario returns); every outcome recorded."""
    return await closed_loop(address, duration_s=duration_s, concurrency=concurrency, timeout_s=timeout_s,
                             events=on_tick)


# --- generation: a real edge and cloud worker serving SmolLM2 -----------------------------------


@pytest.fixture(scope="package")
def generation_workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("generation")


def _generation_edge(model_dir, generative_model_dir, workdir, name="edge"):
    service = launch("edge", edge_config(model_dir, free_port(), threads=1,
                                         generative_model_dir=generative_model_dir), workdir,
                     name=f"{name}-{time.monotonic_ns()}")
    wait_ready(service, 120)
    return service


@pytest.fixture(scope="package")
def generation_edge(model_dir, generative_model_dir, generation_workdir):
    """An edge agent process serving MiniLM and SmolLM2 (INT4), shared by the tests of streams."""
    service = _generation_edge(model_dir, generative_model_dir, generation_workdir)
    yield service
    service.stop()


@pytest.fixture
def doomed_generation_edge(model_dir, generative_model_dir, generation_workdir):
    """An edge of its own, for a test that kills or freezes it."""
    service = _generation_edge(model_dir, generative_model_dir, generation_workdir, name="doomed-edge")
    yield service
    try:
        os.kill(service.proc.pid, signal.SIGCONT)
    except ProcessLookupError:
        pass
    service.stop()


@pytest.fixture(scope="package")
def generation_cloud(generative_model_dir, generation_workdir):
    """A cloud worker process serving SmolLM2 (FP32, continuous batching), with its metrics port."""
    metrics_port = free_port()
    service = launch("cloud", cloud_config(free_port(), threads=1, metrics_port=metrics_port,
                                           generative_model_dir=generative_model_dir), generation_workdir,
                     name="generation-cloud")
    service.metrics_port = metrics_port
    try:
        wait_ready(service, 180)
        yield service
    finally:
        service.stop()


@pytest.fixture(scope="package")
def stream_redis(generation_workdir):
    """A redis-server of the tests' own; its URL."""
    port = free_port()
    service = launch_redis(generation_workdir, port, name="stream-redis")
    yield f"redis://127.0.0.1:{port}/0"
    service.stop()


@pytest.fixture
async def stream_gateway():
    """Starts in-process gateways (gRPC and HTTP on port 0) in front of an edge and a cloud worker;
    ``streams`` are ``routing.streams`` settings."""
    servers = []

    async def start(edge_address: str | None, cloud_address: str, *, cache: dict | None = None,
                    **streams) -> GatewayServer:
        config = in_process_gateway_config(edge_address, [cloud_address], cloud={"attempt_timeout_ms": 30_000},
                                           cache=cache, http=True, streams=streams)
        server = GatewayServer(config)
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop(0.5)
