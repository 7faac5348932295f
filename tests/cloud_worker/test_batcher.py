"""DynamicBatcher on fakes: events order things and a fake clock stands in for time."""

from __future__ import annotations

import asyncio

import pytest

from cloud_worker.batcher import DynamicBatcher
from cloud_worker.metrics import Outcome, WorkerMetrics
from edgecloud.errors import DeadlineExceeded, InternalError, InvalidArgument, ResourceExhausted, Unavailable
from tests.support.virtual_clock import ManualClock


class Model:
    """An ``execute`` that records batches; ``hold()`` makes the next calls wait for ``release()``."""

    def __init__(self):
        self.batches: list[list[str]] = []
        self.started = asyncio.Event()
        self._gate = asyncio.Event()
        self._gate.set()
        self.fail_with: BaseException | None = None
        self.fail_on: str | None = None
        self.result_count_delta = 0

    def hold(self) -> None:
        self._gate.clear()

    def release(self) -> None:
        self._gate.set()

    async def __call__(self, items: list[str]) -> list[str]:
        self.batches.append(list(items))
        self.started.set()
        await self._gate.wait()
        self.started.clear()
        if self.fail_with is not None:
            raise self.fail_with
        if self.fail_on is not None and self.fail_on in items:
            raise RuntimeError("boom")
        results = [item.upper() for item in items]
        if self.result_count_delta < 0:
            return results[: self.result_count_delta]
        return results + ["extra"] * self.result_count_delta


@pytest.fixture
def clock():
    return ManualClock()


@pytest.fixture
async def make_batcher(clock):
    batchers = []

    async def make(model: Model, **kwargs) -> DynamicBatcher:
        kwargs.setdefault("max_queue_delay_s", 0.0)
        batcher = DynamicBatcher(model, clock=clock, **kwargs)
        await batcher.start()
        batchers.append(batcher)
        return batcher

    yield make
    for batcher in batchers:
        await batcher.stop()


async def until(predicate, timeout: float = 5.0) -> None:
    """Yield to the loop until ``predicate()`` holds (no wall-clock sleeps of fixed length)."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0)


async def test_results_come_back_to_their_own_request_in_order(make_batcher):
    model = Model()
    batcher = await make_batcher(model)
    model.hold()
    first = asyncio.create_task(batcher.submit("a"))
    await model.started.wait()  # "a" runs alone (idle batcher)
    rest = [asyncio.create_task(batcher.submit(t)) for t in ("b", "c", "d")]
    await until(lambda: batcher.queued == 3)
    model.release()
    assert await first == "A"
    assert [await t for t in rest] == ["B", "C", "D"]
    assert model.batches == [["a"], ["b", "c", "d"]]


async def test_a_lone_request_on_an_idle_batcher_does_not_wait_for_the_delay(make_batcher):
    model = Model()
    batcher = await make_batcher(model, max_queue_delay_s=30.0)
    async with asyncio.timeout(5):
        assert await batcher.submit("x") == "X"
        assert await batcher.submit("y") == "Y"  # previous batch had 1 row: still no waiting
    assert model.batches == [["x"], ["y"]]


async def test_waits_for_as_many_rows_as_the_previous_batch_then_goes(make_batcher):
    model = Model()
    batcher = await make_batcher(model, max_queue_delay_s=30.0)
    await batcher.submit("ab", rows=3)  # previous batch: 3 rows
    one = asyncio.create_task(batcher.submit("c"))
    await until(lambda: batcher.queued == 1)
    for _ in range(20):
        await asyncio.sleep(0)
    assert not one.done() and len(model.batches) == 1  # waiting for batch-mates
    two = asyncio.create_task(batcher.submit("d", rows=2))
    assert await one == "C" and await two == "D"
    assert model.batches[-1] == ["c", "d"]


async def test_max_queue_delay_bounds_the_wait(make_batcher):
    model = Model()
    batcher = await make_batcher(model, max_queue_delay_s=0.05)
    await batcher.submit("ab", rows=8)
    async with asyncio.timeout(5):
        assert await batcher.submit("c") == "C"  # fewer than 8 rows ever come: goes after the delay


async def test_batches_respect_max_batch_size_and_a_big_request_runs_alone(make_batcher):
    model = Model()
    batcher = await make_batcher(model, max_batch_size=4)
    model.hold()
    blocker = asyncio.create_task(batcher.submit("z"))
    await model.started.wait()
    tasks = [asyncio.create_task(batcher.submit(name, rows=rows))
             for name, rows in (("a", 3), ("b", 1), ("c", 1), ("big", 9), ("d", 2))]
    await until(lambda: batcher.queued == 5)
    model.release()
    await asyncio.gather(blocker, *tasks)
    assert model.batches == [["z"], ["a", "b"], ["c"], ["big"], ["d"]]


async def test_a_preferred_batch_size_goes_without_waiting(make_batcher):
    model = Model()
    batcher = await make_batcher(model, max_batch_size=8, preferred_batch_sizes=[2], max_queue_delay_s=30.0)
    await batcher.submit("warm", rows=8)
    tasks = [asyncio.create_task(batcher.submit(t)) for t in ("a", "b", "c")]
    async with asyncio.timeout(5):
        assert await tasks[0] == "A" and await tasks[1] == "B"
    assert model.batches[1] == ["a", "b"]
    tasks[2].cancel()


async def test_disabled_batching_runs_each_request_alone(make_batcher):
    model = Model()
    batcher = await make_batcher(model, enabled=False)
    model.hold()
    tasks = [asyncio.create_task(batcher.submit(t)) for t in "abc"]
    await model.started.wait()
    model.release()
    assert await asyncio.gather(*tasks) == ["A", "B", "C"]
    assert model.batches == [["a"], ["b"], ["c"]]


async def test_a_full_queue_answers_resource_exhausted_and_queues_nothing(make_batcher):
    model = Model()
    batcher = await make_batcher(model, max_queue_size=2)
    model.hold()
    running = asyncio.create_task(batcher.submit("run"))
    await model.started.wait()
    queued = [asyncio.create_task(batcher.submit(t)) for t in ("a", "b")]
    await until(lambda: batcher.queued == 2)
    with pytest.raises(ResourceExhausted) as info:
        await batcher.submit("c")
    assert info.value.retry_after_s and info.value.retry_after_s > 0
    assert batcher.queued == 2
    model.release()
    assert await asyncio.gather(running, *queued) == ["RUN", "A", "B"]
    assert ["c"] not in model.batches


async def test_expired_requests_never_reach_the_model(make_batcher, clock):
    model = Model()
    batcher = await make_batcher(model)
    model.hold()
    running = asyncio.create_task(batcher.submit("run"))
    await model.started.wait()
    doomed = asyncio.create_task(batcher.submit("late", deadline=clock() + 1.0))
    kept = asyncio.create_task(batcher.submit("fine", deadline=clock() + 60.0))
    await until(lambda: batcher.queued == 2)
    clock.advance(2.0)
    model.release()
    with pytest.raises(DeadlineExceeded):
        await doomed
    assert await kept == "FINE"
    assert await running == "RUN"
    assert all("late" not in batch for batch in model.batches)


async def test_a_request_already_past_its_deadline_is_refused_at_once(make_batcher, clock):
    model = Model()
    batcher = await make_batcher(model)
    with pytest.raises(DeadlineExceeded):
        await batcher.submit("late", deadline=clock() - 0.001)
    assert model.batches == [] and batcher.queued == 0


async def test_a_cancelled_client_s_queued_request_is_dropped(make_batcher):
    model = Model()
    metrics = WorkerMetrics()
    batcher = await make_batcher(model, metrics=metrics.for_model("m"))
    model.hold()
    running = asyncio.create_task(batcher.submit("run"))
    await model.started.wait()
    gone = asyncio.create_task(batcher.submit("gone"))
    stays = asyncio.create_task(batcher.submit("stays"))
    await until(lambda: batcher.queued == 2)
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert batcher.queued == 1 and batcher.pending == 2
    model.release()
    assert await running == "RUN" and await stays == "STAYS"
    assert model.batches == [["run"], ["stays"]]
    assert metrics.registry.get_sample_value(
        "edgecloud_cloud_requests_total", {"model": "m", "outcome": Outcome.CANCELLED.value}) == 1


async def test_a_failing_batch_is_retried_alone_so_only_the_culprit_fails(make_batcher):
    model = Model()
    batcher = await make_batcher(model)
    model.hold()
    first = asyncio.create_task(batcher.submit("first"))
    await model.started.wait()
    model.fail_on = "bad"
    tasks = [asyncio.create_task(batcher.submit(t)) for t in ("good", "bad", "also good")]
    await until(lambda: batcher.queued == 3)
    model.release()
    results = await asyncio.gather(first, *tasks, return_exceptions=True)
    assert results[0] == "FIRST" and results[1] == "GOOD" and results[3] == "ALSO GOOD"
    assert isinstance(results[2], InternalError) and "boom" not in str(results[2])


async def test_a_typed_error_reaches_every_request_of_the_batch(make_batcher):
    model = Model()
    batcher = await make_batcher(model)
    model.fail_with = InvalidArgument("nope", field="inputs[x]")
    results = await asyncio.gather(*(batcher.submit(t) for t in "ab"), return_exceptions=True)
    assert all(isinstance(r, InvalidArgument) and r.field == "inputs[x]" for r in results)


@pytest.mark.parametrize("delta", [-1, 1])
async def test_a_wrong_result_count_fails_every_request(make_batcher, delta):
    model = Model()
    model.result_count_delta = delta
    batcher = await make_batcher(model, enabled=False)
    with pytest.raises(InternalError, match="results for 1 request"):
        await batcher.submit("a")


async def test_stop_answers_queued_and_running_requests_unavailable(clock):
    model = Model()
    batcher = DynamicBatcher(model, clock=clock, max_queue_delay_s=0)
    await batcher.start()
    model.hold()
    running = asyncio.create_task(batcher.submit("run"))
    await model.started.wait()
    queued = asyncio.create_task(batcher.submit("queued"))
    await until(lambda: batcher.queued == 1)
    await batcher.stop()
    for task in (running, queued):
        with pytest.raises(Unavailable):
            await task
    with pytest.raises(Unavailable):
        await batcher.submit("after")
    model.release()


async def test_metrics_record_batches_queue_and_compute(make_batcher):
    metrics = WorkerMetrics()
    model = Model()
    batcher = await make_batcher(model, metrics=metrics.for_model("m"))
    model.hold()
    first = asyncio.create_task(batcher.submit("a"))
    await model.started.wait()
    rest = [asyncio.create_task(batcher.submit(t, rows=2)) for t in "bc"]
    await until(lambda: batcher.queued == 2)
    model.release()
    await asyncio.gather(first, *rest)
    sample = metrics.registry.get_sample_value
    assert sample("edgecloud_cloud_batch_size_count", {"model": "m"}) == 2
    assert sample("edgecloud_cloud_batch_size_sum", {"model": "m"}) == 5
    assert sample("edgecloud_cloud_batch_requests_sum", {"model": "m"}) == 3
    assert sample("edgecloud_cloud_queue_seconds_count", {"model": "m"}) == 3
    assert sample("edgecloud_cloud_compute_seconds_count", {"model": "m"}) == 2
    assert sample("edgecloud_cloud_requests_total", {"model": "m", "outcome": "ok"}) == 3
    assert sample("edgecloud_cloud_pending_requests", {"model": "m"}) == 0


async def test_two_metric_sets_in_one_process_do_not_collide():
    a, b = WorkerMetrics(), WorkerMetrics()
    a.for_model("m").batch_size.observe(3)
    assert b.registry.get_sample_value("edgecloud_cloud_batch_size_count", {"model": "m"}) in (None, 0)


class Instances:
    """An ``execute`` whose every call waits for its own ``release(item)``: batches on several
    model instances, held and let go one by one."""

    def __init__(self):
        self.calls: list[list[str]] = []
        self._gates: dict[str, asyncio.Future] = {}

    def running(self) -> int:
        return sum(1 for gate in self._gates.values() if not gate.done())

    def release(self, item: str, error: BaseException | None = None) -> None:
        gate = self._gates[item]
        gate.set_exception(error) if error is not None else gate.set_result(None)

    async def __call__(self, items: list[str]) -> list[str]:
        self.calls.append(list(items))
        gate = self._gates[items[0]] = asyncio.get_running_loop().create_future()
        await gate
        return [item.upper() for item in items]


async def start_alone(batcher: DynamicBatcher, model: Instances, texts: str) -> list[asyncio.Task]:
    """Submit ``texts`` one at a time, each once the one before runs: each is a batch of its own."""
    tasks = []
    for text in texts:
        running = model.running()
        tasks.append(asyncio.create_task(batcher.submit(text)))
        await until(lambda: model.running() == running + 1)
    return tasks


async def test_two_instances_run_two_batches_at_once_and_a_third_waits_for_either(make_batcher):
    model = Instances()
    batcher = await make_batcher(model, instances=2)
    a, b = await start_alone(batcher, model, "ab")  # the second instance takes "b" while "a" runs
    c = asyncio.create_task(batcher.submit("c"))
    await until(lambda: batcher.queued == 1)
    for _ in range(20):
        await asyncio.sleep(0)
    assert model.calls == [["a"], ["b"]] and batcher.pending == 3  # both instances busy: "c" waits
    model.release("b")  # the later batch finishes first
    assert await b == "B"
    await until(lambda: model.running() == 2)
    assert model.calls[-1] == ["c"] and not a.done()
    model.release("c")
    model.release("a")
    assert [await a, await c] == ["A", "C"]
    assert batcher.pending == 0


async def a_running_and_b_queued(batcher: DynamicBatcher, model: Instances) -> tuple[asyncio.Task, asyncio.Task]:
    """Submit "a", wait until it runs, submit "b", and give the batcher every chance to start it."""
    a = asyncio.create_task(batcher.submit("a"))
    await until(lambda: model.running() == 1)
    b = asyncio.create_task(batcher.submit("b"))
    await until(lambda: batcher.queued == 1)
    for _ in range(20):
        await asyncio.sleep(0)
    return a, b


async def _previous_batch_of_three_then_a_running(batcher: DynamicBatcher, model: Instances) -> asyncio.Task:
    x = asyncio.create_task(batcher.submit("x", rows=3))
    await until(lambda: model.running() == 1)
    model.release("x")
    await x  # the previous batch had 3 rows: the next waits for as many
    a = asyncio.create_task(batcher.submit("a"))  # nothing running: goes after the (zero) idle delay
    await until(lambda: model.running() == 1)
    return a


async def test_beside_a_running_batch_a_free_instance_waits_the_busy_delay_for_batch_mates(make_batcher):
    model = Instances()
    batcher = await make_batcher(model, instances=2, max_queue_delay_s=0.0, busy_queue_delay_s=30.0)
    a = await _previous_batch_of_three_then_a_running(batcher, model)
    c = asyncio.create_task(batcher.submit("c"))
    await until(lambda: batcher.queued == 1)
    for _ in range(20):
        await asyncio.sleep(0)
    assert model.calls[-1] == ["a"] and model.running() == 1  # one row of three: "c" waits beside "a"
    d = asyncio.create_task(batcher.submit("d", rows=2))
    await until(lambda: model.running() == 2)
    assert model.calls[-1] == ["c", "d"]
    for item in ("a", "c"):
        model.release(item)
    assert [await a, await c, await d] == ["A", "C", "D"]


async def test_the_busy_delay_bounds_that_wait(make_batcher):
    model = Instances()
    batcher = await make_batcher(model, instances=2, max_queue_delay_s=0.0, busy_queue_delay_s=0.05)
    a = await _previous_batch_of_three_then_a_running(batcher, model)
    c = asyncio.create_task(batcher.submit("c"))
    await until(lambda: model.running() == 2)  # fewer than 3 rows ever come: goes after 0.05 s
    assert model.calls[-1] == ["c"] and not a.done()
    model.release("c")
    model.release("a")
    assert [await a, await c] == ["A", "C"]


def test_the_busy_delay_defaults_to_the_delay_and_neither_may_be_negative():
    assert DynamicBatcher(Model(), max_queue_delay_s=0.003).busy_queue_delay_s == 0.003
    with pytest.raises(ValueError):
        DynamicBatcher(Model(), busy_queue_delay_s=-0.001)


async def test_one_instance_runs_one_batch_at_a_time(make_batcher):
    model = Instances()
    batcher = await make_batcher(model)
    a, b = await a_running_and_b_queued(batcher, model)
    assert model.calls == [["a"]]
    model.release("a")
    await until(lambda: model.running() == 1)
    model.release("b")
    assert [await a, await b] == ["A", "B"]


async def test_a_failing_batch_on_one_instance_leaves_the_other_s_batch_alone(make_batcher):
    model = Instances()
    batcher = await make_batcher(model, instances=2)
    a, b = await start_alone(batcher, model, "ab")
    model.release("a", InvalidArgument("bad text", field="inputs[text]"))
    with pytest.raises(InvalidArgument):
        await a
    assert not b.done()
    model.release("b")
    assert await b == "B" and batcher.pending == 0


async def test_stop_answers_every_instance_s_running_batch_unavailable(clock):
    model = Instances()
    batcher = DynamicBatcher(model, clock=clock, max_queue_delay_s=0, instances=2)
    await batcher.start()
    running = await start_alone(batcher, model, "ab")
    queued = asyncio.create_task(batcher.submit("c"))
    await until(lambda: batcher.queued == 1)
    await batcher.stop()
    for task in (*running, queued):
        with pytest.raises(Unavailable):
            await task


class Widths(Instances):
    """``Instances`` that records each call's width (``split_when_busy``)."""

    def __init__(self):
        super().__init__()
        self.widths: dict[str, bool] = {}

    async def __call__(self, items: list[str], *, wide: bool) -> list[str]:
        self.widths[items[0]] = wide
        return await super().__call__(items)


async def test_a_batch_that_is_all_the_work_runs_wide_and_nothing_starts_beside_it(make_batcher):
    model = Widths()
    batcher = await make_batcher(model, instances=2, split_when_busy=True)
    a, b = await a_running_and_b_queued(batcher, model)
    assert model.calls == [["a"]] and model.widths == {"a": True}  # "b" waits: "a" has every thread
    model.release("a")
    await until(lambda: model.running() == 1)
    assert model.widths["b"] is True  # alone again once "a" is done
    model.release("b")
    assert [await a, await b] == ["A", "B"]


async def test_while_batches_queue_they_run_narrow_side_by_side(make_batcher):
    model = Widths()
    metrics = WorkerMetrics()
    batcher = await make_batcher(model, instances=2, split_when_busy=True, max_batch_size=1,
                                 metrics=metrics.for_model("m"))
    tasks = [asyncio.create_task(batcher.submit(text)) for text in "abc"]  # queued before the batcher runs
    await until(lambda: model.running() == 2)
    assert model.calls == [["a"], ["b"]] and model.widths == {"a": False, "b": False}
    model.release("a")  # "c" starts beside "b", which still runs: narrow
    await until(lambda: model.running() == 2)
    assert model.widths["c"] is False
    model.release("b")
    model.release("c")
    assert [await task for task in tasks] == ["A", "B", "C"]
    d = asyncio.create_task(batcher.submit("d"))  # the load gone, a lone request runs wide
    await until(lambda: model.running() == 1)
    assert model.widths["d"] is True
    model.release("d")
    assert await d == "D"
    sample = metrics.registry.get_sample_value
    assert sample("edgecloud_cloud_split_batches_total", {"model": "m", "width": "narrow"}) == 3
    assert sample("edgecloud_cloud_split_batches_total", {"model": "m", "width": "wide"}) == 1


async def test_without_split_execute_is_called_as_before(make_batcher):
    model = Instances()  # takes no ``wide``: a call with it would fail the batch
    batcher = await make_batcher(model, instances=2)
    (a,) = await start_alone(batcher, model, "a")
    model.release("a")
    assert await a == "A"
