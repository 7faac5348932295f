"""Errors from a backend reach the gateway's clients translated once: a backend that sheds load
reaches a REST client as 503 with ``Retry-After`` and a gRPC client as RESOURCE_EXHAUSTED with its
hint; messages name the field at fault, never an internal hop. Real servers, in process."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import grpc
import pytest

from bench.load import text_request
from cloud_worker.config import CloudConfig
from cloud_worker.worker import CloudWorker
from gateway.config import GatewayConfig
from gateway.server import GatewayServer
from protos import inference_pb2_grpc as pb_grpc
from tests.support.cloud_fakes import FakeEmbeddingRuntime
from tests.support.waiting import wait_until

BODY = {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["shed me"]}]}


@pytest.fixture
async def shedding_edge():
    """An Open Inference Protocol server that admits one request at a time (hint 1.5 s) and whose
    model the test can hold (``runtime.hold()``) and release."""
    runtime = FakeEmbeddingRuntime()
    server = CloudWorker(CloudConfig.model_validate({
        "server": {"port": 0, "metrics_port": None, "max_concurrent_requests": 1, "overload_retry_after_ms": 1500},
        "batching": {"enabled": False}}), runtimes=[runtime])
    await server.start()
    try:
        yield server, runtime
    finally:
        runtime.release()
        await server.stop(0.5)


@pytest.fixture
async def gateway_before(shedding_edge):
    server, _ = shedding_edge
    gateway = GatewayServer(GatewayConfig.model_validate({
        "server": {"port": 0, "metrics_port": None, "http_port": 0, "grace_s": 0.5},
        "edge": {"address": f"127.0.0.1:{server.port}"}, "cloud": {"workers": []},
        "routing": {"threshold_ms": 60_000, "probe_interval_ms": 600_000}}))
    await gateway.start()
    try:
        yield gateway
    finally:
        await gateway.stop(0.5)


async def test_a_backend_shedding_load_reaches_clients_as_overload_with_its_hint(shedding_edge, gateway_before):
    _, runtime = shedding_edge
    gateway = gateway_before
    # The gateway's first probe is one request in flight at the edge: let it end.
    probes = gateway.dataplane.prober._running
    await wait_until(lambda: probes and all(task.done() for task in probes.values()), timeout=20)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        await stub.ModelInfer(text_request(["metadata and warm-up"]), timeout=10)
        runtime.hold()
        held = asyncio.ensure_future(stub.ModelInfer(text_request(["held"]), timeout=30))
        try:
            await asyncio.wait_for(asyncio.to_thread(runtime.running.wait, 20), 25)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.ModelInfer(text_request(["shed over grpc"]), timeout=10)
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert dict(info.value.trailing_metadata())["retry-after"] == "1.500"
            assert "edge" not in info.value.details()
            async with aiohttp.ClientSession() as session:
                url = f"http://127.0.0.1:{gateway.http_port}/v2/models/all-MiniLM-L6-v2/infer"
                async with session.post(url, json=BODY) as response:
                    assert response.status == 503
                    assert response.headers["Retry-After"] == "2"
                    assert "edge" not in json.loads(await response.read())["error"]
        finally:
            runtime.release()
        assert (await held).parameters["served_by"].string_param == "edge"
    assert gateway.dataplane.metrics.errors.labels("overloaded")._value.get() == 2


async def test_request_errors_name_the_field_and_no_hop(shedding_edge, gateway_before):
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway_before.grpc_port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.ModelInfer(text_request(["x"], model="nope"), timeout=10)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        assert info.value.details() == "model_name: unknown model 'nope'"
        not_utf8 = text_request(["x"])
        not_utf8.raw_input_contents[0] = b"\x02\x00\x00\x00\xff\xfe"
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.ModelInfer(not_utf8, timeout=10)
        # Validated by the model at the backend (the gateway cannot know a model's text needs):
        # its message comes back as the backend wrote it, without a prefix naming the hop.
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert info.value.details().startswith("inputs[text]")
