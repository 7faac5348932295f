"""``BatchedModel``: a runtime behind a dynamic batcher and its own compute thread.

Contract: ``infer`` receives a request the ``Dataplane`` has already validated; it runs the
runtime's per-request ``prepare`` on the event loop, or on the model's decode pool when the
runtime says ``decode_off_loop`` (images) (so a bad request is refused alone, before it
can join a batch), queues it with its deadline, and answers with the runtime's outputs, the model's
version and ``parameters={"variant": ...}``. Compute runs on the model's own threads (as many as the
runtime's ``instances``), never on the event loop. A runtime whose ``threads`` plan ``splits``
(``instances: auto`` on a CPU) has its batches run wide or narrow (``DynamicBatcher``'s
``split_when_busy``), each on that many torch threads; a wide batch always runs on the thread
that loaded the runtime (OpenMP keeps a team of threads per calling thread: two calling threads
with two-thread teams would leave one team's spinning threads in the other's way, which cost a
lone request 1.2 ms in ``bench.cloud``), a narrow one there too when it is free. ``load`` loads
and warms the runtime before the model reports ready; ``unload`` stops the batcher (queued
requests get UNAVAILABLE), waits for the running batches, and frees the runtime. Every model call
tells the process's ``heap_trimmer`` (``after_compute``): a worker idle for a second hands its
batches' heap back to the OS.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from cloud_worker.batcher import DynamicBatcher
from cloud_worker.config import BatchingSettings
from cloud_worker.metrics import ModelMetrics
from cloud_worker.runtime import Runtime
from cloud_worker.threads import ThreadPlan, use_threads
from edgecloud.allocator import heap_trimmer
from edgecloud.errors import FailedPrecondition
from edgecloud.model import BlockingRunner, Model
from edgecloud.types import InferRequest, InferResponse, Tensor

log = logging.getLogger(__name__)


def batch_limit(runtime: Runtime, batching: BatchingSettings) -> int:
    """Rows per model call: the batcher's limit, capped by what the program declares it takes."""
    declared = runtime.metadata.max_batch_size
    return min(batching.max_batch_size, declared) if declared else batching.max_batch_size


class BatchedModel(Model):
    def __init__(self, runtime: Runtime, batching: BatchingSettings | None = None, *,
                 metrics: ModelMetrics | None = None, clock: Callable[[], float] = time.monotonic):
        batching = batching or BatchingSettings()
        self.runtime = runtime
        self.metadata = runtime.metadata
        self._runner: BlockingRunner | None = None
        self._beside: BlockingRunner | None = None
        """A split plan's second thread: narrow batches while the first is busy."""
        self._first_busy = False
        self.instances: int = getattr(runtime, "instances", 1)
        self._threads: ThreadPlan | None = getattr(runtime, "threads", None)
        split = self._threads is not None and self._threads.splits
        self.batcher: DynamicBatcher[object, list[Tensor]] = DynamicBatcher(
            self._execute,
            max_batch_size=batch_limit(runtime, batching),
            max_queue_delay_s=batching.max_queue_delay_us / 1e6,
            busy_queue_delay_s=None if batching.busy_queue_delay_us is None else batching.busy_queue_delay_us / 1e6,
            preferred_batch_sizes=batching.preferred_batch_sizes,
            max_queue_size=batching.max_queue_size,
            enabled=batching.enabled and runtime.batchable,
            instances=self.instances,
            split_when_busy=split,
            clock=clock,
            metrics=metrics,
            name=self.metadata.name,
        )
        self._parameters = {"variant": runtime.variant}
        self._loaded = False
        self.labels = getattr(runtime, "labels", None)
        """Class names for the classification extension, when the runtime has them."""
        self._decoder: BlockingRunner | None = None

    @property
    def variant(self) -> str:
        """What responses report as ``variant`` (the runtime's precision)."""
        return self.runtime.variant

    def ready(self) -> bool:
        return self._loaded

    async def load(self) -> None:
        if self._loaded:
            return
        if self.batcher.split_when_busy:
            self._runner = BlockingRunner(1, name=f"torch-{self.metadata.name}")
            self._beside = BlockingRunner(1, name=f"torch-{self.metadata.name}-beside")
        else:
            self._runner = BlockingRunner(self.instances, name=f"torch-{self.metadata.name}")
        if getattr(self.runtime, "decode_off_loop", False):
            self._decoder = BlockingRunner(getattr(self.runtime, "decode_threads", 2),
                                           name=f"decode-{self.metadata.name}")
        await self._runner.run(self.runtime.load)
        if self._threads is not None and getattr(getattr(self.runtime, "device", None), "type", None) == "cpu":
            log.info("model %s: %s", self.metadata.name, self._threads)  # how its batches share the CPUs
        await self.batcher.start()
        self._loaded = True

    async def unload(self) -> None:
        self._loaded = False
        await self.batcher.stop()
        runner, self._runner = self._runner, None
        beside, self._beside = self._beside, None
        if beside is not None:
            await asyncio.to_thread(beside.close)
        if runner is not None:
            await asyncio.to_thread(runner.close)  # waits for a batch still on the thread
            self.runtime.close()
        decoder, self._decoder = self._decoder, None
        if decoder is not None:
            await asyncio.to_thread(decoder.close)

    async def infer(self, request: InferRequest) -> InferResponse:
        if not self._loaded:
            raise FailedPrecondition(f"model {self.metadata.name!r} is not loaded")
        decoder = self._decoder
        if decoder is not None:
            item, rows = await decoder.run(self.runtime.prepare, request)
        else:
            item, rows = self.runtime.prepare(request)
        outputs = await self.batcher.submit(item, rows, request.deadline)
        return InferResponse(self.metadata.name, outputs, model_version=self.version,
                             parameters=dict(self._parameters))

    async def _execute(self, items: list[object], wide: bool | None = None) -> list[list[Tensor]]:
        """One batch on a runner thread; ``wide`` (a plan that splits): on how many torch threads."""
        runner = self._runner
        if runner is None:
            raise FailedPrecondition(f"model {self.metadata.name!r} is not loaded")
        try:
            if wide is None:
                return await runner.run(self.runtime.run, items)
            plan = self._threads
            if not wide and self._first_busy:  # (a wide batch only ever runs alone)
                return await self._beside.run(self._run_on, plan.narrow, items)
            self._first_busy = True
            try:
                return await runner.run(self._run_on, plan.wide if wide else plan.narrow, items)
            finally:
                self._first_busy = False
        finally:
            heap_trimmer.after_compute()  # an idle worker hands back what its batches grew the heap by

    def _run_on(self, threads: int, items: list[object]) -> list[list[Tensor]]:
        use_threads(threads)
        return self.runtime.run(items)


__all__ = ["BatchedModel", "batch_limit"]
