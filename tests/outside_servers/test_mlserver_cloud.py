"""An unmodified Seldon MLServer from PyPI as the gateway's cloud tier: a real ``mlserver start``
process serving the reference embedding model (FP32, through the custom runtime in
``mlserver_model/``) behind a real in-process gateway with no edge. Routing (gRPC, raw and typed
tensors, and HTTP), model metadata and readiness, the Redis cache and failover between workers all
work against it, its answers agree with edgecloud's own torch FP32 cloud worker, and bad input
still comes back as INVALID_ARGUMENT."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import grpc
import numpy as np
import pytest

from bench.load import closed_loop, text_request
from gateway.client import AsyncClient
from gateway.server import GatewayServer
from protos import inference_pb2 as pb
from protos import inference_pb2_grpc as pb_grpc
from tests.gateway.conftest import in_process_gateway_config
from tests.outside_servers.conftest import MODEL_NAME
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow

TEXTS = ["the lights in the kitchen are on", "switch the lamp off", "Ünïcödé text, with punctuation!"]
MIN_COSINE = 0.999


@pytest.fixture
async def start_gateway():
    """``await start_gateway(workers, cache=..., cloud=...)``: an in-process gateway with no edge,
    gRPC and HTTP on port 0; stopped at teardown."""
    servers: list[GatewayServer] = []

    async def start(workers: list[str], *, cache: dict | None = None, cloud: dict | None = None) -> GatewayServer:
        config = in_process_gateway_config(None, workers, cloud={"attempt_timeout_ms": 10_000, **(cloud or {})},
                                           cache=cache, http=True)
        server = GatewayServer(config)
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop(0.5)


@pytest.fixture(scope="module")
def reference(project_cloud) -> np.ndarray:
    """edgecloud's own cloud worker's FP32 answer for ``TEXTS``, asked directly."""
    with grpc.insecure_channel(project_cloud.address) as channel:
        response = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(text_request(TEXTS), timeout=60)
    return _embeddings(response)


def _embeddings(response: pb.ModelInferResponse) -> np.ndarray:
    (output,) = response.outputs
    assert output.name == "embedding" and output.datatype == "FP32"
    if response.raw_output_contents:
        values = np.frombuffer(response.raw_output_contents[0], dtype="<f4")
    else:
        values = np.asarray(output.contents.fp32_contents, dtype=np.float32)
    return values.reshape(tuple(output.shape))


def _assert_close(embeddings: np.ndarray, reference: np.ndarray) -> None:
    assert embeddings.shape == reference.shape == (len(TEXTS), 384)
    cosines = np.sum(embeddings * reference, axis=1) / (
        np.linalg.norm(embeddings, axis=1) * np.linalg.norm(reference, axis=1))
    assert cosines.min() >= MIN_COSINE, cosines
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-4)


def _where(response: pb.ModelInferResponse) -> tuple[str, str]:
    return (response.parameters["served_by"].string_param, response.parameters["route_reason"].string_param)


def _typed_request(texts: list[str]) -> pb.ModelInferRequest:
    msg = pb.ModelInferRequest(model_name=MODEL_NAME)
    msg.inputs.add(name="text", datatype="BYTES", shape=[len(texts)]).contents.bytes_contents.extend(
        t.encode() for t in texts)
    return msg


async def test_mlserver_answers_through_the_gateway_as_edgecloud_cloud_answers(mlserver, reference, start_gateway):
    gateway = await start_gateway([mlserver.address])
    address = f"127.0.0.1:{gateway.grpc_port}"
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        raw = await stub.ModelInfer(text_request(TEXTS), timeout=30)  # raw_input_contents
        typed = await stub.ModelInfer(_typed_request(TEXTS), timeout=30)  # typed contents
    for response in (raw, typed):
        assert _where(response) == ("cloud", "edge_down")
        assert response.parameters["variant"].string_param == "fp32"  # MLServer's runtime says so
        assert response.model_name == MODEL_NAME
        _assert_close(_embeddings(response), reference)

    async with AsyncClient(address, timeout_s=30) as client:  # the project's SDK
        result = await client.embed(TEXTS)
    assert (result.served_by, result.variant) == ("cloud", "fp32")
    _assert_close(result.embeddings, reference)

    body = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [len(TEXTS)], "data": TEXTS}]}
    async with aiohttp.ClientSession() as session:
        async with session.post(f"http://127.0.0.1:{gateway.http_port}/v2/models/{MODEL_NAME}/infer",
                                json=body) as reply:
            assert reply.status == 200, await reply.text()
            answer = await reply.json()
    assert answer["parameters"]["served_by"] == "cloud"
    (output,) = answer["outputs"]
    _assert_close(np.asarray(output["data"], dtype=np.float32).reshape(output["shape"]), reference)


async def test_metadata_and_readiness_through_the_gateway_are_mlservers(mlserver, start_gateway):
    gateway = await start_gateway([mlserver.address])
    async with AsyncClient(f"127.0.0.1:{gateway.grpc_port}", timeout_s=30) as client:
        meta = await client.model_metadata(MODEL_NAME)
        assert await client.model_ready(MODEL_NAME)
        assert await client.server_ready()
    # What MLServer advertises (model-settings.json), not what edgecloud's worker would.
    assert meta.platform == "onnxruntime_onnx"
    assert meta.versions == ("1",)
    assert [(t.name, t.datatype, t.shape) for t in meta.inputs] == [("text", "BYTES", (-1,))]
    assert [(t.name, t.datatype, t.shape) for t in meta.outputs] == [("embedding", "FP32", (-1, 384))]

    base = f"http://127.0.0.1:{gateway.http_port}/v2/models"
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base}/{MODEL_NAME}") as reply:
            assert reply.status == 200
            assert (await reply.json())["platform"] == "onnxruntime_onnx"
        async with session.get(f"{base}/{MODEL_NAME}/ready") as reply:
            assert reply.status == 200
        async with session.get(f"{base}/no-such-model") as reply:
            assert reply.status == 404  # MLServer's NOT_FOUND, passed on


async def test_bad_input_against_mlserver_is_invalid_argument(mlserver, start_gateway):
    gateway = await start_gateway([mlserver.address])
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        await stub.ModelMetadata(pb.ModelMetadataRequest(name=MODEL_NAME), timeout=30)

        wrong_dtype = text_request(["x"])
        wrong_dtype.inputs[0].datatype = "FP32"
        wrong_shape = text_request(["x"])
        wrong_shape.inputs[0].shape[:] = [1, 1]
        miscounted = text_request(["x", "y"])
        miscounted.inputs[0].shape[:] = [3]
        for bad in (wrong_dtype, wrong_shape, miscounted):  # refused by the gateway, from MLServer's metadata
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.ModelInfer(bad, timeout=30)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value
            assert info.value.details().startswith("inputs[text]"), info.value.details()

        # Past the gateway's checks, refused by MLServer's runtime: its INVALID_ARGUMENT comes
        # back as such, is not retried elsewhere and does not count against the worker.
        not_utf8 = _typed_request(["x"])
        not_utf8.inputs[0].contents.bytes_contents[0] = b"\xff\xfe"
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.ModelInfer(not_utf8, timeout=30)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value
        assert _where(await stub.ModelInfer(text_request(["still fine"]), timeout=30))[0] == "cloud"
    assert gateway.dataplane.metrics.retries.labels("allowed")._value.get() == 0
    assert all(worker.up for worker in gateway.dataplane.pool.workers)

    async with aiohttp.ClientSession() as session:
        body = {"inputs": [{"name": "text", "datatype": "FP32", "shape": [1], "data": [1.0]}]}
        async with session.post(f"http://127.0.0.1:{gateway.http_port}/v2/models/{MODEL_NAME}/infer",
                                json=body) as reply:
            assert reply.status == 400, await reply.text()


async def test_a_repeat_is_served_from_the_cache(mlserver, redis_url, start_gateway):
    gateway = await start_gateway([mlserver.address], cache={"enabled": True, "redis": {"url": redis_url}})
    stored = gateway.dataplane.metrics.cache.writes.labels("stored")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        first = await stub.ModelInfer(text_request(["a sentence MLServer embeds once"]), timeout=30)
        await wait_until(lambda: stored._value.get() == 1, timeout=10)  # written off the request's path
        second = await stub.ModelInfer(_typed_request(["a sentence MLServer embeds once"]), timeout=30)
    assert _where(first)[0] == "cloud"
    assert _where(second) == ("cache", "cache_hit")
    assert second.parameters["cache_source"].string_param == "cloud"
    np.testing.assert_array_equal(_embeddings(second), _embeddings(first))
    exposition, _ = gateway.dataplane.metrics.exposition()
    assert b'edgecloud_gateway_cache_lookups_total{result="hit"} 1.0' in exposition


async def test_a_killed_mlserver_in_a_mixed_pool_fails_no_request(start_mlserver, project_cloud, reference,
                                                                  start_gateway):
    victim = start_mlserver("victim")
    # An attempt bound that bypasses the dead worker, yet that the survivor, holding all the load
    # on a busy machine, does not reach.
    gateway = await start_gateway([victim.address, project_cloud.address], cloud={"attempt_timeout_ms": 3000})
    address = f"127.0.0.1:{gateway.grpc_port}"
    async with AsyncClient(address, timeout_s=30) as client:
        _assert_close((await client.embed(TEXTS)).embeddings, reference)
    workers = gateway.dataplane.pool.workers
    busiest = {worker.name: 0 for worker in workers}  # most calls in flight seen on each worker

    async def scenario(t0):
        while time.monotonic() - t0 < 2.0:
            for worker in workers:
                busiest[worker.name] = max(busiest[worker.name], worker.outstanding)
            await asyncio.sleep(0.01)
        victim.kill()  # SIGKILL
        await asyncio.sleep(3.0)

    outcomes = await closed_loop(address, duration_s=None, concurrency=6, timeout_s=15, events=scenario)
    errors = [o for o in outcomes if o.error]
    assert not errors, errors[:3]
    assert len(outcomes) > 6 and all(o.served_by == "cloud" for o in outcomes)
    # Both workers, MLServer and edgecloud's own, took requests before the kill.
    assert all(busiest.values()), busiest
    # The calls the kill cut off were retried on the survivor.
    assert gateway.dataplane.metrics.retries.labels("allowed")._value.get() >= 1
    (dead,) = [worker for worker in workers if worker.address == victim.address]
    await wait_until(lambda: not dead.up, timeout=10)  # marked down by its failed probes
    async with AsyncClient(address, timeout_s=30) as client:
        _assert_close((await client.embed(TEXTS)).embeddings, reference)
