"""What a client learns when the gateway's backend is gone: that it is unavailable, never where it lives.

A cloud worker on port 0 (with the fake embedding runtime, no torch) stands in as the gateway's
edge; the gateway learns the model's metadata through it, then the worker stops. The next requests
fail over gRPC and over HTTP with UNAVAILABLE / 503, and the message must not carry the upstream's
address (``ipv4:127.0.0.1:PORT``) or grpc's connection diagnostics.
"""

from __future__ import annotations

import aiohttp
import grpc
import pytest

from cloud_worker.config import CloudConfig
from tests.support.cloud_fakes import FakeEmbeddingRuntime
from cloud_worker.worker import CloudWorker
from gateway.config import GatewayConfig
from gateway.server import GatewayServer
from tests.hostile.servers import good_grpc_request, good_http_body, leaks_in
from protos import inference_pb2_grpc as pb_grpc

async def test_a_dead_backend_is_reported_without_its_address():
    worker = CloudWorker(CloudConfig.model_validate({"server": {"port": 0, "metrics_port": None, "grace_s": 0},
                                                     "runtime": {"device": "cpu", "intra_op_threads": 1}}),
                         runtimes=[FakeEmbeddingRuntime()])
    port = await worker.start()
    gateway = GatewayServer(GatewayConfig.model_validate({
        "server": {"port": 0, "metrics_port": None, "http_port": 0, "grace_s": 0},
        "edge": {"address": f"127.0.0.1:{port}"}, "cloud": {"workers": []},
        "routing": {"probe_interval_ms": 600_000, "failures_to_down": 10},
    }))
    await gateway.start()
    messages: list[str] = []
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel, \
                aiohttp.ClientSession() as http:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            await stub.ModelInfer(good_grpc_request(), timeout=10)  # metadata is now cached
            await worker.stop(0)
            for _ in range(2):
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await stub.ModelInfer(good_grpc_request(), timeout=10)
                assert info.value.code() == grpc.StatusCode.UNAVAILABLE
                messages.append(info.value.details())
                async with http.post(f"http://127.0.0.1:{gateway.http_port}/v2/models/all-MiniLM-L6-v2/infer",
                                     data=good_http_body(), headers={"Content-Type": "application/json"}) as reply:
                    assert reply.status == 503
                    messages.append((await reply.json())["error"])
    finally:
        await gateway.stop(0)
        await worker.stop(0)
    leaked = {message: leaks_in(message) for message in messages if leaks_in(message)}
    assert not leaked, leaked
