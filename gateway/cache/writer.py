"""Cache writes off the request's critical path.

Contract (``BackgroundWriter``): ``submit(write)`` starts ``write()`` as a task and returns it,
or returns None without starting it when ``max_pending`` writes are already in flight (a dropped
write costs a future hit, never request latency). A write's failure is the caller's to handle
inside ``write`` (the cache counts it and feeds the breaker); anything that still escapes is
logged, never raised. ``close(grace)`` waits up to ``grace`` seconds for pending writes, then
cancels the rest.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

__all__ = ["BackgroundWriter"]

log = logging.getLogger(__name__)


class BackgroundWriter:
    def __init__(self, max_pending: int):
        self.max_pending = max_pending
        self._tasks: set[asyncio.Task] = set()

    @property
    def pending(self) -> int:
        return len(self._tasks)

    def submit(self, write: Callable[[], Coroutine[Any, Any, None]]) -> asyncio.Task | None:
        if len(self._tasks) >= self.max_pending:
            return None
        task = asyncio.get_running_loop().create_task(write(), name="cache-write")
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("cache write failed unexpectedly: %r", task.exception())

    async def close(self, grace: float = 0.5) -> None:
        tasks = list(self._tasks)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        self._tasks.clear()
