"""``InFlightCalls``: what a graceful stop of the gRPC front waits for before grpc closes the
connections (a connection closed while its client still acknowledges an answer loses that answer).
The real server's drain is tested in ``tests/edge_agent/test_server.py``."""

from __future__ import annotations

import asyncio
import time

import pytest

from edgecloud.errors import Unavailable
from edgecloud.grpc_server import InFlightCalls


async def test_a_drain_refuses_new_calls_and_waits_for_those_in_flight_then_for_quiet():
    calls = InFlightCalls()
    calls.enter()
    drain = asyncio.ensure_future(calls.drain(60, quiet_s=0.05))
    await asyncio.sleep(0.01)
    assert not drain.done()
    with pytest.raises(Unavailable, match="shutting down"):
        calls.enter()
    assert calls.count == 1  # a refused call is not counted
    calls.leave()
    answered = time.monotonic()
    left = await drain
    assert time.monotonic() - answered >= 0.05  # the connections stayed open after the answer
    assert 0 < left < 60


async def test_a_drain_with_nothing_in_flight_waits_only_out_what_is_left_of_the_quiet():
    calls = InFlightCalls()
    started = time.monotonic()
    assert await calls.drain(60, quiet_s=5) > 59  # nothing ever answered: no wait
    assert time.monotonic() - started < 5
    calls.reopen()
    calls.enter()
    calls.leave()
    answered = time.monotonic()
    await calls.drain(60, quiet_s=0.05)
    assert time.monotonic() - answered >= 0.05


async def test_a_drain_gives_up_when_its_time_runs_out_and_a_reopened_server_admits_calls():
    calls = InFlightCalls()
    calls.enter()
    assert await calls.drain(0.05, quiet_s=1) == 0.0
    assert calls.count == 1
    calls.leave()
    calls.reopen()
    calls.enter()
    assert calls.count == 1


async def test_the_quiet_never_outlasts_the_grace():
    calls = InFlightCalls()
    calls.enter()
    calls.leave()
    started = time.monotonic()
    assert await calls.drain(0.05, quiet_s=30) == 0.0
    assert time.monotonic() - started < 30
