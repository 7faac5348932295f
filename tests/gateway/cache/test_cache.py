"""``GatewayCache`` with fake computes over the in-process LRU: hits, quality, bypass, per-model
settings, single-flight, TTL and early refresh on fake clocks, corrupt values, fail-open."""

from __future__ import annotations

import asyncio

import pytest

from edgecloud.clock import FakeClock
from edgecloud.errors import DeadlineExceeded, Unavailable
from gateway.cache import CACHE_HIT, CacheSettings, LruBackend, cache_key
from gateway.cache.keys import entry_key
from gateway.cache.api import CACHE_SOURCE
from tests.gateway.cache.conftest import Computes, cache_request, counter, text_msg


def outputs(served):
    return [tensor.data.tobytes() for tensor in served.response.outputs]


async def test_second_identical_request_is_a_hit_with_its_own_id(start_cache, cache_metrics):
    cache = await start_cache()
    computes = Computes()
    first_msg, second_msg = text_msg(["hello"], request_id="a"), text_msg(["hello"], request_id="b")
    first = await cache.serve(cache_request(first_msg), computes(first_msg))
    await asyncio.sleep(0)  # the background write
    second = await cache.serve(cache_request(second_msg), computes(second_msg))
    assert computes.calls == 1
    assert (first.served_by, second.served_by, second.reason) == ("edge", "cache", CACHE_HIT)
    assert second.response.parameters[CACHE_SOURCE] == "edge"
    assert second.response.id == "b" and outputs(second) == outputs(first)
    assert counter(cache_metrics.lookups, "hit") == 1 and counter(cache_metrics.lookups, "miss") == 1
    assert counter(cache_metrics.backend, "lru") == 1


async def test_lru_hits_decode_a_value_once_and_each_get_a_response_of_their_own(start_cache):
    """Hits on one LRU value share its decoded outputs and wire bytes, never their id or
    parameters; a value stored again (an entry replaced) is decoded afresh."""
    cache = await start_cache()
    edge, cloud = Computes("edge"), Computes("cloud")
    msg = text_msg(["hello"])
    await cache.serve(cache_request(msg), edge(msg))
    await asyncio.sleep(0)  # the background write
    first_msg, second_msg = text_msg(["hello"], request_id="a"), text_msg(["hello"], request_id="b")
    first = await cache.serve(cache_request(first_msg), edge(first_msg))
    first.response.parameters["mine"] = "a"
    second = await cache.serve(cache_request(second_msg), edge(second_msg))
    assert (first.served_by, second.served_by) == ("cache", "cache") and edge.calls == 1
    assert (first.response.id, second.response.id) == ("a", "b") and "mine" not in second.response.parameters
    assert second.response.outputs[0] is first.response.outputs[0]  # decoded once, for both
    assert second.response.wire is first.response.wire
    await cache.serve(cache_request(msg, require_cloud=True), cloud(msg))  # replaces the edge's entry
    await asyncio.sleep(0)
    third = await cache.serve(cache_request(msg), edge(msg))
    assert third.response.parameters[CACHE_SOURCE] == "cloud"
    assert third.response.outputs[0] is not first.response.outputs[0]


async def test_edge_entries_do_not_satisfy_cloud_quality_and_the_cloud_answer_replaces_them(start_cache, cache_metrics):
    cache = await start_cache()
    edge, cloud = Computes("edge"), Computes("cloud")
    msg = text_msg(["hello"])
    await cache.serve(cache_request(msg), edge(msg))
    await asyncio.sleep(0)
    served = await cache.serve(cache_request(msg, require_cloud=True), cloud(msg))
    assert served.served_by == "cloud" and cloud.calls == 1
    assert counter(cache_metrics.lookups, "quality_miss") == 1
    await asyncio.sleep(0)
    for require_cloud in (False, True):  # the cloud entry now serves both
        hit = await cache.serve(cache_request(msg, require_cloud=require_cloud), edge(msg))
        assert hit.served_by == "cache" and hit.response.parameters[CACHE_SOURCE] == "cloud"
    assert edge.calls == 1 and cloud.calls == 1


async def test_no_cache_and_sequence_requests_neither_read_nor_write(start_cache, cache_metrics):
    cache = await start_cache()
    computes = Computes()
    msg = text_msg(["hello"], no_cache=True)
    for _ in range(2):
        await cache.serve(cache_request(msg, bypass=True), computes(msg))
        await asyncio.sleep(0)
    sequence = text_msg(["hello"], sequence_id="3")
    for _ in range(2):
        await cache.serve(cache_request(sequence), computes(sequence))
        await asyncio.sleep(0)
    assert computes.calls == 4 and len(cache.backend) == 0
    assert counter(cache_metrics.lookups, "bypass") == 4


async def test_disabled_cache_and_disabled_model_are_pass_through(start_cache):
    computes = Computes()
    msg = text_msg(["hello"])
    off = await start_cache({"enabled": False})
    assert off.backend is None
    per_model = await start_cache({"models": {"all-MiniLM-L6-v2": {"enabled": False}}})
    for cache in (off, per_model):
        for _ in range(2):
            assert (await cache.serve(cache_request(msg), computes(msg))).served_by == "edge"
            await asyncio.sleep(0)
    assert computes.calls == 4


async def test_per_model_ttl_and_expiry_on_fake_clocks(start_cache):
    clock = FakeClock()
    cache = await start_cache({"ttl_ms": 60_000, "early_refresh_beta": 0,
                               "models": {"short": {"ttl_ms": 1000}}},
                              clock=clock, lru_clock=clock, wall=clock.now)
    computes = Computes()
    long_msg, short_msg = text_msg(["x"]), text_msg(["x"], model="short")
    for msg in (long_msg, short_msg):
        await cache.serve(cache_request(msg), computes(msg))
    await asyncio.sleep(0)
    clock.advance(0.999)
    assert {(await cache.serve(cache_request(m), computes(m))).served_by for m in (long_msg, short_msg)} == {"cache"}
    clock.advance(0.001)
    assert (await cache.serve(cache_request(short_msg), computes(short_msg))).served_by == "edge"
    assert (await cache.serve(cache_request(long_msg), computes(long_msg))).served_by == "cache"
    clock.advance(59.0)
    assert (await cache.serve(cache_request(long_msg), computes(long_msg))).served_by == "edge"
    assert computes.calls == 4


async def test_early_refresh_answers_from_cache_and_refreshes_in_the_background(start_cache, cache_metrics):
    clock = FakeClock()
    draws = iter([0.0] * 100)
    cache = await start_cache({"ttl_ms": 10_000, "early_refresh_beta": 1.0}, clock=clock, lru_clock=clock,
                              wall=clock.now, rand=lambda: next(draws, 0.0))
    computes = Computes(delay_s=0.01, clock=clock, cost_s=0.5)
    msg = text_msg(["x"])
    await cache.serve(cache_request(msg), computes(msg))
    await asyncio.sleep(0)
    clock.advance(5.0)  # U = 1 - 0 = 1 -> ln U = 0: only refreshes at expiry itself
    assert (await cache.serve(cache_request(msg), computes(msg))).served_by == "cache"
    assert computes.calls == 1
    draws = iter([0.9999999] * 100)  # U tiny -> -ln U large: refresh now
    hits = await asyncio.gather(*(cache.serve(cache_request(msg), computes(msg)) for _ in range(20)))
    assert {h.served_by for h in hits} == {"cache"}  # nobody waited for the refresh
    await asyncio.sleep(0.05)
    assert computes.calls == 2 and counter(cache_metrics.early_refreshes) == 1  # one refresh, not 20


async def test_a_cloud_entry_is_not_refreshed_early_by_a_default_request(start_cache):
    clock = FakeClock()
    cache = await start_cache({"early_refresh_beta": 1.0}, clock=clock, lru_clock=clock, wall=clock.now,
                              rand=lambda: 0.9999999)
    edge, cloud = Computes("edge", clock=clock, cost_s=0.5), Computes("cloud", clock=clock, cost_s=0.5)
    msg = text_msg(["x"])
    await cache.serve(cache_request(msg, require_cloud=True), cloud(msg))
    await asyncio.sleep(0)
    await cache.serve(cache_request(msg), edge(msg))
    await asyncio.sleep(0.01)
    assert edge.calls == 0  # an edge refresh would have downgraded the entry


async def test_200_concurrent_identical_misses_compute_once(start_cache, cache_metrics):
    cache = await start_cache()
    computes = Computes(delay_s=0.05)
    msgs = [text_msg(["same"], request_id=str(i)) for i in range(200)]
    served = await asyncio.gather(*(cache.serve(cache_request(m), computes(m)) for m in msgs))
    assert computes.calls == 1
    assert [s.response.id for s in served] == [str(i) for i in range(200)]
    assert len({s.response.outputs[0].data.tobytes() for s in served}) == 1
    assert counter(cache_metrics.flights, "leader") == 1 and counter(cache_metrics.flights, "follower") == 199


async def test_cancelling_the_leader_does_not_fail_its_followers(start_cache):
    cache = await start_cache()
    computes = Computes(delay_s=0.05)
    msg = text_msg(["same"])
    leader = asyncio.create_task(cache.serve(cache_request(msg), computes(msg)))
    await computes.started.wait()
    followers = [asyncio.create_task(cache.serve(cache_request(msg), computes(msg))) for _ in range(5)]
    await asyncio.sleep(0.01)
    leader.cancel()
    results = await asyncio.gather(*followers)
    assert leader.cancelled() and computes.calls == 1 and {r.served_by for r in results} == {"edge"}
    await asyncio.sleep(0)
    assert (await cache.serve(cache_request(msg), computes(msg))).served_by == "cache"  # the answer was stored


async def test_followers_share_the_leaders_error_and_nothing_hangs(start_cache):
    cache = await start_cache()
    computes = Computes(delay_s=0.02, error=Unavailable("no backend"))
    msg = text_msg(["same"])
    results = await asyncio.wait_for(
        asyncio.gather(*(cache.serve(cache_request(msg), computes(msg)) for _ in range(10)), return_exceptions=True),
        timeout=5)
    assert computes.calls == 1 and all(isinstance(r, Unavailable) for r in results)
    computes.error = None  # the failure was not cached: the next request computes again
    assert (await cache.serve(cache_request(msg), computes(msg))).served_by == "edge" and computes.calls == 2


async def test_a_leaders_deadline_is_not_its_followers(start_cache):
    cache = await start_cache()
    msg = text_msg(["same"])
    short = Computes(delay_s=0.02, error=DeadlineExceeded("the request's deadline passed"))
    patient = Computes(delay_s=0.02)
    leader = asyncio.create_task(cache.serve(cache_request(msg), short(msg)))
    await short.started.wait()
    followers = await asyncio.gather(*(cache.serve(cache_request(msg), patient(msg)) for _ in range(5)))
    with pytest.raises(DeadlineExceeded):
        await leader
    assert {f.served_by for f in followers} == {"edge"} and patient.calls == 1  # one retry flight, shared


async def test_corrupt_and_foreign_values_are_misses_and_get_overwritten(start_cache, cache_metrics):
    cache = await start_cache()
    computes = Computes()
    msg = text_msg(["x"])
    key = entry_key(cache.settings.key_prefix, cache_key(cache_request(msg)))
    await cache.backend.set(key, b"\x80\x04garbage that is not an entry", 60)
    assert (await cache.serve(cache_request(msg), computes(msg))).served_by == "edge"
    assert counter(cache_metrics.lookups, "corrupt") == 1
    await asyncio.sleep(0)
    assert (await cache.serve(cache_request(msg), computes(msg))).served_by == "cache"


async def test_a_key_that_cannot_be_built_fails_open(start_cache, cache_metrics, monkeypatch, caplog):
    cache = await start_cache()
    monkeypatch.setattr("gateway.cache.cache.cache_key", lambda *a: 1 / 0)
    computes = Computes()
    msg = text_msg(["x"])
    assert (await cache.serve(cache_request(msg), computes(msg))).served_by == "edge"
    assert counter(cache_metrics.errors, "key", "error") == 1 and "could not build a key" in caplog.text


async def test_only_computed_answers_that_fit_are_stored(start_cache, cache_metrics):
    cache = await start_cache({"max_entry_bytes": 1024})
    computes = Computes()
    msg = text_msg(["x"])
    await cache.serve(cache_request(msg), computes(msg))  # 1.5 KiB embedding: too big
    assert counter(cache_metrics.writes, "too_big") == 1 and len(cache.backend) == 0


async def test_writes_beyond_max_pending_are_dropped_not_awaited(start_cache, cache_metrics):
    cache = await start_cache({"max_pending_writes": 1})
    release = asyncio.Event()

    async def slow_set(key, value, ttl_s):
        await release.wait()

    cache.backend.set = slow_set
    computes = Computes()
    for text in ("a", "b", "c"):
        msg = text_msg([text])
        await asyncio.wait_for(cache.serve(cache_request(msg), computes(msg)), 1)
    assert counter(cache_metrics.writes, "dropped_busy") == 2
    release.set()


async def test_reconfigure_turns_the_cache_on_and_changes_policy(start_cache):
    cache = await start_cache({"enabled": False})
    computes = Computes()
    msg = text_msg(["x"])
    await cache.reconfigure(CacheSettings(enabled=True, lru={"max_entries": 5}))
    assert isinstance(cache.backend, LruBackend) and cache.backend.max_entries == 5
    await cache.serve(cache_request(msg), computes(msg))
    await asyncio.sleep(0)
    await cache.reconfigure(CacheSettings(enabled=True, lru={"max_entries": 5},
                                          models={"all-MiniLM-L6-v2": {"enabled": False}}))
    assert (await cache.serve(cache_request(msg), computes(msg))).served_by == "edge"
    assert computes.calls == 2
