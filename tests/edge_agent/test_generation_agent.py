"""``EdgeAgent``'s in-process generation API on the built INT4 model: sync and async iterators of
chunks with the final usage, the model's chat template, early exits that stop generation, and bad
input refused before anything runs."""

from __future__ import annotations

import asyncio

import pytest

from edge_agent.agent import EdgeAgent
from edge_agent.generation import GenAIModel
from edgecloud.errors import InvalidArgument, NotFound

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def agent(generative_model_dir):
    with EdgeAgent.from_model_dir(generative_model_dir, threads=2) as agent:
        yield agent


def _model(agent: EdgeAgent) -> GenAIModel:
    (model,) = agent.models
    assert isinstance(model, GenAIModel)
    return model


def test_sync_iterator_streams_chunks_and_ends_with_usage(agent):
    chunks = list(agent.generate(messages=[{"role": "user", "content": "What is the capital of France?"}],
                                 max_tokens=12, temperature=0))
    assert all(not c.final for c in chunks[:-1]) and chunks[-1].final
    usage = chunks[-1].usage
    assert usage.completion_tokens <= 12 and usage.finish_reason in ("stop", "length")
    assert usage.prompt_tokens > 10  # the chat template (and its default system turn) was applied
    text = "".join(c.text for c in chunks)
    assert text.strip()
    # The same text as the rendered prompt sent raw: messages go through the model's own template.
    prompt = _model(agent).render_chat([{"role": "user", "content": "What is the capital of France?"}])
    assert prompt.startswith("<|im_start|>system") and prompt.endswith("<|im_start|>assistant\n")
    assert "".join(c.text for c in agent.generate(prompt, max_tokens=12, temperature=0)) == text


def test_seeded_sampling_repeats_itself(agent):
    def once() -> str:
        return "".join(c.text for c in agent.generate("Once upon a time", max_tokens=10, temperature=0.9,
                                                      top_p=0.95, seed=42))

    assert once() == once()


def test_stop_strings_end_the_text_before_them(agent):
    prompt = "The weather report for the week:"
    full = "".join(c.text for c in agent.generate(prompt, max_tokens=24, temperature=0))
    assert len(full) > 8, full
    stop = full[len(full) // 2: len(full) // 2 + 3]  # a piece from the middle of the greedy text
    chunks = list(agent.generate(prompt, max_tokens=24, temperature=0, stop=[stop]))
    assert "".join(c.text for c in chunks) == full[: full.index(stop)]
    assert chunks[-1].usage.finish_reason == "stop"


def test_breaking_out_of_the_sync_iterator_stops_generation(agent):
    produced = 0
    for _ in agent.generate("Tell me a long story.", max_tokens=200, temperature=0):
        produced += 1
        if produced == 3:
            break
    # The generator was closed at the break: the next generation runs at once on the same thread.
    assert list(agent.generate("Hi", max_tokens=2, temperature=0))[-1].final


async def test_cancelling_the_async_iterator_frees_the_model(agent):
    model = _model(agent)
    seen = asyncio.Event()

    async def consume():
        async for _ in agent.agenerate("Tell me a long story.", max_tokens=300, temperature=0):
            seen.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(seen.wait(), 60)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(500):
        if model.running == 0:
            break
        await asyncio.sleep(0.01)
    assert model.running == 0, "the token loop went on after its consumer was cancelled"
    chunks = [c async for c in agent.agenerate("Hi", max_tokens=3, temperature=0)]
    assert chunks[-1].final


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"prompt": ""}, "prompt"),
        ({}, "prompt"),
        ({"prompt": "a", "messages": [{"role": "user", "content": "b"}]}, "prompt"),
        ({"messages": [{"role": "robot", "content": "b"}]}, "messages[0]"),
        ({"messages": []}, "messages"),
        ({"prompt": "a", "max_tokens": 10**6}, "sampling.max_tokens"),
        ({"prompt": "a", "temperature": "warm"}, "sampling.temperature"),
        ({"prompt": "a", "colour": "blue"}, "sampling.colour"),
        ({"prompt": "hello " * 9000}, "inputs[text_input]"),
    ],
)
def test_bad_input_is_refused_by_field(agent, kwargs, field):
    with pytest.raises(InvalidArgument) as caught:
        list(agent.generate(**kwargs))
    assert caught.value.field == field


def test_asking_for_another_model_is_not_found(agent):
    with pytest.raises(NotFound):
        list(agent.generate("hi", model_name="no-such-model"))


def test_a_packed_device_directory_generates_without_the_cloud_checkpoint(generative_model_dir, tmp_path):
    from edge_agent.model_dir import pack_variant

    packed = pack_variant(generative_model_dir, tmp_path / "device")
    assert sorted(p.name for p in packed.iterdir()) == ["edge-int4", "model.json", "report.json", "report.txt"]
    with EdgeAgent.from_model_dir(packed) as device:
        assert list(device.generate("Hi", max_tokens=2, temperature=0))[-1].final
