"""Outside clients against the gateway: the unmodified tritonclient over gRPC (and HTTP)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest


async def test_tritonclient_grpc_through_the_gateway(edge_proxy, shared_cloud, start_gateway, tritonclient_check):
    gateway = await start_gateway(f"127.0.0.1:{edge_proxy.port}", [shared_cloud.address])
    seen = await asyncio.to_thread(tritonclient_check, "grpc", f"127.0.0.1:{gateway.grpc_port}",
                                   "all-MiniLM-L6-v2", "--text", "through the gateway", "--bad-model", "nope",
                                   "--class-count", "3")
    assert seen["live"] and seen["ready"] and seen["model_ready"]
    # The classification extension, through the gateway to the edge: the top 3 as "value:index".
    assert seen["classification_shape"] == [1, 3]
    embedding = seen["embedding"][0]
    top = sorted(range(len(embedding)), key=lambda i: (-embedding[i], i))[:3]
    assert [int(item.split(":")[1]) for item in seen["classification"]] == top
    assert [float(item.split(":")[0]) for item in seen["classification"]] == \
        pytest.approx([embedding[i] for i in top], abs=1e-6)
    assert seen["server_name"] == "edgecloud-gateway"
    assert seen["model_metadata"]["outputs"] == [{"name": "embedding", "datatype": "FP32", "shape": [-1, 384]}]
    assert seen["embedding_shape"] == [1, 384]
    assert seen["response_parameters"]["served_by"].strip().endswith('"edge"')
    assert seen["bad_model"]["status"] == "StatusCode.NOT_FOUND"
    assert seen["after_error_shape"] == [1, 384]


async def test_tritonclient_sees_cloud_when_edge_is_slow(edge_proxy, shared_cloud, start_gateway,
                                                         tritonclient_check):
    gateway = await start_gateway(f"127.0.0.1:{edge_proxy.port}", [shared_cloud.address], threshold_ms=100,
                                  hedge_after_ms=100)
    edge_proxy.set_delay(3.0)  # the hedge to the cloud wins with seconds to spare, even on a busy box
    seen = await asyncio.to_thread(tritonclient_check, "grpc", f"127.0.0.1:{gateway.grpc_port}",
                                   "all-MiniLM-L6-v2", "--text", "slow edge")
    edge_proxy.restore()
    assert seen["embedding_shape"] == [1, 384]
    assert seen["response_parameters"]["served_by"].strip().endswith('"cloud"')


async def test_rest_front_and_tritonclient_http_through_the_gateway(edge_proxy, shared_cloud, tritonclient_check):
    import aiohttp

    from gateway.config import GatewayConfig
    from gateway.server import GatewayServer

    config = GatewayConfig.model_validate({
        "server": {"port": 0, "metrics_port": 0, "http_port": 0, "grace_s": 1},
        "edge": {"address": f"127.0.0.1:{edge_proxy.port}"},
        "cloud": {"workers": [{"name": "gpu-a", "address": shared_cloud.address}]},
        "routing": {"threshold_ms": 60_000},  # the edge serves, however busy the machine
    })
    gateway = GatewayServer(config)
    await gateway.start()
    base = f"http://127.0.0.1:{gateway.http_port}"
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{base}/v2/health/ready") as response:
                assert response.status == 200
            async with session.get(f"{base}/v2/models/all-MiniLM-L6-v2") as response:
                assert (await response.json())["inputs"][0]["name"] == "text"
            body = {"inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": ["hello", "rest"]}]}
            async with session.post(f"{base}/v2/models/all-MiniLM-L6-v2/infer", json=body) as response:
                assert response.status == 200
                assert response.headers["X-Edgecloud-Served-By"] == "edge"
                assert response.headers["X-Edgecloud-Route-Reason"] == "edge_fast"
                payload = await response.json()
                assert payload["outputs"][0]["shape"] == [2, 384]
                assert payload["parameters"]["served_by"] == "edge"
            bad = {"inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": ["one"]}]}
            async with session.post(f"{base}/v2/models/all-MiniLM-L6-v2/infer", json=bad) as response:
                assert response.status == 400 and "inputs[text]" in (await response.json())["error"]
            async with session.post(f"{base}/v2/models/nope/infer", json=body) as response:
                assert response.status == 404
            async with session.get(f"{base}/metrics") as response:
                assert response.status == 404  # metrics are for operators: not on the public port
            async with session.get(f"http://127.0.0.1:{gateway.metrics_port}/metrics") as response:
                exposition = await response.text()
            assert "edgecloud_gateway_route_decisions_total" in exposition
            assert 'backend="gpu-a"' in exposition and shared_cloud.address not in exposition
        seen = await asyncio.to_thread(tritonclient_check, "http", f"127.0.0.1:{gateway.http_port}",
                                       "all-MiniLM-L6-v2", "--text", "triton over http", "--bad-model", "nope")
        assert seen["live"] and seen["ready"] and seen["model_ready"]
        assert seen["embedding_shape"] == [1, 384]
        assert seen["response_parameters"]["served_by"] == "edge"
        assert "404" in seen["bad_model"]["status"] or "model_name" in seen["bad_model"]["message"]
        # tritonclient.http's timeout= (microseconds, in the JSON body's parameters) bounds the call
        # as it does over gRPC: the edge held 3 s, the client's 300 ms end it with a 504.
        edge_proxy.set_delay(3.0)
        try:
            seen = await asyncio.to_thread(tritonclient_check, "http", f"127.0.0.1:{gateway.http_port}",
                                           "all-MiniLM-L6-v2", "--text", "a timeout", "--timeout-us", "300000")
        finally:
            edge_proxy.restore()
        assert seen["with_timeout"]["status"] == "504", seen["with_timeout"]  # without it: OK after 3 s
    finally:
        await gateway.stop(0.5)


async def test_sdk_through_the_gateway_reports_where_served(edge_proxy, shared_cloud, start_gateway):
    from edgecloud.errors import InvalidArgument, NotFound
    from gateway.client import AsyncClient, Client

    gateway = await start_gateway(f"127.0.0.1:{edge_proxy.port}", [shared_cloud.address])
    address = f"127.0.0.1:{gateway.grpc_port}"
    async with AsyncClient(address) as client:
        result = await client.embed(["the SDK through the gateway", "second"])
        assert result.embeddings.shape == (2, 384)
        assert (result.served_by, result.route_reason, result.variant) == ("edge", "edge_fast", "int8")
        cloud = await client.embed(["cloud quality please"], parameters={"quality": "cloud"})
        assert (cloud.served_by, cloud.route_reason, cloud.variant) == ("cloud", "quality_cloud", "fp32")
        with pytest.raises(NotFound):
            await client.embed(["x"], model="nope")

    def sync_calls():
        with Client(address) as client:
            assert client.server_ready()
            with pytest.raises(InvalidArgument):
                client.infer("all-MiniLM-L6-v2", {"text": np.zeros(2, dtype=np.float32)})
            return client.embed(["sync client"]).served_by

    assert await asyncio.to_thread(sync_calls) == "edge"
