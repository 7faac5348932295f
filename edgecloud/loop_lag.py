"""Noticing when this process's own event loop stalls, so latency samples taken across a stall
are not blamed on the backend.

Contract: ``LoopLag.run()`` (a background task) wakes every ``interval_s`` and notes how late it
woke; a wake-up later than ``threshold_s`` is a stall (the loop was busy decoding a huge body,
collecting garbage, or the process was not scheduled). ``stalled_since(t)`` says whether a stall
was noticed at or after ``t`` (clock time), or is under way now (the heartbeat itself is overdue):
a sample whose measurement began at ``t`` then measured this process, not the backend (while
``run()`` is not running, it says False). It keeps
only the time the last stall was noticed, so memory is constant. Time and waiting are injected.
"""

from __future__ import annotations

import asyncio
import logging

from edgecloud.clock import Clock, Sleep

__all__ = ["LoopLag"]

log = logging.getLogger(__name__)


class LoopLag:
    def __init__(self, clock: Clock, sleep: Sleep = asyncio.sleep, *, interval_s: float = 0.025,
                 threshold_s: float = 0.05):
        self._clock = clock
        self._sleep = sleep
        self.interval_s = interval_s
        self.threshold_s = threshold_s
        self._beat = clock.now()
        self.last_stall_at = float("-inf")
        """Clock time at which the last stall ended (was noticed)."""
        self.last_stall_s = 0.0
        self.stalls = 0
        self._running = False

    async def run(self) -> None:
        self._running = True
        try:
            await self._beat_forever()
        finally:
            self._running = False

    async def _beat_forever(self) -> None:
        while True:
            self._beat = self._clock.now()
            await self._sleep(self.interval_s)
            now = self._clock.now()
            late = now - self._beat - self.interval_s
            if late > self.threshold_s:
                self.last_stall_at, self.last_stall_s = now, late
                self.stalls += 1
                log.debug("event loop stalled for %.0f ms", late * 1000)

    def stalled_since(self, since: float) -> bool:
        if not self._running:
            return False
        if self.last_stall_at >= since:
            return True
        # The heartbeat is overdue right now: the loop is only just getting back from a stall.
        return self._clock.now() - self._beat > self.interval_s + self.threshold_s
