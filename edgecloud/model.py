"""The model contract every runtime implements, and the repository that resolves names.

Contract: a ``Model`` advertises ``metadata``; ``infer`` receives a request already decoded and
validated against that metadata (``edgecloud.validation``) and returns all of its outputs.
Blocking compute must run off the event loop (``run_blocking``).
"""

from __future__ import annotations

import abc
import asyncio
import queue
import threading
import weakref
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

from edgecloud.errors import NotFound
from edgecloud.types import InferRequest, InferResponse, ModelMetadata

T = TypeVar("T")


class Model(abc.ABC):
    """One servable model version."""

    metadata: ModelMetadata

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def version(self) -> str:
        return self.metadata.versions[0] if self.metadata.versions else ""

    async def load(self) -> None:
        """Prepare for serving (sessions, warm-up). Called once before ``infer``."""

    async def unload(self) -> None:
        """Release resources. Called once, after the last ``infer``."""

    def ready(self) -> bool:
        return True

    @abc.abstractmethod
    async def infer(self, request: InferRequest) -> InferResponse:
        """Run a validated request."""

    async def stream(self, request: InferRequest) -> AsyncIterator[InferResponse]:
        """Responses to a validated request over a stream (``ModelStreamInfer``); the last one
        carries ``triton_final_response: true``. A model that is not decoupled answers once."""
        response = await self.infer(request)
        response.parameters["triton_final_response"] = True
        response.wire = None
        yield response


class BlockingRunner:
    """A dedicated set of threads for one model's blocking calls (onnxruntime, torch).

    Contract: ``run(fn, *args)`` runs ``fn(*args)`` on one of ``workers`` threads, in submission
    order, and returns (or raises) what it did; the caller's event loop never blocks. A call whose
    awaiting task is cancelled before a thread takes it up never runs; one already running finishes
    on its thread (its result is dropped). ``close()`` fails calls not yet started with
    ``CancelledError``, waits for the running ones and stops the threads; ``run`` afterwards raises
    ``RuntimeError``. Threads start with the first call (a runner never used holds none), and those
    of a runner dropped without ``close()`` stop once it is collected.

    Why not ``loop.run_in_executor``: every model call goes through here, and the executor's
    hand-off (a ``concurrent.futures.Future`` with its lock and condition, a work item, the chain of
    callbacks copying its state onto an asyncio future) was the largest single cost on the edge
    server's event loop in a profile (py-spy, c=64). Here a call is one queue entry and one
    ``call_soon_threadsafe``. Measured with the model call replaced by a canned answer (server CPU
    per request at c=64, 2 cores): the edge server 416 -> 387 us, the minimal ``run_in_executor``
    backend it is compared with (``bench.edge_floor``) 351 us.
    """

    def __init__(self, workers: int = 1, name: str = "model"):
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._workers = max(1, workers)
        self._name = name
        self._threads: list[threading.Thread] = []
        """Started by the first call (a runner never used holds no thread)."""
        self._start_lock = threading.Lock()
        self._closed = False
        # A runner dropped without close() still stops its threads (they hold the queue, not it).
        self._finalizer = weakref.finalize(self, _stop, self._queue, self._workers)

    @property
    def workers(self) -> int:
        """How many calls run at once."""
        return self._workers

    async def run(self, fn: Callable[..., T], *args) -> T:
        if self._closed:
            raise RuntimeError("the runner is closed")
        if not self._threads:
            self._start()
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.put((loop, future, fn, args))
        return await future

    def _start(self) -> None:
        with self._start_lock:
            if self._threads or self._closed:
                return
            threads = [threading.Thread(target=_work, args=(self._queue,), name=f"{self._name}_{index}", daemon=True)
                       for index in range(self._workers)]
            for thread in threads:
                thread.start()
            self._threads = threads

    def close(self) -> None:
        with self._start_lock:
            if self._closed:
                return
            self._closed = True
        self._finalizer.detach()
        self._cancel_queued()
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join()
        self._cancel_queued()  # a call queued while closing (from another thread) never runs either

    def _cancel_queued(self) -> None:
        """Tell the callers of calls not started that they never will be (stop markers are dropped)."""
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is not None:
                _deliver(item[0], _cancel, item[1], None)


def _work(calls: queue.SimpleQueue) -> None:
    """One runner thread: calls from the queue until a stop marker (None)."""
    while True:
        item = calls.get()
        if item is None:
            return
        loop, future, fn, args = item
        if future.done():  # cancelled while it waited: nothing to run, nobody to answer
            continue
        try:
            result = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller, raised there
            _deliver(loop, _fail, future, exc)
        else:
            _deliver(loop, _succeed, future, result)
        del item, future, args  # drop the call's references before blocking on the queue


def _stop(calls: queue.SimpleQueue, workers: int) -> None:
    for _ in range(workers):
        calls.put(None)


def _deliver(loop: asyncio.AbstractEventLoop, settle: Callable, future: asyncio.Future, value) -> None:
    try:
        loop.call_soon_threadsafe(settle, future, value)
    except RuntimeError:  # the loop has closed: nobody is waiting any more
        pass


def _succeed(future: asyncio.Future, result) -> None:
    if not future.done():
        future.set_result(result)


def _fail(future: asyncio.Future, exc: BaseException) -> None:
    if not future.done():
        if isinstance(exc, StopIteration):  # a future cannot carry it (PEP 479)
            exc = RuntimeError(f"StopIteration raised by a blocking call: {exc!r}")
        future.set_exception(exc)


def _cancel(future: asyncio.Future, _) -> None:
    future.cancel()


class ModelRepository:
    """Models by name and version; an empty version means the newest one."""

    def __init__(self, models: list[Model] | None = None):
        self._models: dict[str, dict[str, Model]] = {}
        self._newest: dict[str, Model] = {}
        """Each name's newest version, kept as models are added (every request without a version
        asks for it)."""
        for model in models or []:
            self.add(model)

    def add(self, model: Model) -> None:
        versions = self._models.setdefault(model.name, {})
        versions[model.version] = model
        self._newest[model.name] = versions[max(versions, key=_version_key)]

    def get(self, name: str, version: str = "") -> Model:
        if not version:
            newest = self._newest.get(name)
            if newest is None:
                raise NotFound(f"unknown model {name!r}", field="model_name")
            return newest
        versions = self._models.get(name)
        if not versions:
            raise NotFound(f"unknown model {name!r}", field="model_name")
        model = versions.get(version)
        if model is None:
            raise NotFound(f"model {name!r} has no version {version!r}; versions: {sorted(versions)}",
                           field="model_version")
        return model

    def all(self) -> list[Model]:
        return [model for versions in self._models.values() for model in versions.values()]


def _version_key(version: str) -> tuple[int, str]:
    return (int(version), "") if version.isdigit() else (-1, version)
