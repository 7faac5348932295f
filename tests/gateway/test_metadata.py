"""Model metadata in the gateway: one fetch however many ask, stale entries refreshed in the
background, unknown models and unreachable backends told apart."""

from __future__ import annotations

import asyncio

import pytest

from edgecloud.errors import InvalidArgument, NotFound, Unavailable
from gateway.metadata import MetadataCache
from tests.gateway.fakes import MODEL, edge, worker
from tests.support.virtual_clock import VirtualClock


async def test_concurrent_first_requests_share_one_fetch_and_later_ones_none():
    clock = VirtualClock()
    e = edge(clock, latency_s=0.05)
    cache = MetadataCache(lambda: [e], clock, ttl_s=10)
    answers = await clock.run(asyncio.gather(*(cache.get("m") for _ in range(20))))
    assert all(a is MODEL for a in answers) and e.calls == 0 and len(e.timeouts) == 1
    assert await clock.run(cache.get("m")) is MODEL and len(e.timeouts) == 1


async def test_a_stale_entry_answers_at_once_while_one_refresh_runs():
    clock = VirtualClock()
    e = edge(clock, latency_s=1.0)
    cache = MetadataCache(lambda: [e], clock, ttl_s=10)
    await clock.run(cache.get("m"))
    await clock.advance(11)
    started = clock.now()
    assert await cache.get("m") is MODEL and await cache.get("m") is MODEL
    assert clock.now() == started  # nobody waited for the refresh
    await clock.advance(1.0)
    assert len(e.timeouts) == 2
    await cache.close()


async def test_a_backend_that_does_not_know_the_model_is_skipped_for_one_that_does():
    clock = VirtualClock()
    unaware = edge(clock, error=NotFound("model_name: unknown model 'm'"))
    aware = worker(clock)
    cache = MetadataCache(lambda: [unaware, aware], clock)
    assert await clock.run(cache.get("m")) is MODEL


async def test_unknown_everywhere_is_not_found_and_unreachable_everywhere_is_unavailable():
    clock = VirtualClock()
    unknown = MetadataCache(lambda: [edge(clock, error=NotFound("model_name: unknown model 'm'"))], clock)
    with pytest.raises(NotFound, match="^model_name: unknown model 'm'$"):
        await clock.run(unknown.get("m"))
    down = MetadataCache(lambda: [worker(clock, error=Unavailable("a backend is unavailable"))], clock)
    with pytest.raises(Unavailable, match="no backend is reachable"):
        await clock.run(down.get("m"))
    with pytest.raises(Unavailable):
        await clock.run(MetadataCache(lambda: [], clock).get("m"))
    bad = MetadataCache(lambda: [edge(clock, error=InvalidArgument("bad version", field="model_version"))], clock)
    with pytest.raises(InvalidArgument):
        await clock.run(bad.get("m", "x"))
    # Failures are not remembered: the next request asks again.
    healed = worker(clock)
    sources = [worker(clock, error=Unavailable("a backend is unavailable"))]
    again = MetadataCache(lambda: sources, clock)
    with pytest.raises(Unavailable):
        await clock.run(again.get("m"))
    sources[:] = [healed]
    assert await clock.run(again.get("m")) is MODEL
