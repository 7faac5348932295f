"""Virtual time for unit tests of orchestration: a clock and a sleep that move only when told to.

``clock.now()`` is the injected monotonic clock; ``await clock.sleep(s)`` waits until virtual time
reaches now + s. ``await clock.advance(s)`` moves time forward, waking sleepers in time order and
letting the event loop settle after each. ``await clock.run(coro)`` runs ``coro`` and, whenever
every task is waiting on the clock, jumps to the next sleeper's time ("autojump"), so a test reads
as the scenario it describes and never sleeps for real. Only for code that does no real I/O.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")

SETTLE_TURNS = 200


async def settle() -> None:
    """Let every task that can run, run (no real I/O is pending in these tests)."""
    loop = asyncio.get_running_loop()
    for _ in range(SETTLE_TURNS):
        await asyncio.sleep(0)
        ready = getattr(loop, "_ready", None)  # CPython's queue of callbacks ready to run
        if ready is not None and not ready:
            return


class ManualClock:
    """A plain callable monotonic clock (what threads and batchers take as ``clock=``) that moves
    only when a test calls ``advance``; ``now`` is the current time."""

    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class VirtualClock:
    def __init__(self, start: float = 1000.0):
        self._now = start
        self._sleepers: list[tuple[float, int, asyncio.Future]] = []
        self._order = itertools.count()

    def now(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        waiter = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._order), waiter))
        await waiter

    def _next_wake(self) -> float | None:
        while self._sleepers and self._sleepers[0][2].done():  # cancelled sleepers
            heapq.heappop(self._sleepers)
        return self._sleepers[0][0] if self._sleepers else None

    async def advance(self, seconds: float) -> None:
        target = self._now + seconds
        await settle()
        while (wake := self._next_wake()) is not None and wake <= target:
            _, _, waiter = heapq.heappop(self._sleepers)
            self._now = max(self._now, wake)
            waiter.set_result(None)
            await settle()
        self._now = target
        await settle()

    async def run(self, awaitable: Awaitable[T], *, limit_s: float = 3600.0) -> T:
        """Await ``awaitable`` in virtual time; fails if it waits on anything but the clock."""
        task = asyncio.ensure_future(awaitable)
        end = self._now + limit_s
        try:
            while True:
                await settle()
                if task.done():
                    return task.result()
                wake = self._next_wake()
                if wake is None:
                    raise AssertionError("deadlock: the task waits, and not on the virtual clock")
                if wake > end:
                    raise AssertionError(f"still running after {limit_s} virtual seconds")
                await self.advance(wake - self._now)
        finally:
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
