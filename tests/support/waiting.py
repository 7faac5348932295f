"""Polling helpers for tests that wait on state another task or process changes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


async def wait_until(predicate: Callable[[], object], timeout: float = 5.0, interval: float = 0.02) -> None:
    """Poll ``predicate()`` every ``interval``; fail the test if it is not true within ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(interval)
