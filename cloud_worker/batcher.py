"""Dynamic batching: concurrent requests merged into one model call.

Contract of ``DynamicBatcher`` (one per model; up to ``instances`` batches run at a time, one per
model instance, Triton's ``instance_group`` count):

- ``submit(item, rows, deadline)`` queues one already-validated request and returns its own
  result, or raises
  * ``ResourceExhausted`` when ``max_queue_size`` requests already wait (nothing is queued);
  * ``DeadlineExceeded`` when its ``deadline`` (a time on ``clock``, monotonic) has passed before
    its batch starts: an expired request never reaches ``execute``;
  * ``asyncio.CancelledError`` when the awaiting task is cancelled: a queued request is dropped;
  * ``Unavailable`` when the batcher stops before the request ran;
  * the batch's error when ``execute`` fails (an ``InferenceError`` as raised, anything else as
    ``InternalError``). A failed batch of several requests is re-run one request at a time first,
    so one request that breaks the model does not fail its batch-mates.
- When an instance is free, queued requests (FIFO, up to ``max_batch_size`` rows; a lone request
  bigger than that runs alone) are dispatched as soon as the queue holds ``max_batch_size`` rows,
  a preferred batch size (the largest one reached is taken), or as many rows as the previous batch
  had (closed-loop clients whose answers just went out come back together); at the latest
  ``max_queue_delay_s`` after an instance became free, or ``busy_queue_delay_s`` while another
  batch is running (several instances). So a lone request on an idle batcher goes at once, and no
  request waits for batch-mates longer than the delay that applies while an instance is free.
  Why the longer wait when busy: a batch's fixed cost is several rows' worth (one row costs what
  four do in a batch of 32, CPU), so an instance that starts whatever few rows came back first,
  beside a batch still running, spends its core on small batches; closed-loop clients answered
  together come back together, a few milliseconds apart, and waiting for them fills the batch.
  Batches start in queue order; with several instances they may finish in any order.
- ``enabled=False``: every batch is exactly one request (same queue, deadlines and metrics).
- ``split_when_busy`` (with ``instances`` >= 2): a batch that is all the work there is (no other
  batch running, nothing left queued once it is taken) runs *wide*, and no other batch starts
  until it ends; any other batch runs *narrow*, beside up to ``instances - 1`` others. ``execute``
  is then called as ``execute(items, wide=...)`` (the runtime gives a wide batch every thread, a
  narrow one its share): a lone request gets the whole machine, a queue gets every instance.
- ``execute(items)`` gets the items in queue order and must return one result per item, in the
  same order; any other count fails the whole batch with ``InternalError``. Every request's future
  is resolved exactly once, whatever happens.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from cloud_worker.metrics import ModelMetrics, Outcome
from edgecloud.errors import DeadlineExceeded, InferenceError, InternalError, ResourceExhausted, Unavailable

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


@dataclass(slots=True, eq=False)
class _Entry(Generic[T]):
    item: T
    rows: int
    future: asyncio.Future
    enqueued: float
    deadline: float | None
    queued: bool = True


class DynamicBatcher(Generic[T, R]):
    def __init__(
        self,
        execute: Callable[[list[T]], Awaitable[Sequence[R]]],
        *,
        max_batch_size: int = 32,
        max_queue_delay_s: float = 0.002,
        busy_queue_delay_s: float | None = None,
        preferred_batch_sizes: Sequence[int] = (),
        max_queue_size: int = 1024,
        enabled: bool = True,
        instances: int = 1,
        split_when_busy: bool = False,
        clock: Callable[[], float] = time.monotonic,
        metrics: ModelMetrics | None = None,
        name: str = "model",
    ):
        if busy_queue_delay_s is None:
            busy_queue_delay_s = max_queue_delay_s
        if max_batch_size < 1 or max_queue_size < 1 or instances < 1 or min(max_queue_delay_s, busy_queue_delay_s) < 0:
            raise ValueError("max_batch_size, max_queue_size and instances must be >= 1, the delays >= 0")
        self._execute = execute
        self.max_batch_size = max_batch_size
        self.max_queue_delay_s = max_queue_delay_s
        self.busy_queue_delay_s = busy_queue_delay_s
        self.preferred_batch_sizes = tuple(sorted(set(preferred_batch_sizes)))
        self.max_queue_size = max_queue_size
        self.enabled = enabled
        self.instances = instances
        self.split_when_busy = split_when_busy and instances > 1
        self.name = name
        self._clock = clock
        self._metrics = metrics
        self._queue: deque[_Entry[T]] = deque()
        self._queued = 0
        self._queued_rows = 0
        self._running = 0
        self._batches: set[asyncio.Task] = set()
        self._previous_rows = 0
        self._free_since = float("-inf")
        self._last_compute_s = 0.0
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._closed = False

    # lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._task is None:
            self._closed = False
            self._task = asyncio.create_task(self._run(), name=f"batcher-{self.name}")

    async def stop(self) -> None:
        """Fail every queued request with ``Unavailable`` and stop; running batches are abandoned
        (their requests get ``Unavailable``; the model calls themselves finish on their threads)."""
        self._closed = True
        task, self._task = self._task, None
        tasks = [task, *self._batches] if task is not None else list(self._batches)
        for each in tasks:
            each.cancel()
        for each in tasks:
            try:
                await each
            except asyncio.CancelledError:
                pass
        self._fail_queued(Unavailable("the worker is shutting down"))

    async def __aenter__(self) -> DynamicBatcher[T, R]:
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    # state -----------------------------------------------------------------------------------

    @property
    def queued(self) -> int:
        """Requests waiting (not running)."""
        return self._queued

    @property
    def pending(self) -> int:
        """Requests waiting or running."""
        return self._queued + self._running

    # submitting ------------------------------------------------------------------------------

    async def submit(self, item: T, rows: int = 1, deadline: float | None = None) -> R:
        if self._closed or self._task is None:
            raise Unavailable(f"model {self.name!r} is not accepting requests")
        now = self._clock()
        if deadline is not None and now >= deadline:
            self._count(Outcome.DEADLINE_EXCEEDED)
            raise DeadlineExceeded("the deadline passed before the request was queued")
        if self._queued >= self.max_queue_size:
            self._count(Outcome.QUEUE_FULL)
            raise ResourceExhausted(
                f"model {self.name!r} has {self._queued} requests queued, the most it takes; retry later",
                retry_after_s=max(self._last_compute_s, 0.001),
            )
        entry = _Entry(item, rows, asyncio.get_running_loop().create_future(), now, deadline)
        self._queue.append(entry)
        self._queued += 1
        self._queued_rows += rows
        self._set_pending()
        self._wakeup.set()
        try:
            return await entry.future
        except asyncio.CancelledError:
            if entry.queued:
                self._unqueue(entry)
                self._count(Outcome.CANCELLED)
            raise

    # the loop --------------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            if not self._queued or len(self._batches) >= self.instances:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            try:
                limit = await self._gather() if self.enabled else 1
                batch, rows = self._take(limit)
            except Exception:  # a bug here must not leave every later request hanging
                log.exception("batcher of model %r failed; continuing", self.name)
                continue
            if not batch:
                continue
            wide = self.split_when_busy and not self._batches and not self._queued
            if self.instances == 1 or wide:  # in this task (no task per batch): nothing starts until it ends
                await self._run_batch(batch, rows, wide)
            else:
                task = asyncio.create_task(self._run_batch(batch, rows), name=f"batch-{self.name}")
                self._batches.add(task)
                task.add_done_callback(self._batch_done)

    async def _run_batch(self, batch: list[_Entry[T]], rows: int, wide: bool = False) -> None:
        try:
            await self._dispatch(batch, rows, wide)
        except Exception:  # a bug here must not leave the batch's requests hanging
            log.exception("batcher of model %r failed; continuing", self.name)
            self._fail(batch, InternalError(f"model {self.name!r} failed to run the request"), Outcome.ERROR)
        self._previous_rows = rows
        self._free_since = self._clock()

    def _batch_done(self, task: asyncio.Task) -> None:
        self._batches.discard(task)
        self._wakeup.set()  # an instance is free: the loop may start the next batch

    async def _gather(self) -> int:
        """Wait (bounded by the delay since an instance became free) for a batch worth starting;
        returns the most rows to take."""
        target = min(self.max_batch_size, max(self._previous_rows, 1))
        while self._queued:
            rows = self._queued_rows
            if rows >= target:
                return self.max_batch_size
            reached = [size for size in self.preferred_batch_sizes if size <= rows]
            if reached:
                return reached[-1]
            delay = self.busy_queue_delay_s if self._batches else self.max_queue_delay_s
            remaining = self._free_since + delay - self._clock()
            if remaining <= 0:
                break
            self._wakeup.clear()
            try:
                async with asyncio.timeout(remaining):
                    await self._wakeup.wait()
            except TimeoutError:
                break
        return self.max_batch_size

    def _take(self, limit: int) -> tuple[list[_Entry[T]], int]:
        """Pop up to ``limit`` rows of live requests in FIFO order; expired ones are answered."""
        batch: list[_Entry[T]] = []
        total = 0
        now = self._clock()
        queue = self._queue
        while queue:
            entry = queue[0]
            if not entry.queued:
                queue.popleft()
                continue
            if entry.deadline is not None and now >= entry.deadline:
                queue.popleft()
                self._unqueue(entry)
                entry.future.set_exception(DeadlineExceeded("the deadline passed while the request was queued"))
                self._count(Outcome.DEADLINE_EXCEEDED)
                continue
            if batch and total + entry.rows > limit:
                break
            queue.popleft()
            self._unqueue(entry)
            batch.append(entry)
            total += entry.rows
            if total >= limit:
                break
        self._running += len(batch)
        self._set_pending()
        return batch, total

    def _call(self, items: list[T], wide: bool) -> Awaitable[Sequence[R]]:
        if self.split_when_busy:
            return self._execute(items, wide=wide)
        return self._execute(items)

    async def _dispatch(self, batch: list[_Entry[T]], rows: int, wide: bool = False) -> None:
        start = self._clock()
        metrics = self._metrics
        try:
            if metrics is not None:
                metrics.batch_size.observe(rows)
                metrics.batch_fill.observe(min(rows / self.max_batch_size, 1.0))
                metrics.batch_requests.observe(len(batch))
                if self.split_when_busy:
                    metrics.batch_width[wide].inc()
                for entry in batch:
                    metrics.queue_seconds.observe(start - entry.enqueued)
            try:
                results = await self._call([entry.item for entry in batch], wide)
                if len(results) != len(batch):
                    raise InternalError(f"the model returned {len(results)} results for {len(batch)} requests")
            except asyncio.CancelledError:
                self._fail(batch, Unavailable("the worker stopped before the request finished"), Outcome.UNAVAILABLE)
                raise
            except Exception as exc:
                if len(batch) > 1:
                    log.warning("batch of %d requests failed on model %r (%s); retrying one at a time",
                                len(batch), self.name, type(exc).__name__)
                    await self._run_alone(batch, wide)
                else:
                    self._fail(batch, _client_error(exc, self.name), Outcome.ERROR)
                return
            ok = 0
            for entry, result in zip(batch, results):
                if not entry.future.done():
                    entry.future.set_result(result)
                    ok += 1
            self._count(Outcome.OK, ok)
        finally:
            self._last_compute_s = self._clock() - start
            if metrics is not None:
                metrics.compute_seconds.observe(self._last_compute_s)
            self._running -= len(batch)
            self._set_pending()

    async def _run_alone(self, batch: list[_Entry[T]], wide: bool = False) -> None:
        """Isolate a failed batch's culprit: each request alone, each with its own outcome."""
        for index, entry in enumerate(batch):
            if entry.future.done():
                continue
            if entry.deadline is not None and self._clock() >= entry.deadline:
                entry.future.set_exception(DeadlineExceeded("the deadline passed before the request ran"))
                self._count(Outcome.DEADLINE_EXCEEDED)
                continue
            try:
                results = await self._call([entry.item], wide)
                if len(results) != 1:
                    raise InternalError(f"the model returned {len(results)} results for 1 request")
            except asyncio.CancelledError:
                self._fail(batch[index:], Unavailable("the worker stopped before the request finished"),
                           Outcome.UNAVAILABLE)
                raise
            except Exception as exc:
                self._fail([entry], _client_error(exc, self.name), Outcome.ERROR)
            else:
                if not entry.future.done():
                    entry.future.set_result(results[0])
                    self._count(Outcome.OK)

    # helpers ---------------------------------------------------------------------------------

    def _unqueue(self, entry: _Entry[T]) -> None:
        entry.queued = False
        self._queued -= 1
        self._queued_rows -= entry.rows
        self._set_pending()

    def _fail(self, entries: list[_Entry[T]], error: BaseException, outcome: Outcome) -> None:
        failed = 0
        for entry in entries:
            if not entry.future.done():
                entry.future.set_exception(error)
                failed += 1
        self._count(outcome, failed)

    def _fail_queued(self, error: BaseException) -> None:
        while self._queue:
            entry = self._queue.popleft()
            if entry.queued:
                self._unqueue(entry)
                if not entry.future.done():
                    entry.future.set_exception(error)
                    self._count(Outcome.UNAVAILABLE)

    def _set_pending(self) -> None:
        if self._metrics is not None:
            self._metrics.set_load(self._queued, self._running)

    def _count(self, outcome: Outcome, count: int = 1) -> None:
        if self._metrics is not None and count:
            self._metrics.outcome(outcome, count)


def _client_error(exc: Exception, model: str) -> InferenceError:
    if isinstance(exc, InferenceError):
        return exc
    log.error("model %r failed on a batch", model, exc_info=exc)
    return InternalError(f"model {model!r} failed to run the request")


__all__ = ["DynamicBatcher"]
