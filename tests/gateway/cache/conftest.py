"""Fixtures for the cache tests: real ``redis-server`` processes on free ports (never the
machine's own Redis), fake compute functions, and cache metrics on a private registry.

- ``redis_server(*args)``: starts a ``redis-server`` (no persistence) on a free port and waits
  until it answers; the returned ``RedisProcess`` can ``kill()`` (SIGKILL), ``pause()`` /
  ``resume()`` (SIGSTOP / SIGCONT) and ``restart()`` on the same port. Every process started is
  stopped at teardown, by its pid.
- ``Computes``: a fake ``compute`` that counts calls and answers like a backend would.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from edgecloud.codec import bytes_array
from edgecloud.types import InferRequest, InferResponse, RequestedOutput, Tensor
from edgecloud_tools.stack import free_port
from gateway.cache.api import CacheRequest, Served
from gateway.metrics import CacheMetrics

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
MODEL = "all-MiniLM-L6-v2"


@dataclass
class RedisProcess:
    port: int
    args: list[str]
    workdir: Path
    proc: subprocess.Popen | None = None
    log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.log_path = self.workdir / f"redis-{self.port}.log"
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                 "--dir", str(self.workdir), *self.args],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not self._answers():
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited: {self.log_path.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError("redis-server did not start")
            time.sleep(0.02)

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                if "--tls-port" in self.args:
                    return True  # listening is all a plain socket can tell of a TLS port
                sock.sendall(b"*1\r\n$4\r\nPING\r\n")
                return sock.recv(64)[:1] in (b"+", b"-")  # -NOAUTH / TLS-less replies still mean "up"
        except OSError:
            return False

    def connected_clients(self) -> int | None:
        """Clients connected now, not counting the one asking; None when it cannot be asked."""
        if "--tls-port" in self.args or "--requirepass" in self.args or not self.alive():
            return None
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1.0) as sock:
                sock.sendall(b"*2\r\n$4\r\nINFO\r\n$7\r\nclients\r\n")
                reply = b""
                while b"connected_clients:" not in reply or not reply.endswith(b"\r\n"):
                    chunk = sock.recv(4096)
                    if not chunk:
                        return None
                    reply += chunk
        except OSError:
            return None
        line = reply.split(b"connected_clients:", 1)[1].split(b"\r\n", 1)[0]
        return int(line) - 1

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _signal(self, sig: int) -> None:
        if self.alive():
            os.kill(self.proc.pid, sig)

    def pause(self) -> None:
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal(signal.SIGCONT)

    def kill(self) -> None:
        if self.alive():
            self._signal(signal.SIGCONT)
            self._signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def restart(self) -> None:
        self.kill()
        self.start()

    def stop(self) -> None:
        if self.alive():
            self._signal(signal.SIGCONT)
            self._signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def redis_server(tmp_path) -> Callable[..., RedisProcess]:
    started: list[RedisProcess] = []

    def start(*args: str, port: int | None = None) -> RedisProcess:
        server = RedisProcess(port or free_port(), list(args), tmp_path)
        started.append(server)
        server.start()
        return server

    yield start
    leaked = {}
    for server in started:
        deadline = time.monotonic() + 10.0
        while (clients := server.connected_clients()) and time.monotonic() < deadline:
            time.sleep(0.02)  # a client closed just now may take a moment to be gone
        if clients:
            leaked[server.port] = clients
        server.stop()
    assert not leaked, f"connections left open to redis-server(s): {leaked}"


def cluster_port() -> int:
    """A port from ``free_port`` whose cluster bus port (+10000) is free too."""
    for _ in range(200):
        port = free_port()
        if port + 10000 > 65535:  # free_port fell back to an ephemeral port: no room for the bus
            continue
        try:
            with socket.socket() as bus:
                bus.bind(("127.0.0.1", port + 10000))
            return port
        except OSError:
            continue
    raise RuntimeError("no free port pair for a cluster node")


def redis_cli(port: int, *args: str) -> str:
    return subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True, text=True, timeout=10,
                          check=True).stdout


@dataclass
class RedisCluster:
    """Real ``redis-server`` processes in cluster mode, made with ``redis-cli --cluster create``."""

    nodes: dict[int, RedisProcess]

    @property
    def startup_nodes(self) -> list[str]:
        return [f"127.0.0.1:{port}" for port in self.nodes]

    def topology(self) -> list[tuple[int, str, str]]:
        """(port, role, state flags) per node, as a live node sees it."""
        live = next(port for port, node in self.nodes.items() if node.alive())
        rows = []
        for line in redis_cli(live, "cluster", "nodes").splitlines():
            fields = line.split()
            port = int(fields[1].split("@")[0].rsplit(":", 1)[1])
            rows.append((port, "master" if "master" in fields[2] else "replica", fields[2]))
        return rows

    def masters(self) -> list[int]:
        return [port for port, role, flags in self.topology() if role == "master" and "fail" not in flags]

    def master_of(self, key: str) -> int:
        live = next(port for port, node in self.nodes.items() if node.alive())
        slot = int(redis_cli(live, "cluster", "keyslot", key))
        slots = json.loads(subprocess.run(["redis-cli", "-p", str(live), "--json", "cluster", "slots"],
                                          capture_output=True, text=True, timeout=10, check=True).stdout)
        for start, end, master, *_ in slots:
            if start <= slot <= end:
                return int(master[1])
        raise LookupError(f"slot {slot} is not covered")

    def healthy(self) -> bool:
        """Every live node says the cluster is ok, and there are 3 masters with a replica each."""
        try:
            live = [port for port, node in self.nodes.items() if node.alive()]
            if not all("cluster_state:ok" in redis_cli(port, "cluster", "info") for port in live):
                return False
            topology = self.topology()
            return (sum(role == "master" and "fail" not in flags for _, role, flags in topology) == 3
                    and all("master_link_status:up" in redis_cli(port, "info", "replication")
                            for port, role, flags in topology if role == "replica" and "fail" not in flags))
        except (subprocess.SubprocessError, StopIteration):
            return False


@pytest.fixture
def redis_cluster(redis_server) -> Callable[..., RedisCluster]:
    """``redis_cluster(masters=3, replicas=1, node_timeout_ms=2000)``: a new cluster, torn down
    with the test (``redis_server`` stops every node)."""

    def start(masters: int = 3, replicas: int = 1, node_timeout_ms: int = 2000) -> RedisCluster:
        nodes = {}
        for _ in range(masters * (1 + replicas)):
            port = cluster_port()
            nodes[port] = redis_server("--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{port}.conf",
                                       "--cluster-node-timeout", str(node_timeout_ms), port=port)
        subprocess.run(["redis-cli", "--cluster", "create", *(f"127.0.0.1:{p}" for p in nodes),
                        "--cluster-replicas", str(replicas), "--cluster-yes"], check=True, capture_output=True,
                       timeout=60)
        cluster = RedisCluster(nodes)
        deadline = time.monotonic() + 30
        while not (cluster.healthy() if replicas else all(
                "cluster_state:ok" in redis_cli(p, "cluster", "info") for p in nodes)):
            if time.monotonic() > deadline:
                raise TimeoutError(f"cluster not ok: {cluster.topology()}")
            time.sleep(0.1)
        return cluster

    return start


@pytest.fixture
def cache_metrics() -> CacheMetrics:
    return CacheMetrics(CollectorRegistry())


def counter(metric, *labels: str) -> float:
    child = metric.labels(*labels) if labels else metric
    return child._value.get()


def text_msg(texts: list[str], *, model: str = MODEL, request_id: str = "", **params) -> InferRequest:
    """A decoded request for the text model (what a front hands the gateway's dataplane)."""
    data = bytes_array(texts)
    return InferRequest(model_name=model, id=request_id, inputs=[Tensor("text", "BYTES", data.shape, data)],
                        parameters={name: value if isinstance(value, bool) else str(value)
                                    for name, value in params.items()})


def text_proto(texts: list[str], **kwargs):
    """The same request as ``text_msg``, as a client sends it over gRPC."""
    from edgecloud.codec import request_to_proto

    return request_to_proto(text_msg(texts, **kwargs))


def cache_request(request: InferRequest, *, tenant: str = "default", version: str = "1",
                  require_cloud: bool = False, bypass: bool = False,
                  outputs: tuple[RequestedOutput, ...] = ()) -> CacheRequest:
    request.tenant = tenant
    return CacheRequest(request, version, outputs, require_cloud, bypass)


def embedding_response(request: InferRequest, seed: int) -> InferResponse:
    values = np.random.default_rng(seed).standard_normal((1, 384)).astype("<f4")
    return InferResponse(model_name=request.model_name, model_version="1", id=request.id,
                         outputs=[Tensor("embedding", "FP32", values.shape, values)])


@dataclass
class Computes:
    """A fake ``compute``: counts calls, answers after ``delay_s`` as ``served_by``, or raises ``error``."""

    served_by: str = "edge"
    delay_s: float = 0.0
    error: BaseException | None = None
    clock: object | None = None
    """A ``FakeClock`` the compute advances by ``cost_s`` (the compute time XFetch sees)."""
    cost_s: float = 0.0
    calls: int = 0
    started: asyncio.Event = field(default_factory=asyncio.Event)

    def __call__(self, msg: InferRequest) -> Callable[[], object]:
        async def compute() -> Served:
            self.calls += 1
            self.started.set()
            if self.clock is not None:
                self.clock.advance(self.cost_s)
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            if self.error is not None:
                raise self.error
            return Served(embedding_response(msg, self.calls), self.served_by, "edge_fast")

        return compute


@pytest.fixture
async def start_cache(cache_metrics):
    """``await start_cache(settings_dict, **cache_kwargs)``: a started ``GatewayCache`` (Redis
    timeouts from ``TEST_REDIS_TIMEOUTS`` unless the test sets its own), stopped at teardown."""
    from gateway.cache import CacheSettings, GatewayCache

    caches: list[GatewayCache] = []

    async def start(config: dict | None = None, **kwargs) -> GatewayCache:
        settings = CacheSettings.model_validate({"enabled": True, **with_test_timeouts(config)})
        cache = GatewayCache(settings, cache_metrics, **kwargs)
        caches.append(cache)
        await cache.start()
        return cache

    yield start
    for cache in caches:
        await cache.stop()
    assert_no_cache_tasks()


def assert_no_cache_tasks() -> None:
    """Teardown invariant: a stopped cache leaves no fill, write, probe or reconnect task behind."""
    left = [t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith("cache-") and not t.done()]
    assert not left, left


TEST_REDIS_TIMEOUTS = {"connect_timeout_ms": 2000, "socket_timeout_ms": 2000}
"""Redis timeouts of the in-process test caches and gateways. The products' defaults (50/30 ms)
assume a process of its own; here the cache shares one event loop with the load generator on a
machine that may be busy, so a reply that already arrived can wait a long time to be read and
would count as a timeout. Tests of the short bounds themselves set their own."""


def with_test_timeouts(cache: dict | None) -> dict:
    """``cache`` settings whose ``redis`` section gets ``TEST_REDIS_TIMEOUTS`` where it sets none."""
    cache = dict(cache or {})
    if "redis" in cache:
        cache["redis"] = {**TEST_REDIS_TIMEOUTS, **cache["redis"]}
    return cache


@pytest.fixture
async def start_cached_gateway():
    """``await start_cached_gateway(edge, workers, cache={...}, cloud={...}, **routing)``: an
    in-process gateway (``in_process_gateway_config``) with a ``cache`` section (``enabled``
    defaults to true); stopped at teardown."""
    from gateway.server import GatewayServer
    from tests.gateway.conftest import in_process_gateway_config

    servers: list[GatewayServer] = []

    async def start(edge: str | None, workers: list[str], cache: dict | None = None, cloud: dict | None = None,
                    **routing) -> GatewayServer:
        config = in_process_gateway_config(edge, workers, cloud=cloud,
                                           cache={"enabled": True, **with_test_timeouts(cache)}, **routing)
        server = GatewayServer(config)
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop(0.5)
    assert_no_cache_tasks()


async def run_repeating_load(address: str, texts: list[str], *, duration_s: float | None, concurrency: int,
                             timeout_s: float = 10.0, on_tick=None):
    """Like ``tests.gateway.conftest.run_load``, but every client cycles through the same ``texts``
    (so most requests are cache hits); returns its ``Outcome`` list."""
    from bench.load import closed_loop, text_request

    return await closed_loop(address, duration_s=duration_s, concurrency=concurrency, timeout_s=timeout_s,
                             make_request=lambda index, n: text_request([texts[(index + n) % len(texts)]]),
                             events=on_tick)
