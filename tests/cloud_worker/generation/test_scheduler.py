"""ContinuousBatcher on the tiny model: events and a pausable engine order things, a fake clock
stands in for time."""

from __future__ import annotations

import asyncio
import threading

import pytest

from cloud_worker.generation.scheduler import BatcherStatus, ContinuousBatcher, Generation
from edgecloud.errors import DeadlineExceeded, InternalError, InvalidArgument, Overloaded, Unavailable
from edgecloud.generation import SamplingParams, Usage
from tests.cloud_worker.generation.conftest import PausableEngine, stopping

PROMPTS = [
    [298, 323, 81, 100],
    [5, 17, 42, 99, 7, 150, 33, 64, 12, 11, 10],
    [200, 8],
    [77, 78, 79, 80, 81, 82],
    [9],
    [120, 121, 122, 123, 124, 125, 126, 127, 128, 129, 130, 131, 132, 133],
    [300, 301, 302],
    [44, 55, 66, 77, 88],
]


def greedy(max_tokens: int, **more) -> SamplingParams:
    return SamplingParams(max_tokens=max_tokens, temperature=0.0, **more)


async def collect(generation: Generation) -> tuple[str, Usage]:
    parts, usage = [], None
    async for chunk in generation:
        assert usage is None, "a chunk came after the final one"
        parts.append(chunk.text)
        usage = chunk.usage
    assert usage is not None
    return "".join(parts), usage


async def wait_for(event: threading.Event) -> None:
    assert await asyncio.to_thread(event.wait, 30), "the engine never got there"


async def idle(batcher: ContinuousBatcher) -> BatcherStatus:
    assert await asyncio.to_thread(batcher.wait_idle, 30)
    return batcher.status


@pytest.fixture
async def make_batcher(make_engine, tokenizer, clock):
    """``make_batcher(max_batch_size=4, context_length=256, eos_ids=(2,), pausable=False, **kw)``:
    started batchers, stopped at teardown (their threads must be gone)."""
    made: list[ContinuousBatcher] = []

    def make(max_batch_size: int = 4, context_length: int = 256, *, eos_ids=(2,), pausable: bool = False,
             engine=None, **kwargs) -> ContinuousBatcher:
        engine = engine or make_engine(max_batch_size, context_length)
        if pausable:
            engine = PausableEngine(engine)
        batcher = ContinuousBatcher(engine, decode=lambda ids: tokenizer.decode(ids, skip_special_tokens=True),
                                    eos_ids=eos_ids, clock=clock, **kwargs)
        batcher.start()
        made.append(batcher)
        return batcher

    yield make
    for batcher in made:
        if isinstance(batcher.engine, PausableEngine):
            batcher.engine.resume()
        await asyncio.to_thread(batcher.stop)
        assert not batcher._thread.is_alive()


async def run_alone(batcher: ContinuousBatcher, prompts, params) -> list[tuple[str, Usage]]:
    return [await collect(batcher.submit(p, s)) for p, s in zip(prompts, params)]


async def test_concurrent_requests_give_the_text_each_gives_alone(make_batcher):
    params = [greedy(6 + 3 * i) for i in range(len(PROMPTS))]
    alone = await run_alone(make_batcher(max_batch_size=1), PROMPTS, params)
    batcher = make_batcher(max_batch_size=4, pausable=True)
    together = await asyncio.gather(*(collect(batcher.submit(p, s)) for p, s in zip(PROMPTS, params)))
    assert together == alone
    assert any(len(slots) == 4 for kind, slots in batcher.engine.calls if kind == "decode")
    assert all(usage.prompt_tokens == len(p) for (_, usage), p in zip(together, PROMPTS))
    assert await idle(batcher) == BatcherStatus(slots=4, active=0, queued=0)


async def test_max_batch_size_1_runs_one_request_at_a_time(make_batcher):
    batcher = make_batcher(max_batch_size=1, pausable=True)
    results = await asyncio.gather(*(collect(batcher.submit(p, greedy(5))) for p in PROMPTS[:4]))
    assert [usage.completion_tokens for _, usage in results] == [5, 5, 5, 5]
    assert {len(slots) for _, slots in batcher.engine.calls} == {1}
    prefills = [i for i, (kind, _) in enumerate(batcher.engine.calls) if kind == "prefill"]
    assert [b - a for a, b in zip(prefills, prefills[1:])] == [5, 5, 5]  # prefill + 4 decodes each, in turn


async def test_a_short_request_joins_a_long_one_and_finishes_first(make_batcher):
    batcher = make_batcher(max_batch_size=2, eos_ids=(), pausable=True)
    finished: list[str] = []

    async def run(name: str, generation: Generation) -> Usage:
        _, usage = await collect(generation)
        finished.append(name)
        return usage

    batcher.engine.pause()
    long = asyncio.create_task(run("long", batcher.submit(PROMPTS[0], greedy(200))))
    await wait_for(batcher.engine.paused)  # the long one is being prefilled
    short = asyncio.create_task(run("short", batcher.submit(PROMPTS[1], greedy(3))))
    batcher.engine.resume()
    assert (await short).completion_tokens == 3
    assert (await long).completion_tokens == 200
    assert finished == ["short", "long"]
    assert ("decode", [0, 1]) in batcher.engine.calls


async def test_cancelling_frees_the_slot_for_a_queued_request(make_batcher):
    batcher = make_batcher(max_batch_size=1, eos_ids=(), pausable=True)
    expected = await collect(batcher.submit(PROMPTS[2], greedy(4)))
    before = len(batcher.engine.calls)
    batcher.engine.pause(after=1)  # the prefill goes, the first decode waits
    first = batcher.submit(PROMPTS[0], greedy(200))
    await wait_for(batcher.engine.paused)
    queued = batcher.submit(PROMPTS[2], greedy(4))
    assert batcher.status == BatcherStatus(slots=1, active=1, queued=1)
    first.cancel()
    batcher.engine.resume()
    assert await collect(queued) == expected
    assert [chunk async for chunk in first] == []  # a cancelled generation just ends
    assert await idle(batcher) == BatcherStatus(slots=1, active=0, queued=0)
    # the long one's first decode finished, then it was dropped; the queued one ran its 4 tokens
    assert [kind for kind, _ in batcher.engine.calls[before:]] == ["prefill", "decode"] + ["prefill"] + ["decode"] * 3


async def test_a_full_queue_refuses_at_once_with_a_retry_hint(make_batcher):
    batcher = make_batcher(max_batch_size=1, pausable=True, max_queue_size=2, overload_retry_after_s=0.25)
    batcher.engine.pause()
    running = batcher.submit(PROMPTS[0], greedy(3))
    await wait_for(batcher.engine.paused)
    waiting = [batcher.submit(p, greedy(3)) for p in PROMPTS[1:3]]
    with pytest.raises(Overloaded) as refused:
        batcher.submit(PROMPTS[3], greedy(3))
    assert refused.value.retry_after_s == 0.25
    batcher.engine.resume()
    for generation in [running, *waiting]:
        assert (await collect(generation))[1].finish_reason == "length"


async def test_deadlines_fail_queued_and_running_requests_and_free_their_slots(make_batcher, clock):
    batcher = make_batcher(max_batch_size=1, eos_ids=(), pausable=True)
    with pytest.raises(DeadlineExceeded):
        batcher.submit(PROMPTS[0], greedy(3), deadline=clock.now)
    batcher.engine.pause()
    running = batcher.submit(PROMPTS[0], greedy(200), deadline=clock.now + 10)
    await wait_for(batcher.engine.paused)  # at the running one's prefill
    queued = batcher.submit(PROMPTS[1], greedy(3), deadline=clock.now + 5)
    clock.advance(6)
    batcher.engine.allow(2)  # its prefill and a decode; the next step drops the queued one
    with pytest.raises(DeadlineExceeded):
        await collect(queued)
    await wait_for(batcher.engine.paused)  # at the running one's second decode
    clock.advance(5)
    batcher.engine.resume()
    with pytest.raises(DeadlineExceeded):
        await collect(running)
    assert await idle(batcher) == BatcherStatus(slots=1, active=0, queued=0)
    assert [kind for kind, _ in batcher.engine.calls] == ["prefill", "decode", "decode"]  # the queued one never ran


async def test_stop_strings_end_the_text_before_them(make_batcher):
    batcher = make_batcher(eos_ids=())
    text, _ = await collect(batcher.submit(PROMPTS[1], greedy(30)))
    stop = next(text[i:i + 3] for i in range(4, len(text) - 3) if text.find(text[i:i + 3]) == i)
    cut = text.index(stop)
    got, usage = await collect(batcher.submit(PROMPTS[1], greedy(30, stop=(stop, "never seen"))))
    assert (got, usage.finish_reason) == (text[:cut], "stop")
    assert usage.completion_tokens < 30


async def test_an_end_of_sequence_token_stops_and_counts(make_batcher, make_engine, tokenizer):
    engine = make_engine(1, 64)
    tokens = [int(engine.prefill([0], [PROMPTS[3]]).argmax())]
    while len(tokens) < 6:
        tokens.append(int(engine.decode([0], [tokens[-1]], [len(PROMPTS[3]) + len(tokens) - 1]).argmax()))
    end = next(i for i in range(2, 6) if tokens[i] not in tokens[:i])
    batcher = make_batcher(eos_ids=(tokens[end],))
    text, usage = await collect(batcher.submit(PROMPTS[3], greedy(10)))
    assert usage == Usage(len(PROMPTS[3]), end + 1, "stop")
    assert text == tokenizer.decode(tokens[:end], skip_special_tokens=True)


async def test_max_tokens_and_the_context_end_with_length(make_batcher):
    batcher = make_batcher(max_batch_size=2, context_length=16, eos_ids=())
    _, usage = await collect(batcher.submit(PROMPTS[0], greedy(5)))
    assert usage == Usage(4, 5, "length")
    _, usage = await collect(batcher.submit(list(range(20, 32)), greedy(100)))
    assert usage == Usage(12, 4, "length")  # prompt + completion fill the 16 positions
    _, usage = await collect(batcher.submit(list(range(20, 35)), greedy(100)))
    assert usage == Usage(15, 1, "length")
    with pytest.raises(InvalidArgument) as refused:
        batcher.submit(list(range(20, 36)), greedy(1))
    assert refused.value.field == "inputs[text_input]" and "at most 15" in refused.value.message
    with pytest.raises(InvalidArgument, match="no tokens"):
        batcher.submit([], greedy(1))
    assert batcher.status.queued == 0


async def test_a_seed_gives_the_same_text_whatever_runs_beside_it(make_batcher):
    seeded = SamplingParams(max_tokens=12, temperature=1.0, top_p=0.95, seed=1234)
    batcher = make_batcher(max_batch_size=4, eos_ids=())
    alone = await collect(batcher.submit(PROMPTS[4], seeded))
    mates = [SamplingParams(max_tokens=9, temperature=0.8), greedy(15), SamplingParams(max_tokens=5, top_k=5, seed=3)]
    results = await asyncio.gather(collect(batcher.submit(PROMPTS[4], seeded)),
                                   *(collect(batcher.submit(p, s)) for p, s in zip(PROMPTS, mates)))
    assert results[0] == alone
    other = await collect(batcher.submit(PROMPTS[4], SamplingParams(max_tokens=12, temperature=1.0, top_p=0.95, seed=99)))
    assert other != alone


async def test_a_failed_step_fails_its_requests_and_the_batcher_serves_on(make_batcher, make_engine):
    class Flaky:
        def __init__(self, engine):
            self.engine, self.fail = engine, True
            self.max_batch_size, self.context_length, self.device = engine.max_batch_size, engine.context_length, engine.device

        def prefill(self, *args):
            return self.engine.prefill(*args)

        def decode(self, *args):
            if self.fail:
                self.fail = False
                raise RuntimeError("boom")
            return self.engine.decode(*args)

    batcher = make_batcher(engine=Flaky(make_engine(2, 64)))
    with pytest.raises(InternalError):
        await collect(batcher.submit(PROMPTS[0], greedy(4)))
    assert (await collect(batcher.submit(PROMPTS[0], greedy(4))))[1].completion_tokens == 4
    assert await idle(batcher) == BatcherStatus(slots=2, active=0, queued=0)


async def test_stop_fails_queued_and_running_requests(make_batcher):
    batcher = make_batcher(max_batch_size=1, eos_ids=(), pausable=True)
    batcher.engine.pause()
    running = batcher.submit(PROMPTS[0], greedy(100))
    await wait_for(batcher.engine.paused)
    queued = batcher.submit(PROMPTS[1], greedy(100))
    batcher.engine.release_if = lambda: stopping(batcher)  # the step in flight ends once stop() began
    await asyncio.to_thread(batcher.stop)
    for generation in (running, queued):
        with pytest.raises(Unavailable):
            await collect(generation)
    with pytest.raises(Unavailable):
        batcher.submit(PROMPTS[0], greedy(1))
    assert not batcher._thread.is_alive()


async def test_after_step_runs_after_every_step_and_its_failure_stops_nothing(make_batcher):
    steps: list[int] = []
    counted = threading.Condition()

    def after_step():
        with counted:
            steps.append(1)
            counted.notify_all()
        if len(steps) == 2:
            raise RuntimeError("a broken hook")

    async def steps_reach(count: int) -> int:
        def wait() -> int:
            with counted:
                counted.wait_for(lambda: len(steps) >= count, timeout=30)
                return len(steps)
        return await asyncio.to_thread(wait)

    batcher = make_batcher(after_step=after_step)
    text, usage = await collect(batcher.submit(PROMPTS[0], greedy(5)))
    # The first step prefills (token 1) and decodes (token 2), each later step decodes one token:
    # 4 steps for 5 tokens; the hook runs after the step that delivered the last one too.
    assert usage.completion_tokens == 5 and await steps_reach(4) == 4
    again, _ = await collect(batcher.submit(PROMPTS[0], greedy(5)))
    assert again == text and await steps_reach(8) == 8
    assert (await idle(batcher)).active == 0
