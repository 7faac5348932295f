"""``edgecloud.expiry.Expiry``: asyncio.timeout's contract with one timer for all the blocks.

Real event loop, short limits (the timer is the loop's own); nothing asserts an upper bound on
time beyond "well before the longer wait would have ended"."""

from __future__ import annotations

import asyncio
import time

import pytest

from edgecloud.expiry import Expiry


async def _bounded(expiry: Expiry, timeout_s: float | None, wait_s: float) -> str:
    with expiry.within(timeout_s):
        await asyncio.sleep(wait_s)
    return "done"


def test_a_block_that_ends_in_time_is_untouched_and_later_awaits_are_not_cancelled():
    async def main():
        expiry = Expiry()
        assert await _bounded(expiry, 1.0, 0.01) == "done"
        await asyncio.sleep(0.02)  # no cancellation left behind for the task
        return "after"

    assert asyncio.run(main()) == "after"


def test_past_the_limit_the_block_raises_timeout_error_at_the_limit():
    async def main():
        expiry = Expiry()
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await _bounded(expiry, 0.05, 5.0)
        elapsed = time.monotonic() - started
        assert 0.05 <= elapsed < 2.0
        await asyncio.sleep(0.01)  # the task is usable afterwards
        assert asyncio.current_task().cancelling() == 0

    asyncio.run(main())


def test_no_limit_and_an_expired_one():
    async def main():
        expiry = Expiry()
        assert await _bounded(expiry, None, 0.01) == "done"
        with pytest.raises(TimeoutError):
            await _bounded(expiry, 0.0, 5.0)
        with pytest.raises(TimeoutError):
            await _bounded(expiry, -1.0, 5.0)

    asyncio.run(main())


def test_each_of_many_concurrent_blocks_expires_at_its_own_limit_and_only_then():
    async def main():
        expiry = Expiry()
        # limits 0.1 s apart, waits just under or far over them, in a shuffled order
        plans = [(0.1 + 0.1 * (i % 4), 0.01 if i % 3 else 10.0) for i in range(24)]
        started = time.monotonic()

        async def one(timeout_s, wait_s):
            try:
                await _bounded(expiry, timeout_s, wait_s)
                return "done", time.monotonic() - started
            except TimeoutError:
                return "expired", time.monotonic() - started

        outcomes = await asyncio.gather(*(one(*plan) for plan in plans))
        for (timeout_s, wait_s), (outcome, at) in zip(plans, outcomes):
            if wait_s < timeout_s:
                assert outcome == "done"
            else:
                assert outcome == "expired" and at >= timeout_s

    asyncio.run(main())


def test_one_timer_serves_limits_of_one_length():
    async def main():
        expiry = Expiry()

        async def one():
            await _bounded(expiry, 30.0, 0.001)

        await asyncio.gather(*(one() for _ in range(200)))
        return expiry.timers_armed

    assert asyncio.run(main()) == 1


def test_an_earlier_limit_arriving_after_a_later_one_moves_the_timer():
    async def main():
        expiry = Expiry()
        long = asyncio.ensure_future(_bounded(expiry, 30.0, 0.5))
        await asyncio.sleep(0)  # the 30 s limit is armed first
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await _bounded(expiry, 0.05, 5.0)
        assert time.monotonic() - started < 4.0  # long before the 5 s sleep, let alone the 30 s limit
        assert await long == "done"  # the short limit's firing left the long one alone
        assert expiry.timers_armed == 3  # the 30 s limit, the 0.05 s one, the 30 s one again

    asyncio.run(main())


def test_a_cancellation_from_elsewhere_stays_a_cancellation():
    async def main():
        expiry = Expiry()
        task = asyncio.ensure_future(_bounded(expiry, 5.0, 5.0))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())


def test_nested_limits_the_inner_one_expires_inside_the_outer():
    async def main():
        expiry = Expiry()
        with expiry.within(5.0):
            with pytest.raises(TimeoutError):
                with expiry.within(0.02):
                    await asyncio.sleep(5.0)
            await asyncio.sleep(0.01)  # the outer block goes on
        return "outer done"

    assert asyncio.run(main()) == "outer done"


def test_an_outer_limit_expiring_is_the_outer_blocks_timeout():
    async def main():
        expiry = Expiry()
        with pytest.raises(TimeoutError):
            with expiry.within(0.02):
                with expiry.within(5.0):
                    await asyncio.sleep(5.0)

    asyncio.run(main())


def test_an_expiry_moves_to_a_new_event_loop():
    expiry = Expiry()
    assert asyncio.run(_bounded(expiry, 30.0, 0.001)) == "done"  # leaves a timer on a loop now closed

    async def second():
        with pytest.raises(TimeoutError):
            await _bounded(expiry, 0.02, 5.0)

    asyncio.run(second())


def test_outside_a_task_it_says_so():
    expiry = Expiry()
    with pytest.raises(RuntimeError):
        with expiry.within(1.0):
            pass
