"""Single-flight: one task per key, shielded from callers' cancellation, errors retrieved."""

from __future__ import annotations

import asyncio
import gc

import pytest

from gateway.singleflight import SingleFlight


async def test_concurrent_joins_share_one_task_until_forgotten():
    flights: SingleFlight[int] = SingleFlight()
    calls = 0

    async def work():
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        return 42

    joined = [flights.join("k", work) for _ in range(50)]
    assert [leader for _, leader in joined].count(True) == 1
    results = await asyncio.gather(*(asyncio.shield(task) for task, _ in joined))
    assert results == [42] * 50 and calls == 1
    task, leader = flights.join("k", work)  # a success stays joinable ...
    assert not leader and task.done()
    flights.forget("k", task)  # ... until its owner forgets it
    assert len(flights) == 0


async def test_a_cancelled_waiter_does_not_cancel_the_shared_work():
    flights: SingleFlight[str] = SingleFlight()
    release = asyncio.Event()

    async def work():
        await release.wait()
        return "done"

    async def wait():
        return await asyncio.shield(flights.join("k", work)[0])

    leader = asyncio.create_task(wait())
    follower = asyncio.create_task(wait())
    await asyncio.sleep(0)
    leader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leader
    release.set()
    assert await follower == "done"


async def test_failures_are_forgotten_and_retrieved_even_unawaited(caplog):
    flights: SingleFlight[int] = SingleFlight()

    async def boom():
        raise RuntimeError("x")

    task, _ = flights.join("k", boom)
    await asyncio.sleep(0.01)
    assert task.done() and len(flights) == 0
    del task
    gc.collect()
    assert "never retrieved" not in caplog.text


async def test_close_cancels_what_is_running():
    flights: SingleFlight[int] = SingleFlight()
    task, _ = flights.join("k", lambda: asyncio.sleep(10))
    await flights.close()
    assert task.cancelled() and len(flights) == 0
