"""Discovery with real servers, in process: a gateway whose ``cloud.discovery`` name resolves
through the system resolver (``localhost``, from /etc/hosts) finds a real cloud worker and serves
from it; then, under live load, a resolver the test controls adds a second worker and removes the
first, which is drained, with no request failing."""

from __future__ import annotations

import asyncio
import socket

import pytest

from bench.load import closed_loop
from cloud_worker.config import CloudConfig
from cloud_worker.worker import CloudWorker
from gateway.config import GatewayConfig
from gateway.server import GatewayServer
from tests.support.cloud_fakes import FakeEmbeddingRuntime, KeepLoaded
from tests.support.waiting import wait_until

SECOND_LOOPBACK = "127.0.0.2"


class SwitchableResolver:
    """The addresses the test sets, whatever the name."""

    def __init__(self, ips: list[str]):
        self.ips = ips

    async def resolve(self, host: str, port: int) -> list[str]:
        return list(self.ips)


def _shared_port() -> int:
    """A port free on both loopback addresses (the workers of one Service share their port)."""
    for _ in range(20):
        with socket.socket() as first, socket.socket() as second:
            first.bind(("127.0.0.1", 0))
            port = first.getsockname()[1]
            try:
                second.bind((SECOND_LOOPBACK, port))
            except OSError:
                continue
            return port
    pytest.skip(f"no port free on both 127.0.0.1 and {SECOND_LOOPBACK}")


@pytest.fixture
async def two_workers():
    """Two cloud workers (fake embedding model) on 127.0.0.1:P and 127.0.0.2:P."""
    port = _shared_port()
    runtime = FakeEmbeddingRuntime()
    workers = []
    try:
        for host in ("127.0.0.1", SECOND_LOOPBACK):
            worker = CloudWorker(CloudConfig.model_validate({
                "server": {"host": host, "port": port, "metrics_port": None, "grace_s": 0.5}}),
                runtimes=[KeepLoaded(runtime)])
            await worker.start()
            workers.append(worker)
        yield port, workers
    finally:
        for worker in reversed(workers):
            await worker.stop(0.5)


def answered(worker: CloudWorker) -> float:
    return worker.metrics.registry.get_sample_value(
        "edgecloud_cloud_requests_total", {"model": "all-MiniLM-L6-v2", "outcome": "ok"}) or 0.0


async def test_discovered_workers_serve_and_are_added_and_drained_under_load(two_workers):
    port, (first, second) = two_workers
    config = GatewayConfig.model_validate({
        "server": {"port": 0, "metrics_port": None, "grace_s": 0.5},
        "edge": {"address": None},
        "cloud": {"discovery": {"dns": f"localhost:{port}", "refresh_ms": 100, "family": "ipv4"},
                  "attempt_timeout_ms": 5000},
        "routing": {"probe_interval_ms": 100, "threshold_ms": 60_000}})
    gateway = GatewayServer(config)
    await gateway.start()
    try:
        dataplane = gateway.dataplane
        # The system resolver: localhost is 127.0.0.1 in /etc/hosts, where the first worker listens.
        names = [w.name for w in dataplane.pool.workers]
        assert names == [f"cloud-127.0.0.1:{port}"], "resolved before the gateway served"
        address = f"127.0.0.1:{gateway.grpc_port}"
        warm = await closed_loop(address, duration_s=0.3, concurrency=2)
        assert warm and not [o for o in warm if o.error] and {o.served_by for o in warm} == {"cloud"}
        assert answered(first) > 0 and answered(second) == 0
        # A resolver the test controls, swapped in under load.
        resolver = SwitchableResolver(["127.0.0.1"])
        dataplane.discovery.resolver = resolver
        first_worker = dataplane.pool.workers[0]

        async def scenario(_t0: float) -> None:
            await asyncio.sleep(0.3)
            resolver.ips = ["127.0.0.1", SECOND_LOOPBACK]
            await wait_until(lambda: len(dataplane.pool.workers) == 2, timeout=10)
            assert dataplane.pool.workers[0] is first_worker, "the staying worker keeps its backend"
            await wait_until(lambda: answered(second) >= 10, timeout=20)
            resolver.ips = [SECOND_LOOPBACK]
            await wait_until(lambda: [w.name for w in dataplane.pool.workers] == [f"cloud-{SECOND_LOOPBACK}:{port}"],
                             timeout=10)
            await wait_until(lambda: not dataplane._retired, timeout=10)  # drained and closed
            drained_at = answered(first)
            served = answered(second)
            await wait_until(lambda: answered(second) >= served + 10, timeout=20)
            assert answered(first) == drained_at, "a drained worker gets no new request"

        outcomes = await closed_loop(address, duration_s=None, concurrency=4, events=scenario)
        failed = [o for o in outcomes if o.error]
        assert outcomes and not failed, failed[:3]
        assert {o.served_by for o in outcomes} == {"cloud"}
        assert dataplane.metrics.discovery_changes.labels("removed")._value.get() == 1
    finally:
        await gateway.stop(0.5)
