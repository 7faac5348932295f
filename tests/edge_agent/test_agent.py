"""EdgeAgent in-process: sync and asyncio APIs on the real INT8 model."""

from __future__ import annotations

import asyncio
import gc
import time

import numpy as np
import pytest

from edgecloud.codec import bytes_array
from edgecloud.errors import InvalidArgument, NotFound
from edgecloud.types import InferRequest, RequestedOutput, Tensor
from edge_agent.agent import EdgeAgent


def test_embed_returns_normalised_vectors_in_order(edge_agent_session):
    texts = ["The cat sits on the mat.", "ok", "Stock markets fell sharply on Monday.", "A kitten rests on a rug."]
    vectors = edge_agent_session.embed(texts)
    assert vectors.shape == (4, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    sims = vectors @ vectors.T
    # Semantics survive quantization: the two cat sentences are closer than cat vs markets.
    assert sims[0, 3] > sims[0, 2] + 0.2
    # Order is the request's, not the length-sorted compute order.
    alone = edge_agent_session.embed([texts[2]])[0]
    assert float(alone @ vectors[2]) > 0.98 and float(alone @ vectors[0]) < 0.5


def test_batching_and_chunking_do_not_change_results(edge_agent_session):
    texts = [f"sentence number {i} " + "word " * (i % 17) for i in range(70)]  # > chunk_size of 32
    together = edge_agent_session.embed(texts)
    alone = np.stack([edge_agent_session.embed([t])[0] for t in texts[:8]])
    # Dynamic INT8 scales activations per call, so batch-mates move results slightly, never far.
    assert np.sum(together[:8] * alone, axis=1).min() > 0.98


def test_one_chunk_answers_in_request_order_whatever_the_lengths(edge_agent_session):
    texts = ["a much longer sentence than the others in this request", "short", "a middle one here"]
    by_length = sorted(range(3), key=lambda i: len(texts[i]))
    vectors = edge_agent_session.embed(texts)
    sorted_vectors = edge_agent_session.embed([texts[i] for i in by_length])
    # the same batch (one call, padded alike) in another row order: the same rows, reordered
    np.testing.assert_allclose(vectors[by_length], sorted_vectors, atol=1e-5)
    assert not np.allclose(vectors[0], vectors[1], atol=1e-2)


def test_fp32_variant_agrees_with_int8(model_dir, edge_agent_session):
    texts = ["hello world", "edge inference with quantized transformers", "?"]
    with EdgeAgent.from_model_dir(model_dir, variant="fp32", threads=1) as fp32:
        reference = fp32.embed(texts)
    cosine = np.sum(reference * edge_agent_session.embed(texts), axis=1)
    assert cosine.min() > 0.95


def test_infer_with_protocol_types(edge_agent_session):
    data = bytes_array(["hello", "world"])
    request = InferRequest("all-MiniLM-L6-v2", [Tensor("text", "BYTES", (2,), data)], id="r1",
                           outputs=[RequestedOutput("embedding")])
    response = edge_agent_session.infer_sync(request)
    assert response.id == "r1" and response.parameters["variant"] == "int8"
    assert response.output("embedding").shape == (2, 384)


async def test_async_api_runs_off_the_event_loop(model_dir):
    async with EdgeAgent.from_model_dir(model_dir, threads=1) as agent:
        texts = [f"a somewhat longer sentence to keep the model busy {i}" for i in range(256)]
        ticks = 0

        async def heartbeat(stop: asyncio.Event):
            nonlocal ticks
            while not stop.is_set():
                await asyncio.sleep(0.005)
                ticks += 1

        stop = asyncio.Event()
        beat = asyncio.create_task(heartbeat(stop))
        gc.collect()
        gc.disable()  # a collection on this thread would count as loop work
        try:
            loop_cpu, process_cpu = time.thread_time(), time.process_time()
            vectors = await agent.aembed(texts)
            loop_cpu, process_cpu = time.thread_time() - loop_cpu, time.process_time() - process_cpu
        finally:
            gc.enable()
        stop.set()
        await beat
        assert vectors.shape == (256, 384)
        # The model's CPU time was spent on another thread, and the loop kept ticking meanwhile. A
        # blocking call would put nearly all of it on the loop's thread. CPU time, not wall time: a
        # busy machine may stop the process for a while, and that says nothing about the loop.
        assert loop_cpu < 0.5 * process_cpu, (loop_cpu, process_cpu)  # measured: ~0 vs ~1.0 blocking
        assert ticks >= 3


def test_bad_input_raises_typed_errors(edge_agent_session):
    with pytest.raises(NotFound, match="model_name"):
        edge_agent_session.embed(["x"], model_name="nope")
    with pytest.raises(InvalidArgument, match="texts"):
        edge_agent_session.embed("not a list")
    bad = np.empty(1, dtype=object)
    bad[0] = b"\xff\xfe"
    with pytest.raises(InvalidArgument, match=r"inputs\[text\]: element 0 is not valid UTF-8"):
        edge_agent_session.infer_sync(InferRequest("all-MiniLM-L6-v2", [Tensor("text", "BYTES", (1,), bad)]))


def test_a_directory_with_only_the_int8_variant_serves_on_a_device(model_dir, tmp_path):
    """What a device carries: ``edgecloud model pack`` keeps one variant; the agent loads it."""
    from edge_agent.model_dir import ModelDirError, load_model_dir
    from edgecloud_tools.cli import main

    packed = tmp_path / "device-model"
    assert main(["model", "pack", "--model-dir", str(model_dir), "--out", str(packed)]) == 0
    files = {p.name for p in packed.iterdir()}
    assert "model.int8.onnx" in files and "model.fp32.onnx" not in files and "tokenizer.json" in files
    size = sum(p.stat().st_size for p in packed.iterdir())
    full = sum(p.stat().st_size for p in model_dir.iterdir() if p.is_file())
    assert size < 0.35 * full
    spec = load_model_dir(packed)
    assert set(spec.variants) == {"int8"} and spec.default_variant == "int8"
    with pytest.raises(ModelDirError, match="variants.fp32"):
        load_model_dir(packed, "fp32")
    with EdgeAgent.from_model_dir(packed, threads=1) as agent:
        vectors = agent.embed(["a device carries 23 MB, not 109"])
    assert vectors.shape == (1, 384)
    assert main(["model", "pack", "--model-dir", str(model_dir), "--out", str(packed)]) == 2  # not over a model
