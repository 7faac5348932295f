"""End-to-end smoke tests of the gateway's wiring: a real edge agent process, real cloud worker
processes and a fault proxy. Every dispatch path (hedging, failover, retries, deadlines, ejection)
is unit-tested on fakes and virtual time in ``test_dispatch.py``; these prove the real parts are
connected: the edge serves, a slow edge moves traffic to the cloud and back, a killed worker loses
nothing, and the embedded edge works."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from gateway.routing import RouteState
from protos import inference_pb2 as pb
from protos import inference_pb2_grpc as pb_grpc
from bench.load import text_request
from edgecloud_tools.stack import edge_config, free_port, launch, wait_ready
from gateway.server import GatewayServer
from tests.gateway.conftest import in_process_gateway_config, run_load
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow


async def _infer(address: str, msg, timeout: float = 10.0):
    async with grpc.aio.insecure_channel(address) as channel:
        return await pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(msg, timeout=timeout)


async def test_serves_from_the_edge_and_says_so(edge_proxy, shared_cloud, start_gateway):
    gateway = await start_gateway(f"127.0.0.1:{edge_proxy.port}", [shared_cloud.address])
    address = f"127.0.0.1:{gateway.grpc_port}"
    response = await _infer(address, text_request(["hello gateway"]))
    assert response.parameters["served_by"].string_param == "edge"
    assert response.parameters["route_reason"].string_param == "edge_fast"
    assert response.parameters["variant"].string_param == "int8"
    assert list(response.outputs[0].shape) == [1, 384]
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        meta = await stub.ModelMetadata(pb.ModelMetadataRequest(name="all-MiniLM-L6-v2"))
        assert meta.inputs[0].name == "text" and (await stub.ServerReady(pb.ServerReadyRequest())).ready
    exposition, _ = gateway.dataplane.metrics.exposition()
    assert b'edgecloud_gateway_route_decisions_total{reason="edge_fast",route="edge"}' in exposition
    # Bad input is refused at the gateway, named by field, and never retried.
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await _infer(address, text_request(["x"], model="nope"))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND and info.value.details().startswith("model_name")
    bad = text_request(["x"])
    bad.inputs[0].datatype = "FP32"
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await _infer(address, bad)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details().startswith("inputs[text]")
    assert gateway.dataplane.metrics.retries.labels("allowed")._value.get() == 0


async def test_slow_edge_moves_traffic_to_cloud_and_back_without_flapping(edge_proxy, shared_cloud, start_gateway):
    # A 3 s threshold that a loaded CI machine's edge stays under (a stalled process included), a
    # 10 s slowdown far past it (so an unhedged request could not meet the bound below); probes wait
    # out the slowdown rather than fail, and keepalive pings are slow enough not to close the
    # slowed connection.
    gateway = await start_gateway(f"127.0.0.1:{edge_proxy.port}", [shared_cloud.address],
                                  cloud={"keepalive_time_ms": 600_000}, threshold_ms=3000, recover_probes=5,
                                  probe_interval_ms=100, probe_timeout_ms=30_000)
    policy = gateway.dataplane.policy
    marks = {}

    async def scenario(t0):
        # Marks are taken before each change (what ended earlier never saw it), and the load lasts
        # until the scenario ends, however late a busy machine runs it.
        await asyncio.sleep(2.0)
        marks["slow"] = time.monotonic() - t0
        edge_proxy.set_delay(10.0)
        await asyncio.sleep(10.0)
        marks["recovered"] = time.monotonic() - t0
        edge_proxy.set_delay(0.0)
        await wait_until(lambda: policy.state is RouteState.EDGE_PREFERRED, timeout=30)
        marks["back"] = time.monotonic() - t0
        await asyncio.sleep(3.0)

    outcomes = await run_load(f"127.0.0.1:{gateway.grpc_port}", duration_s=None, concurrency=4, on_tick=scenario)
    errors = [o for o in outcomes if o.error]
    assert not errors, errors[:3]
    slow, recovered, back = marks["slow"], marks["recovered"], marks["back"]
    # Before the slowdown: the edge. Once the threshold has passed: steady state on the cloud.
    before = [o for o in outcomes if o.started + o.latency < slow]
    assert before and all(o.served_by == "edge" for o in before)
    steady_cloud = [o for o in outcomes if slow + 5.0 < o.started and o.started + o.latency < recovered]
    assert steady_cloud and all(o.served_by == "cloud" for o in steady_cloud), \
        [(round(o.started, 2), o.served_by, o.reason) for o in steady_cloud if o.served_by != "cloud"][:5]
    # No request waited much longer than the threshold: hedging bounds the slow ones.
    slow_phase = [o for o in outcomes if slow <= o.started < recovered]
    assert max(o.latency for o in slow_phase) < 3.0 + 4.0  # without hedging: >= 10 s
    # Back on the edge soon after recovery (the held probe answers at once, then five fast ones),
    # and it stays there.
    assert back - recovered < 10.0, marks
    late = [o for o in outcomes if o.started > back + 0.5]
    assert late and all(o.served_by == "edge" for o in late)
    assert policy.transitions == 2  # edge -> cloud -> edge, no flapping


async def test_a_cloud_worker_killed_under_load_loses_no_request(start_cloud_workers, start_gateway):
    workers = start_cloud_workers(2)
    # An attempt bound that bypasses the frozen worker, yet that the survivor, holding all 16 on a
    # busy machine, does not reach.
    gateway = await start_gateway(None, [w.address for w in workers], cloud={"attempt_timeout_ms": 3000})
    victim = workers[0]

    async def scenario(t0):
        await asyncio.sleep(1.5)
        victim.kill()

    outcomes = await run_load(f"127.0.0.1:{gateway.grpc_port}", duration_s=5.0, concurrency=16, on_tick=scenario)
    errors = [o for o in outcomes if o.error]
    assert not errors, errors[:3]
    assert len(outcomes) > 16  # every client got answers
    assert all(o.served_by == "cloud" for o in outcomes)


async def test_an_edge_frozen_under_load_loses_nothing_and_is_multiplexed_again_once_thawed(
        model_dir, stack_dir, shared_cloud):
    edge = launch("edge", edge_config(model_dir, free_port(), threads=1), stack_dir, name="frozen-edge")
    gateway = None
    try:
        wait_ready(edge, 60)
        config = in_process_gateway_config(edge.address, [shared_cloud.address])
        # An edge attempt bound that moves a request stuck on the frozen stream to the cloud.
        config = config.model_copy(update={"edge": config.edge.model_copy(update={"attempt_timeout_ms": 1000})})
        gateway = GatewayServer(config)
        await gateway.start()
        backend = gateway.dataplane.edge
        address = f"127.0.0.1:{gateway.grpc_port}"
        await _infer(address, text_request(["warm the stream"]))
        await wait_until(lambda: backend._mux is not None and backend._mux.ready(), timeout=20)

        async def scenario(t0):
            await asyncio.sleep(1.0)
            edge.pause()  # SIGSTOP: the stream's requests get no answer, the connection goes quiet
            await asyncio.sleep(4.0)
            edge.resume()

        outcomes = await run_load(address, duration_s=7.0, concurrency=8, timeout_s=15.0, on_tick=scenario)
        errors = [o for o in outcomes if o.error]
        assert not errors, errors[:3]
        assert any(o.served_by == "cloud" for o in outcomes) and any(o.served_by == "edge" for o in outcomes)
        await wait_until(lambda: backend._mux.ready(), timeout=30)  # multiplexed again
        for _ in range(100):  # and serving again, once its probes say it is back
            answer = await _infer(address, text_request(["after the thaw"]))
            if answer.parameters["served_by"].string_param == "edge":
                break
            await asyncio.sleep(0.2)
        assert answer.parameters["served_by"].string_param == "edge"
    finally:
        if gateway is not None:
            await gateway.stop(0.5)
        edge.stop()


async def test_embedded_edge_in_the_gateway_process(model_dir, shared_cloud):
    """The device profile: the edge agent runs inside the gateway, the cloud stays remote."""
    from gateway.config import GatewayConfig
    from gateway.server import GatewayServer

    config = GatewayConfig.model_validate({
        "server": {"port": 0, "metrics_port": None},
        "edge": {"address": None, "embedded": {"models": [{"path": str(model_dir), "intra_op_threads": 1}]}},
        "cloud": {"workers": [shared_cloud.address]},
        "routing": {"threshold_ms": 60_000},  # the edge serves, however busy the machine
    })
    gateway = GatewayServer(config)
    await gateway.start()
    try:
        address = f"127.0.0.1:{gateway.grpc_port}"
        response = await _infer(address, text_request(["embedded edge"]))
        assert response.parameters["served_by"].string_param == "edge"
        assert response.parameters["variant"].string_param == "int8"
        bad = text_request(["x"])
        bad.inputs[0].datatype = "INT8"
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await _infer(address, bad)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        cloud = text_request(["cloud quality"])
        cloud.parameters["quality"].string_param = "cloud"
        assert (await _infer(address, cloud)).parameters["served_by"].string_param == "cloud"
    finally:
        await gateway.stop(0.5)


async def test_a_stall_of_the_gateways_own_loop_does_not_move_traffic(edge_proxy, start_gateway):
    """A heavy request decoded on the gateway's loop (here: the loop blocked outright for 1.5 s
    while requests were in flight at a healthy edge) is the gateway's stall, not the edge's."""
    gateway = await start_gateway(f"127.0.0.1:{edge_proxy.port}", [], threshold_ms=1000, probe_interval_ms=100)
    address = f"127.0.0.1:{gateway.grpc_port}"
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        for _ in range(5):
            await stub.ModelInfer(text_request(["warm"]), timeout=30)
        edge_proxy.set_delay(0.05)  # answers arrive while the loop is stuck, however fast the edge
        for _ in range(2):
            calls = [asyncio.ensure_future(stub.ModelInfer(text_request([f"in flight {i}"]), timeout=30))
                     for i in range(6)]
            await asyncio.sleep(0.005)  # sent: the edge is answering them
            time.sleep(1.5)  # the gateway's loop (this test's loop too) is stuck
            answers = await asyncio.gather(*calls)
            assert all(a.parameters["served_by"].string_param == "edge" for a in answers)
    dataplane = gateway.dataplane
    assert dataplane.policy.transitions == 0 and dataplane.policy.state is RouteState.EDGE_PREFERRED
    assert dataplane.metrics.discarded_samples._value.get() >= 2
