"""TorchGenerativeModel on the tiny checkpoint: the ``GenerativeModel`` contract end to end."""

from __future__ import annotations

import asyncio
import json
import shutil

import numpy as np
import pytest
import torch

import cloud_worker.generation as package
from cloud_worker.generation.llama import LlamaModel
from cloud_worker.generation.model import TorchGenerativeModel, eos_token_ids
from cloud_worker.generation.scheduler import BatcherStatus
from cloud_worker.generation.settings import GenerationSettings
from edgecloud.errors import FailedPrecondition, InvalidArgument, Unavailable
from edgecloud.generation import Chunk, GenerateRequest, GenerationLimits, SamplingParams, Usage
from edgecloud.types import InferRequest, Tensor
from tests.cloud_worker.generation.conftest import PausableEngine, stopping

PROMPT = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture
async def make_model(tiny_checkpoint):
    """``await make_model(**settings)`` -> a loaded model; unloaded at teardown."""
    models: list[TorchGenerativeModel] = []

    async def make(checkpoint=tiny_checkpoint, **settings) -> TorchGenerativeModel:
        settings = {"max_batch_size": 4, "context_length": 128, "max_tokens": 64, **settings}
        model = TorchGenerativeModel(checkpoint, name="tiny", settings=GenerationSettings(**settings),
                                     device=torch.device("cpu"), dtype=torch.float32, variant="fp32")
        models.append(model)
        await model.load()
        return model

    yield make
    for model in models:
        await model.unload()


def request(prompt: str = PROMPT, **sampling) -> GenerateRequest:
    return GenerateRequest(prompt, SamplingParams(**{"temperature": 0.0, **sampling}))


def pausable(model: TorchGenerativeModel) -> PausableEngine:
    """Put a ``PausableEngine`` under a loaded model's batcher."""
    engine = PausableEngine(model._batcher.engine)
    model._batcher.engine = engine
    return engine


async def chunks_of(model: TorchGenerativeModel, req: GenerateRequest) -> list[Chunk]:
    return [chunk async for chunk in model.generate(req)]


def greedy_reference(checkpoint, tokenizer, prompt: str, max_tokens: int) -> tuple[str, Usage]:
    """What the engine alone produces: tokens until an end-of-sequence id (2) or max_tokens."""
    ids = tokenizer.encode(prompt, add_special_tokens=False).ids
    engine = LlamaModel.load(checkpoint, max_batch_size=1, context_length=128)
    logits, tokens = engine.prefill([0], [ids]), []
    while True:
        tokens.append(int(logits.argmax()))
        if tokens[-1] == 2 or len(tokens) == max_tokens:
            break
        logits = engine.decode([0], [tokens[-1]], [len(ids) + len(tokens) - 1])
    reason = "stop" if tokens[-1] == 2 else "length"
    return tokenizer.decode(tokens, skip_special_tokens=True), Usage(len(ids), len(tokens), reason)


async def test_it_describes_itself_from_its_settings(make_model):
    model = await make_model(max_batch_size=3, context_length=100, max_tokens=40, default_max_tokens=8)
    assert model.ready() and model.variant == "fp32"
    assert model.metadata.platform == "edgecloud_generate" and model.version == "1"
    assert model.limits == GenerationLimits(context_length=100, max_tokens=40, default_max_tokens=8)
    assert model.eos_ids == {2}
    assert model.status == BatcherStatus(slots=3, active=0, queued=0)


async def test_generate_streams_deltas_then_a_final_chunk_with_usage(make_model, tiny_checkpoint, tokenizer):
    model = await make_model()
    chunks = await chunks_of(model, request(max_tokens=20))
    assert all(chunk.text and not chunk.final for chunk in chunks[:-1]) and chunks[-1].final
    text, usage = greedy_reference(tiny_checkpoint, tokenizer, PROMPT, 20)
    assert "".join(chunk.text for chunk in chunks) == text
    assert chunks[-1].usage == usage


async def test_infer_answers_the_whole_text_through_the_protocol(make_model, tiny_checkpoint, tokenizer):
    model = await make_model()
    prompt = np.array([PROMPT.encode()], dtype=object)
    params = np.array([json.dumps({"max_tokens": 10, "temperature": 0}).encode()], dtype=object)
    response = await model.infer(InferRequest("tiny", [Tensor("text_input", "BYTES", (1,), prompt),
                                                       Tensor("sampling_parameters", "BYTES", (1,), params)]))
    text, usage = greedy_reference(tiny_checkpoint, tokenizer, PROMPT, 10)
    assert response.outputs[0].data[0].decode() == PROMPT + text
    assert response.parameters["completion_tokens"] == usage.completion_tokens
    assert response.parameters["variant"] == "fp32"


async def test_a_model_idle_after_its_generations_trims_the_heap_once(make_model, monkeypatch):
    """Every step tells the heap trimmer the process computed; one trim follows the quiet period."""
    from edgecloud.allocator import heap_trimmer

    model = await make_model()
    monkeypatch.setattr(heap_trimmer, "idle_s", 0.2)
    await asyncio.sleep(0.5)  # the warm-up's own idle trim, if it is due, happens before we count
    before = heap_trimmer.trims
    assert len(await chunks_of(model, request(max_tokens=6))) >= 2
    for _ in range(300):
        if heap_trimmer.trims > before:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.3)  # no second trim without another step
    assert heap_trimmer.trims == before + 1


async def test_closing_the_stream_frees_the_slot_and_the_model_serves_on(make_model):
    model = await make_model(max_batch_size=2)
    engine = pausable(model)
    engine.pause(after=1)  # the prefill runs (its token comes out), the first decode waits
    stream = model.generate(request(max_tokens=60))
    await anext(stream)
    assert model.status == BatcherStatus(slots=2, active=1, queued=0)
    await stream.aclose()
    engine.resume()
    assert await asyncio.to_thread(model._batcher.wait_idle, 30)
    assert model.status == BatcherStatus(slots=2, active=0, queued=0)
    assert sum(1 for kind, _ in engine.calls if kind == "decode") == 1
    assert (await chunks_of(model, request(max_tokens=3)))[-1].usage.completion_tokens == 3


async def test_cancelling_the_consuming_task_frees_the_slot(make_model):
    model = await make_model(max_batch_size=1)
    engine = pausable(model)
    engine.pause(after=1)
    first = asyncio.Event()

    async def consume():
        async for _ in model.generate(request(max_tokens=60)):
            first.set()

    task = asyncio.create_task(consume())
    await first.wait()
    assert model.status.active == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    engine.resume()
    assert await asyncio.to_thread(model._batcher.wait_idle, 30)
    assert model.status.free == 1
    assert sum(1 for kind, _ in engine.calls if kind == "decode") == 1
    assert (await chunks_of(model, request(max_tokens=2)))[-1].final


async def test_a_prompt_beyond_the_context_is_refused_naming_the_input(make_model):
    model = await make_model(context_length=16, max_tokens=8, default_max_tokens=8)
    with pytest.raises(InvalidArgument) as refused:
        await chunks_of(model, request("word " * 40))
    assert refused.value.field == "inputs[text_input]"
    assert model.status.queued == 0


async def test_a_model_not_loaded_refuses_and_unload_fails_running_generations(make_model, tiny_checkpoint):
    idle = TorchGenerativeModel(tiny_checkpoint, name="tiny", settings=GenerationSettings(context_length=64),
                                device=torch.device("cpu"), dtype=torch.float32, variant="fp32")
    assert not idle.ready() and idle.status == BatcherStatus(slots=16, active=0, queued=0)
    with pytest.raises(FailedPrecondition):
        await chunks_of(idle, request())
    model = await make_model(max_batch_size=1)
    batcher, engine = model._batcher, pausable(model)
    engine.pause(after=1)
    stream = model.generate(request(max_tokens=60))
    await anext(stream)
    engine.release_if = lambda: stopping(batcher)
    await model.unload()
    assert not model.ready()
    with pytest.raises(Unavailable):
        async for _ in stream:
            pass


def test_end_of_sequence_ids_come_from_every_config_the_checkpoint_has(tiny_checkpoint, tokenizer, tmp_path):
    for name in ("config.json", "tokenizer_config.json", "tokenizer.json"):
        shutil.copy(tiny_checkpoint / name, tmp_path / name)
    assert eos_token_ids(tmp_path, tokenizer) == {2}
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": [2, 0]}))
    assert eos_token_ids(tmp_path, tokenizer) == {0, 2}
    (tmp_path / "config.json").write_text(json.dumps({"eos_token_id": None}))
    (tmp_path / "generation_config.json").unlink()
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"eos_token": {"content": "<|im_start|>"}}))
    assert eos_token_ids(tmp_path, tokenizer) == {1}


def test_settings_are_checked_when_built():
    assert GenerationSettings().limits == GenerationLimits(context_length=2048, max_tokens=512, default_max_tokens=16)
    with pytest.raises(ValueError, match="max_batch_size"):
        GenerationSettings(max_batch_size=0)
    with pytest.raises(ValueError, match="default_max_tokens"):
        GenerationSettings(max_tokens=8, default_max_tokens=16)


def test_the_package_exports_what_it_names():
    for name in package.__all__:
        assert getattr(package, name) is not None
