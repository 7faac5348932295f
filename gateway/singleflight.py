"""Single-flight: concurrent callers with the same key share one computation.

Contract (``SingleFlight``):
- ``join(key, start)`` returns ``(task, leader)``: the task already registered under ``key``
  (``leader`` false), or a new task running ``start()`` (``leader`` true). Callers await it through
  ``asyncio.shield``, so a caller that is cancelled (its client left) stops waiting without
  cancelling the shared work: the others still get its result.
- A task that fails or is cancelled is forgotten when it ends, so the next caller starts afresh.
  A task that succeeds stays joinable until ``forget(key, task)`` (its owner forgets it once the
  result is stored, so no caller falls in the gap between "computed" and "stored").
- Every task's exception is retrieved, so an outcome nobody waits for is never reported as
  "never retrieved". ``close()`` cancels whatever is still running and waits for it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Hashable
from typing import Any, Generic, TypeVar

__all__ = ["SingleFlight"]

log = logging.getLogger(__name__)
T = TypeVar("T")


class SingleFlight(Generic[T]):
    def __init__(self, name: str = "single-flight"):
        self._name = name
        self._tasks: dict[Hashable, asyncio.Task[T]] = {}

    def __len__(self) -> int:
        return len(self._tasks)

    def join(self, key: Hashable, start: Callable[[], Coroutine[Any, Any, T]]) -> tuple[asyncio.Task[T], bool]:
        task = self._tasks.get(key)
        if task is not None:
            return task, False
        task = asyncio.get_running_loop().create_task(start(), name=self._name)
        self._tasks[key] = task
        task.add_done_callback(lambda done: self._finished(key, done))
        return task, True

    def forget(self, key: Hashable, task: asyncio.Task[T]) -> None:
        if self._tasks.get(key) is task:
            del self._tasks[key]

    def _finished(self, key: Hashable, task: asyncio.Task[T]) -> None:
        if task.cancelled():
            self.forget(key, task)
        elif task.exception() is not None:  # retrieved here: nobody may be left to await it
            self.forget(key, task)

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
