"""Gateway replicas, as real processes: two gateways on one gRPC port (``server.reuse_port``), each
with a metrics port of its own, sharing one real ``redis-server``, in front of one real cloud
worker reached through a delay proxy (so a computation lasts long enough to overlap).

- A burst of identical concurrent misses spread over both replicas costs one inference.
- The replica holding the entry's lease is SIGKILLed mid-computation: the other replica's waiting
  requests are still answered (its lease lapses and the survivor computes).
"""

from __future__ import annotations

import asyncio
import re
import signal
import time
import urllib.request

import grpc
import pytest

from bench.load import text_request
from edgecloud_tools.stack import (cloud_config, free_port, gateway_config, launch, launch_proxy, launch_redis,
                                   wait_ready)
from protos import inference_pb2_grpc as pb_grpc

CHANNELS = 24
"""Client connections: the kernel spreads connections (not calls) over the replicas."""
LEASE_TTL_MS = 1000


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return response.read().decode()


def sample(text: str, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf"^{re.escape(name)}(?:\{{(.*)\}})? (\S+)$", line)
        if match and all(f'{k}="{v}"' in (match.group(1) or "") for k, v in labels.items()):
            total += float(match.group(2))
    return total


def inferences(cloud_metrics_port: int) -> float:
    return sample(scrape(cloud_metrics_port), "edgecloud_cloud_requests_total", outcome="ok")


def served(replica) -> float:
    return sample(scrape(replica.metrics_port), "edgecloud_gateway_served_total")


@pytest.fixture(scope="module")
def shared_parts(stack_dir):
    """(redis port, cloud metrics port, delay proxy in front of the cloud worker)."""
    services = []
    try:
        redis_port = free_port()
        services.append(launch_redis(stack_dir / "replicas-redis", redis_port, name="replicas-redis"))
        cloud_metrics = free_port()
        cloud = launch("cloud", cloud_config(free_port(), threads=1, metrics_port=cloud_metrics), stack_dir,
                       name="replicas-cloud")
        services.append(cloud)
        wait_ready(cloud, 120)
        proxy = launch_proxy(cloud.address, free_port(), stack_dir, delay_ms=1500, name="replicas-proxy")
        services.append(proxy)
        yield redis_port, cloud_metrics, proxy
    finally:
        for service in reversed(services):
            service.stop()


@pytest.fixture
def replicas(shared_parts, stack_dir):
    """(gateways, cloud metrics port, delay proxy): two gateway processes on one port."""
    redis_port, cloud_metrics, proxy = shared_parts
    port = free_port()
    gateways = []
    probed_before = inferences(cloud_metrics)
    try:
        for i in range(2):
            # probes are real inferences: one at start, then none while the test counts inferences
            config = gateway_config(port, None, [proxy.address], metrics_port=free_port(),
                                    routing={"probe_interval_ms": 600_000})
            config["server"].update(reuse_port=True, max_concurrent_requests=4096)
            config["cloud"]["attempt_timeout_ms"] = 20_000
            config["cache"] = {"enabled": True, "redis": {"url": f"redis://127.0.0.1:{redis_port}/0",
                                                          "connect_timeout_ms": 2000, "socket_timeout_ms": 2000},
                               "lease": {"ttl_ms": LEASE_TTL_MS}}
            gateway = launch("gateway", config, stack_dir, name=f"replica-{i}-{time.monotonic_ns()}")
            gateway.metrics_port = config["server"]["metrics_port"]
            gateways.append(gateway)
        for gateway in gateways:
            wait_ready(gateway, 60)
            deadline = time.monotonic() + 60
            while True:  # the shared port answers for either: ask each one's own metrics port
                try:
                    scrape(gateway.metrics_port)
                    break
                except OSError:
                    assert time.monotonic() < deadline and gateway.alive(), gateway.log_tail()
                    time.sleep(0.1)
        # Each replica's first probe is an inference; a test that counts inferences must not see
        # one still in flight (a busy machine once let the second replica's land in the count).
        deadline = time.monotonic() + 60
        while inferences(cloud_metrics) < probed_before + len(gateways):
            assert time.monotonic() < deadline, "the replicas' start probes never reached the cloud worker"
            time.sleep(0.05)
        yield gateways, cloud_metrics, proxy
    finally:
        for gateway in gateways:
            gateway.stop()


async def burst(address: str, text: str, count: int, timeout_s: float = 30.0) -> list[object]:
    """``count`` identical requests at once over ``CHANNELS`` connections; each result is the
    response or the ``grpc.aio.AioRpcError``."""
    channels = [grpc.aio.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])
                for _ in range(CHANNELS)]
    try:
        stubs = [pb_grpc.GRPCInferenceServiceStub(channel) for channel in channels]
        await asyncio.gather(*(channel.channel_ready() for channel in channels))

        async def one(i: int):
            try:
                return await stubs[i % CHANNELS].ModelInfer(text_request([text]), timeout=timeout_s)
            except grpc.aio.AioRpcError as exc:
                return exc

        return await asyncio.gather(*(one(i) for i in range(count)))
    finally:
        await asyncio.gather(*(channel.close() for channel in channels))


def test_identical_misses_over_two_replicas_cost_one_inference(replicas):
    gateways, cloud_metrics, proxy = replicas
    proxy.send(signal.SIGUSR1)  # every answer from the cloud now takes 1.5 s longer
    try:
        before_inferences = inferences(cloud_metrics)
        before_served = [served(g) for g in gateways]
        results = asyncio.run(burst(gateways[0].address, "one burst, one inference", 1000))
    finally:
        proxy.send(signal.SIGUSR2)
    failed = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert not failed, failed[:3]
    per_replica = [served(g) - b for g, b in zip(gateways, before_served)]
    assert sum(per_replica) == 1000 and min(per_replica) > 0, per_replica  # both replicas served
    assert inferences(cloud_metrics) - before_inferences == 1
    print(f"1000 identical misses: per replica {per_replica}, failed {len(failed)}, inferences 1")
    first = results[0].raw_output_contents[0]
    assert all(r.raw_output_contents[0] == first for r in results)
    holders = [sample(scrape(g.metrics_port), "edgecloud_gateway_cache_flights_total", role="lease_holder")
               for g in gateways]
    waiters = [sample(scrape(g.metrics_port), "edgecloud_gateway_cache_flights_total", role="lease_waiter")
               for g in gateways]
    assert sorted(holders) == [0, 1] and sorted(waiters) == [0, 1], (holders, waiters)


def test_a_replica_killed_holding_the_lease_leaves_the_others_answered(replicas):
    gateways, cloud_metrics, proxy = replicas
    holders_before = [sample(scrape(g.metrics_port), "edgecloud_gateway_cache_flights_total", role="lease_holder")
                      for g in gateways]

    async def scenario():
        proxy.send(signal.SIGUSR1)
        load = asyncio.ensure_future(burst(gateways[0].address, "the holder dies", 200))
        deadline = time.monotonic() + 10
        while True:  # find the replica that took the lease; it is computing (through the slow proxy)
            holders = [sample(await asyncio.to_thread(scrape, g.metrics_port),
                              "edgecloud_gateway_cache_flights_total", role="lease_holder") for g in gateways]
            grew = [i for i in range(2) if holders[i] > holders_before[i]]
            if grew:
                break
            assert time.monotonic() < deadline, "no replica took the lease"
            await asyncio.sleep(0.05)
        doomed = grew[0]
        gateways[doomed].kill()
        killed_at = time.monotonic()
        results = await load
        return doomed, killed_at, results, time.monotonic()

    try:
        doomed, killed_at, results, ended = asyncio.run(scenario())
    finally:
        proxy.send(signal.SIGUSR2)
    answered = [r for r in results if not isinstance(r, grpc.aio.AioRpcError)]
    failed = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    print(f"holder killed: {len(answered)} answered, {len(failed)} failed (on its connections), "
          f"{ended - killed_at:.2f} s from the kill to the last answer")
    # Calls on the dead replica's connections fail (their process is gone); every call the
    # survivor took was answered, by its own computation once the dead holder's lease lapsed.
    assert answered, [f.code() for f in failed[:3]]
    assert all(f.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED) for f in failed), \
        {f.code() for f in failed}
    survivor = gateways[1 - doomed]
    assert sample(scrape(survivor.metrics_port), "edgecloud_gateway_cache_flights_total", role="lease_holder") >= 1
    assert all(r.parameters["served_by"].string_param in ("cloud", "cache") for r in answered)
    # the lease lapsed (1 s) and the survivor's computation (1.5 s through the proxy) followed
    assert ended - killed_at < 10
