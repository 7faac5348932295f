"""Monotonic time, injectable so policies are tested on a fake clock instead of sleeping."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Protocol

Sleep = Callable[[float], Awaitable[None]]
"""Waiting, injectable beside the clock: ``asyncio.sleep`` in production, a fake clock's in tests."""


class Clock(Protocol):
    def now(self) -> float:
        """Seconds on a monotonic clock."""
        ...


class MonotonicClock:
    def now(self) -> float:
        return time.monotonic()


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self, start: float = 1000.0):
        self._now = start

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds
