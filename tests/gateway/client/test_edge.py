"""Client and AsyncClient against a real edge agent: embed, infer, metadata, health, typed
errors (not retried), deadlines."""

from __future__ import annotations

import asyncio

import grpc
import numpy as np
import pytest

from edgecloud.types import TensorSpec
from gateway.client import (
    AsyncClient,
    Client,
    DeadlineExceeded,
    InvalidArgument,
    NotFound,
    RetryPolicy,
)
from tests.support.waiting import wait_until

MODEL = "all-MiniLM-L6-v2"
TEXTS = ["A cat sits on the mat.", "A kitten rests on a rug.", "Quarterly revenue grew by four percent."]


def _check_embeddings(result, count: int) -> None:
    assert result.embeddings.shape == (count, 384)
    assert result.embeddings.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(result.embeddings, axis=1), 1.0, atol=1e-3)
    assert result.model_name == MODEL
    assert result.variant == "int8"
    assert result.served_by is None and result.route_reason is None  # a bare edge agent does not route


def test_sync_embed_infer_metadata_and_health(edge):
    with Client(edge.address) as client:
        assert client.server_live() and client.server_ready()
        assert client.model_ready(MODEL)
        meta = client.model_metadata(MODEL)
        assert meta.name == MODEL
        assert meta.inputs == (TensorSpec("text", "BYTES", (-1,)),)
        assert meta.outputs == (TensorSpec("embedding", "FP32", (-1, 384)),)
        assert client.server_metadata().name == "edgecloud-edge"

        result = client.embed(TEXTS)
        _check_embeddings(result, len(TEXTS))
        similarity = result.embeddings @ result.embeddings.T
        assert similarity[0, 1] > similarity[0, 2]  # the two cat sentences are closer

        generic = client.infer(MODEL, {"text": np.array(TEXTS, dtype=object)}, request_id="r-1")
        assert generic.id == "r-1" and list(generic.outputs) == ["embedding"]
        np.testing.assert_allclose(generic.as_numpy("embedding"), result.embeddings, atol=1e-6)


async def test_async_embed_infer_metadata_and_health(edge):
    async with AsyncClient(edge.address) as client:
        assert await client.server_live() and await client.server_ready()
        assert await client.model_ready(MODEL)
        meta = await client.model_metadata(MODEL)
        assert [spec.name for spec in meta.outputs] == ["embedding"]
        result = await client.embed(TEXTS[:2])
        _check_embeddings(result, 2)
        generic = await client.infer(MODEL, {"text": [b"bytes work too", "and str"]}, outputs=["embedding"])
        assert generic.as_numpy("embedding").shape == (2, 384)


async def test_async_concurrent_calls_share_one_channel(edge):
    async with AsyncClient(edge.address) as client:
        results = await asyncio.gather(*(client.embed([f"sentence number {i}"]) for i in range(8)))
    assert all(r.embeddings.shape == (1, 384) for r in results)


def test_same_answer_from_both_clients(edge):
    with Client(edge.address) as client:
        sync_answer = client.embed(["same text"]).embeddings

    async def run():
        async with AsyncClient(edge.address) as client:
            return (await client.embed(["same text"])).embeddings

    np.testing.assert_array_equal(asyncio.run(run()), sync_answer)


def test_unknown_model_is_not_found_and_not_retried(edge, sleeps):
    with Client(edge.address, sleep=sleeps) as client:
        with pytest.raises(NotFound) as info:
            client.embed(["x"], model="no-such-model")
        with pytest.raises(NotFound):
            client.model_metadata("no-such-model")
    assert info.value.message.startswith("model_name")
    assert isinstance(info.value.__cause__, grpc.RpcError)
    assert sleeps.delays == []  # a retry always sleeps first


@pytest.mark.parametrize("inputs", [
    {"text": np.zeros((2,), dtype=np.float32)},       # wrong datatype
    {"text": [b"ok", b"\xc3\x28"]},                    # invalid UTF-8
    {"text": ["a"], "extra": ["b"]},                   # an input the model does not have
    {"text": np.array([["a", "b"]], dtype=object)},    # wrong rank
])
async def test_bad_input_is_invalid_argument_and_not_retried(edge, sleeps, inputs):
    async with AsyncClient(edge.address, sleep=sleeps.asleep) as client:
        with pytest.raises(InvalidArgument) as info:
            await client.infer(MODEL, inputs)
    assert info.value.message.startswith("inputs")
    assert sleeps.delays == []


async def test_invalid_argument_is_tried_once_on_the_server(scripted, sleeps):
    server = scripted(always=grpc.StatusCode.INVALID_ARGUMENT)
    async with AsyncClient(server.address, sleep=sleeps.asleep, retry=RetryPolicy(max_attempts=5)) as client:
        with pytest.raises(InvalidArgument, match="scripted INVALID_ARGUMENT"):
            await client.infer("m", {"x": np.ones(2, np.float32)})
    assert server.servicer.calls == 1 and sleeps.delays == []


def test_sync_deadline_exceeded(scripted):
    server = scripted(delay_s=60.0)
    with Client(server.address) as client:
        with pytest.raises(DeadlineExceeded):  # 5 s: time for a busy machine to connect, then the wait
            client.infer("m", {"x": np.ones(1, np.int32)}, timeout_s=5.0)
    assert server.servicer.calls == 1  # not tried again


async def test_async_deadline_exceeded_from_the_client_default(scripted):
    server = scripted(delay_s=2.0)
    async with AsyncClient(server.address, timeout_s=0.2) as client:
        with pytest.raises(DeadlineExceeded):
            await client.server_live()


def test_edge_deadline_exceeded_on_a_big_batch(edge):
    with Client(edge.address) as client:
        with pytest.raises(DeadlineExceeded):
            client.embed(["a long sentence to embed, many times over"] * 64, timeout_s=0.0005)
        assert client.embed(["still fine"]).embeddings.shape == (1, 384)


def test_async_client_built_outside_a_loop_binds_to_the_loop_that_uses_it(edge):
    client = AsyncClient(edge.address)  # sync setup code, no loop running

    async def main():
        assert await client.server_live()
        with pytest.raises(RuntimeError, match="another event loop"):
            await asyncio.to_thread(asyncio.run, client.server_live())
        await client.close()
        with pytest.raises(RuntimeError, match="closed"):
            await client.server_live()

    asyncio.run(main())


def test_a_closed_sync_client_says_so(edge):
    client = Client(edge.address)
    client.close()
    client.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        client.server_live()


async def test_cancelling_an_async_call_cancels_it(scripted):
    server = scripted(delay_s=5.0)
    async with AsyncClient(server.address) as client:
        task = asyncio.create_task(client.server_live())
        await wait_until(lambda: server.servicer.calls)  # the server has it (connecting may take a while)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert server.servicer.calls == 1
