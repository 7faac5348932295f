"""The edge agent's gRPC server, real on port 0: protocol, health, reflection, bad input."""

from __future__ import annotations

import asyncio

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from edgecloud.codec import serialize_bytes
from edgecloud.config import LimitsSettings, ServerSettings
from edge_agent.config import EdgeConfig, ModelSettings
from edge_agent.server import EdgeServer
from protos import inference_pb2 as pb
from protos import inference_pb2_grpc as pb_grpc
from tests.support.waiting import wait_until

MODEL = "all-MiniLM-L6-v2"
MAX_MESSAGE = 256 * 1024


@pytest.fixture
async def edge(model_dir):
    config = EdgeConfig(
        server=ServerSettings(port=0, max_message_bytes=MAX_MESSAGE, grace_s=1),
        limits=LimitsSettings(max_batch_size=64),
        models=[ModelSettings(path=model_dir, intra_op_threads=2)],
    )
    server = EdgeServer(config)
    port = await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    yield server, channel, pb_grpc.GRPCInferenceServiceStub(channel)
    await channel.close()
    await server.stop(0.5)


def text_request(texts: list[bytes], model: str = MODEL, shape=None) -> pb.ModelInferRequest:
    msg = pb.ModelInferRequest(model_name=model, id="t")
    msg.inputs.add(name="text", datatype="BYTES", shape=shape if shape is not None else [len(texts)])
    msg.raw_input_contents.append(serialize_bytes(texts))
    return msg


def embedding_of(response: pb.ModelInferResponse) -> np.ndarray:
    shape = list(response.outputs[0].shape)
    return np.frombuffer(response.raw_output_contents[0], dtype="<f4").reshape(shape)


async def test_health_metadata_and_infer(edge):
    _, channel, stub = edge
    assert (await stub.ServerLive(pb.ServerLiveRequest())).live
    assert (await stub.ServerReady(pb.ServerReadyRequest())).ready
    assert (await stub.ModelReady(pb.ModelReadyRequest(name=MODEL))).ready
    meta = await stub.ModelMetadata(pb.ModelMetadataRequest(name=MODEL))
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [("text", "BYTES", [-1])]
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.outputs] == [("embedding", "FP32", [-1, 384])]
    assert (await stub.ServerMetadata(pb.ServerMetadataRequest())).name == "edgecloud-edge"
    response = await stub.ModelInfer(text_request([b"hello", b"world"]))
    assert response.id == "t" and response.parameters["variant"].string_param == "int8"
    assert embedding_of(response).shape == (2, 384)
    health = health_pb2_grpc.HealthStub(channel)
    status = await health.Check(health_pb2.HealthCheckRequest(service="inference.GRPCInferenceService"))
    assert status.status == health_pb2.HealthCheckResponse.SERVING


async def test_typed_and_raw_inputs_give_the_same_answer(edge):
    _, _, stub = edge
    typed = pb.ModelInferRequest(model_name=MODEL)
    typed.inputs.add(name="text", datatype="BYTES", shape=[1]).contents.bytes_contents.append(b"same text")
    a = embedding_of(await stub.ModelInfer(typed))
    b = embedding_of(await stub.ModelInfer(text_request([b"same text"])))
    np.testing.assert_array_equal(a, b)


async def test_reflection_lists_the_services(edge):
    _, channel, _ = edge
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)

    async def requests():
        yield reflection_pb2.ServerReflectionRequest(list_services="")

    async for response in stub.ServerReflectionInfo(requests()):
        names = {s.name for s in response.list_services_response.service}
        assert {"inference.GRPCInferenceService", "grpc.health.v1.Health"} <= names
        break


def _raw_mutation(mutate):
    msg = text_request([b"hello"])
    mutate(msg)
    return msg


BAD_REQUESTS = {
    "unknown-model": (text_request([b"x"], model="nope"), grpc.StatusCode.NOT_FOUND, "model_name"),
    "unknown-version": (_raw_mutation(lambda m: setattr(m, "model_version", "9")), grpc.StatusCode.NOT_FOUND,
                        "model_version"),
    "wrong-dtype": (_raw_mutation(lambda m: setattr(m.inputs[0], "datatype", "FP32")),
                    grpc.StatusCode.INVALID_ARGUMENT, "inputs[text]"),
    "wrong-shape": (text_request([b"a", b"b"], shape=[1, 2]), grpc.StatusCode.INVALID_ARGUMENT,
                    "inputs[text].shape"),
    "element-count": (text_request([b"a", b"b"], shape=[3]), grpc.StatusCode.INVALID_ARGUMENT, "inputs[text]"),
    "byte-size": (_raw_mutation(lambda m: m.raw_input_contents.__setitem__(0, b"\x05\x00\x00\x00ab")),
                  grpc.StatusCode.INVALID_ARGUMENT, "inputs[text]"),
    "missing-input": (_raw_mutation(lambda m: setattr(m.inputs[0], "name", "txt")),
                      grpc.StatusCode.INVALID_ARGUMENT, "inputs"),
    "extra-input": (_raw_mutation(lambda m: (m.inputs.add(name="more", datatype="BYTES", shape=[1]),
                                             m.raw_input_contents.append(serialize_bytes([b"x"])))),
                    grpc.StatusCode.INVALID_ARGUMENT, "inputs[more]"),
    "empty-batch": (text_request([], shape=[0]), grpc.StatusCode.INVALID_ARGUMENT, "inputs[text].shape"),
    "invalid-utf8": (text_request([b"ok", b"\xc3\x28"]), grpc.StatusCode.INVALID_ARGUMENT, "inputs[text]"),
    "negative-dim": (text_request([b"a"], shape=[-1]), grpc.StatusCode.INVALID_ARGUMENT, "inputs[text].shape"),
    "huge-dim": (text_request([b"a"], shape=[2**62]), grpc.StatusCode.RESOURCE_EXHAUSTED, "inputs[text].shape"),
    "batch-over-limit": (text_request([b"a"] * 65), grpc.StatusCode.INVALID_ARGUMENT, "inputs[text].shape"),
    "unknown-output": (_raw_mutation(lambda m: m.outputs.add(name="logits")), grpc.StatusCode.INVALID_ARGUMENT,
                       "outputs[logits]"),
    "no-inputs": (pb.ModelInferRequest(model_name=MODEL), grpc.StatusCode.INVALID_ARGUMENT, "inputs"),
}


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
async def test_bad_input_gets_a_clear_error_and_the_server_keeps_serving(edge, case):
    server, _, stub = edge
    msg, code, field = BAD_REQUESTS[case]
    model = server.agent.models[0]
    calls = []
    original = model.embed_texts
    model.embed_texts = lambda texts: calls.append(texts) or original(texts)
    try:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.ModelInfer(msg)
        assert info.value.code() == code, info.value.details()
        assert info.value.details().startswith(field), info.value.details()
        assert "/" not in info.value.details().split(":")[0]  # names a field, not a path
        assert calls == [], "the model ran on a bad request"
    finally:
        model.embed_texts = original
    response = await stub.ModelInfer(text_request([b"still serving"]))
    assert embedding_of(response).shape == (1, 384)


async def test_oversize_message_is_resource_exhausted(edge):
    _, _, stub = edge
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.ModelInfer(text_request([b"x" * (MAX_MESSAGE + 10)]))
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert embedding_of(await stub.ModelInfer(text_request([b"fine"]))).shape == (1, 384)


async def test_expired_deadline_never_reaches_the_model(edge):
    server, _, stub = edge
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.ModelInfer(text_request([b"x"] * 64), timeout=0.0005)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


async def test_graceful_stop_drains_in_flight_requests(model_dir, monkeypatch):
    # A grace no busy machine runs out of: the drain, not its speed, is under test.
    config = EdgeConfig(server=ServerSettings(port=0, grace_s=60), models=[ModelSettings(path=model_dir)])
    server = EdgeServer(config)
    port = await server.start()
    model = server.agent.models[0]
    release = asyncio.Event()
    compute = model.infer

    async def held(request):
        await release.wait()
        return await compute(request)

    monkeypatch.setattr(model, "infer", held)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        health = health_pb2_grpc.HealthStub(channel)
        texts = [f"in flight request {i} with several words" .encode() for i in range(128)]
        in_flight = asyncio.ensure_future(stub.ModelInfer(text_request(texts)))
        admission = server.agent.dataplane.admission
        await wait_until(lambda: admission.in_flight)  # the server holds it (a busy machine may take a while)
        assert admission.in_flight == 1
        stopping = asyncio.ensure_future(server.stop(60))
        not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
        while (await health.Check(health_pb2.HealthCheckRequest(service=""))).status != not_serving:
            await asyncio.sleep(0.01)
        # Draining: a call arriving now (its client's balancer has not moved yet) is still served.
        late = asyncio.ensure_future(stub.ModelInfer(text_request([b"while stopping"]), timeout=60))
        await wait_until(lambda: admission.in_flight == 2)
        assert not stopping.done()
        release.set()
        response = await in_flight
        assert embedding_of(response).shape == (128, 384)
        assert embedding_of(await late).shape == (1, 384)
        await stopping
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.ModelInfer(text_request([b"after stop"]), timeout=2)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_edge_serves_rest_when_http_port_is_set(model_dir):
    import aiohttp

    config = EdgeConfig(server=ServerSettings(port=0, http_port=0), models=[ModelSettings(path=model_dir)])
    server = EdgeServer(config)
    await server.start()
    try:
        body = {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["rest on the edge"]}]}
        async with aiohttp.ClientSession() as session:
            async with session.post(f"http://127.0.0.1:{server.http_port}/v2/models/{MODEL}/infer",
                                    json=body) as response:
                assert response.status == 200
                assert (await response.json())["outputs"][0]["shape"] == [1, 384]
    finally:
        await server.stop(0.5)


async def test_a_request_past_its_timeout_parameter_is_dropped_before_the_model(edge):
    # tritonclient's ``timeout=`` (and a multiplexing gateway's per-request bound): microseconds.
    _, _, stub = edge
    expired = text_request([b"worth nothing by now"])
    expired.parameters["timeout"].int64_param = 1
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.ModelInfer(expired)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    in_time = text_request([b"worth a minute"])
    in_time.parameters["timeout"].int64_param = 60_000_000
    assert embedding_of(await stub.ModelInfer(in_time)).shape == (1, 384)
