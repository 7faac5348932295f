"""Deadlines, cancellation, a full queue and a failing model over real gRPC (a held fake model
orders events; no torch needed)."""

from __future__ import annotations

import asyncio

import grpc
import numpy as np
import pytest

from tests.support.cloud_fakes import FakeEmbeddingRuntime, embedding_of, fake_embedding, text_request

MODEL = "all-MiniLM-L6-v2"


async def until(predicate, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.002)


def outcome(worker, name: str) -> float:
    return worker.metrics.registry.get_sample_value("edgecloud_cloud_requests_total",
                                                    {"model": MODEL, "outcome": name}) or 0.0


@pytest.fixture
async def held(start_worker, connect):
    """A worker whose fake model is busy with one held request: (worker, stub, runtime, blocker)."""
    runtime = FakeEmbeddingRuntime(gated=True)
    worker = await start_worker(runtimes=[runtime], batching={"max_queue_size": 2})
    stub = connect(worker)
    blocker = asyncio.ensure_future(stub.ModelInfer(text_request(["blocker"])))
    assert await asyncio.to_thread(runtime.running.wait, 10)
    yield worker, stub, runtime, blocker
    runtime.release()
    await blocker


async def test_a_request_whose_deadline_passes_in_the_queue_never_reaches_the_model(held):
    worker, stub, runtime, _ = held
    call = stub.ModelInfer(text_request(["too slow"]), timeout=5)
    await until(lambda: worker.models[0].batcher.queued == 1)  # queued before its deadline passes
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    await until(lambda: worker.models[0].batcher.queued == 0)
    runtime.release()
    assert embedding_of(await stub.ModelInfer(text_request(["next"]))).shape == (1, 384)
    assert all("too slow" not in batch for batch in runtime.batches)
    assert outcome(worker, "cancelled") + outcome(worker, "deadline_exceeded") == 1


async def test_a_cancelled_call_is_dropped_from_the_queue(held):
    worker, stub, runtime, _ = held
    call = stub.ModelInfer(text_request(["never mind"]))
    await until(lambda: worker.models[0].batcher.queued == 1)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    await until(lambda: worker.models[0].batcher.queued == 0)
    assert outcome(worker, "cancelled") == 1
    runtime.release()
    await stub.ModelInfer(text_request(["next"]))
    assert all("never mind" not in batch for batch in runtime.batches)


async def test_a_full_queue_answers_resource_exhausted_with_retry_after(held):
    worker, stub, runtime, _ = held
    queued = [asyncio.ensure_future(stub.ModelInfer(text_request([f"q{i}"]))) for i in range(2)]
    await until(lambda: worker.models[0].batcher.queued == 2)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.ModelInfer(text_request(["one too many"]))
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "queued" in info.value.details()
    assert any(key == "retry-after" for key, _ in info.value.trailing_metadata())
    runtime.release()
    for call, text in zip(queued, ["q0", "q1"]):
        np.testing.assert_array_equal(embedding_of(await call)[0], fake_embedding(text))
    assert outcome(worker, "queue_full") == 1


async def test_a_model_failure_fails_only_the_request_that_caused_it(start_worker, connect):
    runtime = FakeEmbeddingRuntime(gated=True, fail_on="poison")
    worker = await start_worker(runtimes=[runtime])
    stub = connect(worker)
    blocker = asyncio.ensure_future(stub.ModelInfer(text_request(["blocker"])))
    assert await asyncio.to_thread(runtime.running.wait, 10)
    good = asyncio.ensure_future(stub.ModelInfer(text_request(["good"])))
    bad = asyncio.ensure_future(stub.ModelInfer(text_request(["poison"])))
    await until(lambda: worker.models[0].batcher.queued == 2)
    runtime.release()
    await blocker
    np.testing.assert_array_equal(embedding_of(await good)[0], fake_embedding("good"))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await bad
    assert info.value.code() == grpc.StatusCode.INTERNAL
    assert "poison" not in info.value.details()  # no internals leak to the client
    assert sorted(runtime.batches[1]) == ["good", "poison"]  # they did share a batch
