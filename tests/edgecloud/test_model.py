"""``ModelRepository``: models by name and version, the newest one when no version is named;
``BlockingRunner``: blocking calls on threads of their own, cancelled and closed cleanly."""

from __future__ import annotations

import asyncio
import threading

import pytest

from edgecloud.errors import NotFound
from edgecloud.model import BlockingRunner, Model, ModelRepository
from edgecloud.types import ModelMetadata


class Named(Model):
    def __init__(self, name: str, version: str):
        self.metadata = ModelMetadata(name, (version,), "test", (), ())

    async def infer(self, request):
        raise AssertionError("not run here")


def test_no_version_means_the_newest_numerically_whatever_order_they_were_added_in():
    ten, nine, label = Named("m", "10"), Named("m", "9"), Named("m", "beta")
    for order in ([ten, nine, label], [label, nine, ten], [nine, label, ten]):
        repository = ModelRepository(list(order))
        assert repository.get("m") is ten
        assert repository.get("m", "9") is nine and repository.get("m", "beta") is label


def test_a_newer_version_added_later_becomes_the_default_and_names_stay_apart():
    repository = ModelRepository([Named("m", "1"), Named("other", "7")])
    newer = Named("m", "2")
    repository.add(newer)
    assert repository.get("m") is newer and repository.get("other").version == "7"
    assert sorted((m.name, m.version) for m in repository.all()) == [("m", "1"), ("m", "2"), ("other", "7")]


def test_unknown_names_and_versions_are_not_found_naming_the_field():
    repository = ModelRepository([Named("m", "1")])
    with pytest.raises(NotFound) as unknown:
        repository.get("nope")
    assert unknown.value.message.startswith("model_name")
    with pytest.raises(NotFound) as version:
        repository.get("m", "3")
    assert version.value.message.startswith("model_version") and "['1']" in version.value.message
    with pytest.raises(NotFound):
        ModelRepository().get("m")


# ---------------------------------------------------------------------------------------------
# BlockingRunner


async def test_a_call_runs_on_a_runner_thread_and_returns_or_raises_what_it_did():
    runner = BlockingRunner(1, name="t")
    try:
        assert await runner.run(lambda a, b: (threading.current_thread().name, a + b), 2, 3) == ("t_0", 5)

        def fails():
            raise ValueError("from the thread")

        with pytest.raises(ValueError, match="from the thread"):
            await runner.run(fails)

        def stops():
            raise StopIteration

        with pytest.raises(RuntimeError, match="StopIteration"):
            await runner.run(stops)
    finally:
        runner.close()


async def test_workers_run_calls_at_once_and_the_loop_is_never_blocked():
    runner = BlockingRunner(2)
    both = threading.Barrier(2, timeout=5)
    try:
        ticks = 0

        async def tick():
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.001)

        ticker = asyncio.create_task(tick())
        await asyncio.gather(runner.run(both.wait), runner.run(both.wait))  # each waits for the other
        ticker.cancel()
        assert runner.workers == 2 and ticks > 0
    finally:
        runner.close()


async def test_a_call_cancelled_while_queued_never_runs_and_one_running_finishes():
    runner = BlockingRunner(1)
    started, release = threading.Event(), threading.Event()
    ran: list[str] = []

    def blocking(name: str) -> str:
        started.set()
        release.wait(5)
        ran.append(name)
        return name

    try:
        first = asyncio.create_task(runner.run(blocking, "first"))
        await asyncio.to_thread(started.wait, 5)
        queued = asyncio.create_task(runner.run(blocking, "queued"))
        await asyncio.sleep(0)
        queued.cancel()
        first.cancel()  # already running: it finishes on its thread, its result dropped
        release.set()
        assert await runner.run(lambda: "after") == "after"
        assert ran == ["first"] and queued.cancelled() and first.cancelled()
    finally:
        runner.close()


async def test_close_cancels_what_waits_lets_the_running_call_finish_and_refuses_more():
    runner = BlockingRunner(1)
    started, release = threading.Event(), threading.Event()

    def blocking() -> str:
        started.set()
        release.wait(5)
        return "done"

    running = asyncio.create_task(runner.run(blocking))
    await asyncio.to_thread(started.wait, 5)
    waiting = asyncio.create_task(runner.run(blocking))
    await asyncio.sleep(0)
    closing = asyncio.create_task(asyncio.to_thread(runner.close))
    await asyncio.sleep(0.05)
    assert not closing.done()  # it waits for the running call
    release.set()
    await closing
    assert await running == "done"
    with pytest.raises(asyncio.CancelledError):
        await waiting
    with pytest.raises(RuntimeError, match="closed"):
        await runner.run(blocking)


async def test_threads_start_with_the_first_call_and_stop_when_a_dropped_runner_is_collected():
    import gc

    runner = BlockingRunner(2, name="dropped")
    assert runner._threads == []
    await runner.run(lambda: None)
    threads = list(runner._threads)
    assert len(threads) == 2 and all(thread.is_alive() for thread in threads)
    del runner
    gc.collect()
    for thread in threads:
        thread.join(5)
    assert not any(thread.is_alive() for thread in threads)
