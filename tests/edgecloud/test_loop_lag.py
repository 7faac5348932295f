"""Noticing the process's own event-loop stalls: on virtual time, and on the real loop."""

from __future__ import annotations

import asyncio
import time

from edgecloud.clock import MonotonicClock
from edgecloud.loop_lag import LoopLag
from tests.support.virtual_clock import VirtualClock, settle


async def test_a_late_heartbeat_is_a_stall_and_an_on_time_one_is_not():
    clock = VirtualClock()
    lag = LoopLag(clock, clock.sleep, interval_s=0.025, threshold_s=0.05)
    assert not lag.stalled_since(clock.now())  # not running: says nothing
    task = asyncio.ensure_future(lag.run())
    await clock.advance(1.0)
    start = clock.now()
    assert not lag.stalled_since(start - 1.0) and lag.stalls == 0
    clock._now += 0.3  # the loop was busy: time went on, the heartbeat did not run
    assert lag.stalled_since(start)  # overdue right now
    await clock.advance(0)
    assert lag.stalled_since(start) and lag.stalls == 1 and abs(lag.last_stall_s - 0.275) < 1e-6
    await clock.advance(1.0)
    assert not lag.stalled_since(clock.now() - 0.5)  # a sample begun after the stall is clean
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await settle()


async def test_a_blocking_call_on_the_real_loop_is_noticed():
    lag = LoopLag(MonotonicClock(), interval_s=0.01, threshold_s=0.05)
    task = asyncio.ensure_future(lag.run())
    try:
        await asyncio.sleep(0.05)
        start = time.monotonic()
        time.sleep(0.2)  # a huge body decoded on the loop, say
        await asyncio.sleep(0.03)
        assert lag.stalled_since(start) and lag.last_stall_s > 0.1
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
