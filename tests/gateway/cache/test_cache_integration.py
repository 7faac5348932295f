"""The cache inside a real gateway, with real edge and cloud processes and a real Redis: hits
are bit-identical and say where they came from; 200 concurrent identical requests cause one
inference; Redis killed or frozen under load fails no request, and the cache works again once
Redis is back."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from gateway.cache import BreakerState
from protos import inference_pb2 as pb
from protos import inference_pb2_grpc as pb_grpc
from tests.gateway.cache.conftest import MODEL, counter, run_repeating_load, text_proto
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow


def decisions(gateway) -> float:
    return sum(sample.value for metric in gateway.dataplane.metrics.decisions.collect() for sample in metric.samples
               if sample.name.endswith("_total"))


async def test_hits_are_bit_identical_and_say_where_they_came_from(edge_process, shared_cloud, redis_server,
                                                                   start_cached_gateway):
    server = redis_server()
    gateway = await start_cached_gateway(edge_process.address, [shared_cloud.address],
                                         cache={"redis": {"url": server.url}})
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        stored = lambda: counter(gateway.dataplane.metrics.cache.writes, "stored")  # noqa: E731
        first = await stub.ModelInfer(text_proto(["a cached sentence"], request_id="1"), timeout=10)
        await wait_until(lambda: stored() == 1)  # the write is off the request's path
        second = await stub.ModelInfer(text_proto(["a cached sentence"], request_id="2"), timeout=10)
        assert first.parameters["served_by"].string_param == "edge"
        assert second.parameters["served_by"].string_param == "cache"
        assert second.parameters["route_reason"].string_param == "cache_hit"
        assert second.parameters["cache_source"].string_param == "edge"
        assert (first.id, second.id) == ("1", "2")
        assert list(second.raw_output_contents) == list(first.raw_output_contents)
        assert list(second.outputs[0].shape) == [1, 384]

        typed = pb.ModelInferRequest(model_name=MODEL)  # the same tensor as typed contents: same key
        typed.inputs.add(name="text", datatype="BYTES", shape=[1]).contents.bytes_contents.append(b"a cached sentence")
        assert (await stub.ModelInfer(typed, timeout=10)).parameters["served_by"].string_param == "cache"

        bypass = await stub.ModelInfer(text_proto(["a cached sentence"], no_cache=True), timeout=10)
        assert bypass.parameters["served_by"].string_param == "edge"

        cloud = await stub.ModelInfer(text_proto(["a cached sentence"], quality="cloud"), timeout=30)
        assert cloud.parameters["served_by"].string_param == "cloud"  # an edge entry is not cloud quality
        await wait_until(lambda: stored() == 2)
        upgraded = await stub.ModelInfer(text_proto(["a cached sentence"]), timeout=10)
        assert upgraded.parameters["served_by"].string_param == "cache"
        assert upgraded.parameters["cache_source"].string_param == "cloud"
        assert list(upgraded.raw_output_contents) == list(cloud.raw_output_contents)
    exposition, _ = gateway.dataplane.metrics.exposition()
    assert b'edgecloud_gateway_cache_lookups_total{result="hit"} 3.0' in exposition
    assert b'edgecloud_gateway_served_total{reason="cache_hit",served_by="cache"} 3.0' in exposition


async def test_200_concurrent_identical_requests_cause_one_inference(edge_proxy, redis_server,
                                                                     start_cached_gateway):
    server = redis_server()
    # The edge is held (its proxy stalls) until all 199 followers have joined the one computation,
    # however long a busy machine takes to send them; keepalive pings slow enough that the held
    # connection is not closed meanwhile, and enough Redis connections that no GET is "busy".
    gateway = await start_cached_gateway(f"127.0.0.1:{edge_proxy.port}", [], cache={
        "redis": {"url": server.url, "max_connections": 256}}, cloud={"keepalive_time_ms": 600_000},
        probe_interval_ms=600_000)  # no probe times out on the held edge meanwhile
    followers = lambda: counter(gateway.dataplane.metrics.cache.flights, "follower")  # noqa: E731
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        await stub.ModelMetadata(pb.ModelMetadataRequest(name=MODEL), timeout=10)  # not part of the count
        before = decisions(gateway)
        edge_proxy.stall()
        try:
            calls = [asyncio.ensure_future(stub.ModelInfer(text_proto(["one stampede"], request_id=str(i)), timeout=60))
                     for i in range(200)]
            await wait_until(lambda: followers() == 199, timeout=45)
        finally:
            edge_proxy.unstall()
        responses = await asyncio.gather(*calls)
    assert decisions(gateway) - before == 1  # one routed inference for 200 requests
    assert counter(gateway.dataplane.metrics.cache.flights, "leader") == 1
    assert counter(gateway.dataplane.metrics.cache.flights, "follower") == 199
    assert [r.id for r in responses] == [str(i) for i in range(200)]
    assert len({bytes(r.raw_output_contents[0]) for r in responses}) == 1


@pytest.mark.parametrize("fault", ["sigkill", "sigstop"])
async def test_redis_failure_under_load_fails_no_request_and_the_cache_comes_back(fault, edge_process, redis_server,
                                                                                   start_cached_gateway):
    server = redis_server()
    # 2 s bounds: this process (the gateway's too) stopped for a second by a busy machine does not
    # time a Redis reply out; a frozen Redis costs a request a few seconds, far less than the fault.
    gateway = await start_cached_gateway(edge_process.address, [], cache={
        "redis": {"url": server.url, "connect_timeout_ms": 2000, "socket_timeout_ms": 2000},
        "breaker": {"open_ms": 300}})
    texts = [f"load sentence {i}" for i in range(20)]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        for text in texts:  # every text cached before the load: the "before" window is all hits
            await stub.ModelInfer(text_proto([text]), timeout=20)
    await wait_until(lambda: counter(gateway.dataplane.metrics.cache.writes, "stored") == len(texts), timeout=20)

    marks = {}
    metrics = gateway.dataplane.metrics.cache
    # Hits Redis answered: the near cache's copies answer hot keys for up to a second after the
    # fault without asking Redis.
    redis_hits = lambda: counter(metrics.lookups, "hit") - counter(metrics.near_hits)  # noqa: E731

    async def scenario(t0):
        # Windows are judged from when each fault really happened (a busy loop may run this late),
        # and the load lasts until the scenario ends, so a late restart still leaves an "after".
        await asyncio.sleep(1.0)
        marks["fault"] = time.monotonic() - t0  # taken before the fault: what ended earlier never saw it
        server.kill() if fault == "sigkill" else server.pause()
        await asyncio.sleep(0.5)  # replies Redis had sent before it stopped are read by now
        marks["redis_hits_after_fault"] = redis_hits()
        await asyncio.sleep(7.5)
        marks["redis_hits_before_back"] = redis_hits()
        marks["fault_end"] = time.monotonic() - t0  # taken before Redis is back
        if fault == "sigkill":
            await asyncio.to_thread(server.start)  # it waits for Redis to answer: off the loop
        else:
            server.resume()
        marks["back"] = time.monotonic() - t0
        await asyncio.sleep(5.0)
        marks["end"] = time.monotonic() - t0

    try:
        outcomes = await run_repeating_load(f"127.0.0.1:{gateway.grpc_port}", texts, duration_s=None,
                                            concurrency=8, on_tick=scenario)
    finally:
        server.resume()
    errors = [o for o in outcomes if o.error]
    assert not errors, errors[:3]
    # Windows by cause: "before" ended before the fault was made (a request started just before
    # it may reach Redis after it, on a busy machine), "during" ran wholly while Redis was down.
    before = [o for o in outcomes if o.started + o.latency < marks["fault"]]
    started_during = [o for o in outcomes if marks["fault"] + 0.2 < o.started < marks["fault_end"]]
    during = [o for o in started_during if o.started + o.latency < marks["fault_end"]]
    after = [o for o in outcomes if o.started > marks["back"] + 2.0]
    exposition = gateway.dataplane.metrics.exposition()[0].decode()
    cache_lines = [line for line in exposition.splitlines() if "cache" in line and not line.startswith("#")]
    assert before and all(o.served_by == "cache" for o in before), (
        [o for o in before if o.served_by != "cache"][:5], marks, cache_lines)
    # Computed, not failed: no answer came from Redis while it was down, the edge computed them.
    # (A request that joins another's fill gets that fill's answer, labelled a cache hit: with
    # 8 clients cycling 20 texts and GETs waiting out their bound, that is common here.)
    assert during and {o.served_by for o in during} <= {"edge", "cache"}
    assert marks["redis_hits_before_back"] == marks["redis_hits_after_fault"], marks
    assert any(o.served_by == "edge" for o in during), marks
    # Bounded by the 2 s Redis bounds (plus a busy machine's slack), not by the 8 s fault.
    assert max(o.latency for o in started_during) < 6.0
    assert gateway.dataplane.cache.breaker.state is BreakerState.CLOSED
    assert len(after) >= 20 and sum(o.served_by == "cache" for o in after) / len(after) > 0.8, \
        {s: sum(o.served_by == s for o in after) for s in ("cache", "edge")}
