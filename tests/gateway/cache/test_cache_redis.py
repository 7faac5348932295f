"""``GatewayCache`` over a real ``redis-server``: fail-open when Redis dies, freezes or returns
garbage; the breaker stops asking and probes it back; LRU fallback at start and the move to
Redis once it answers; a request cancelled mid-GET leaves the pool correct."""

from __future__ import annotations

import asyncio
import logging
import time

from edgecloud_tools.fault_proxy import FaultProxy
from gateway.cache import BreakerState, LruBackend, RedisBackend, cache_key
from gateway.cache.keys import entry_key
from tests.gateway.cache.conftest import Computes, cache_request, counter, text_msg
from tests.support.waiting import wait_until

FAST_BREAKER = {"consecutive_failures": 3, "open_ms": 100}


async def serve(cache, computes, text, **kwargs):
    msg = text_msg([text], **kwargs)
    return await cache.serve(cache_request(msg), computes(msg))


async def serve_until(cache, computes, predicate, timeout=5.0):
    """Keep serving requests (they trigger the breaker's probes) until ``predicate()``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await serve(cache, computes, "probe")
        await asyncio.sleep(0.02)


async def test_hits_from_redis_and_real_ttl_expiry(redis_server, start_cache):
    server = redis_server()
    cache = await start_cache({"redis": {"url": server.url}, "ttl_ms": 3000, "early_refresh_beta": 0})
    assert isinstance(cache.backend, RedisBackend)
    computes = Computes()
    first = await serve(cache, computes, "x")
    await wait_until(lambda: counter(cache._metrics.writes, "stored") == 1)
    hit = await serve(cache, computes, "x")
    assert hit.served_by == "cache" and hit.response.outputs[0].data.tobytes() == first.response.outputs[0].data.tobytes()
    await asyncio.sleep(3.05)
    assert (await serve(cache, computes, "x")).served_by == "edge" and computes.calls == 2


async def test_garbage_under_a_key_is_a_miss_and_a_metric(redis_server, start_cache, cache_metrics):
    server = redis_server()
    cache = await start_cache({"redis": {"url": server.url}})
    msg = text_msg(["x"])
    key = entry_key(cache.settings.key_prefix, cache_key(cache_request(msg)))
    await cache.backend.client.set(key, b"\x00\x01 not an entry")
    computes = Computes()
    assert (await cache.serve(cache_request(msg), computes(msg))).served_by == "edge"
    assert counter(cache_metrics.lookups, "corrupt") == 1 and counter(cache_metrics.errors, "get", "corrupt") == 1
    assert cache.breaker.state is BreakerState.CLOSED  # garbage is not a sick Redis


async def test_killed_redis_fails_open_fast_and_the_breaker_probes_it_back(redis_server, start_cache, cache_metrics,
                                                                           caplog):
    server = redis_server()
    cache = await start_cache({"redis": {"url": server.url}, "breaker": FAST_BREAKER})
    computes = Computes()
    await serve(cache, computes, "warm")
    await wait_until(lambda: counter(cache_metrics.writes, "stored") == 1)  # the write is in the background
    server.kill()
    caplog.set_level(logging.WARNING, "gateway.cache")
    for i in range(10):
        start = time.monotonic()
        assert (await serve(cache, computes, f"dead {i}")).served_by == "edge"
        assert time.monotonic() - start < 3.0  # refused at once, no retries with backoff (many seconds)
    assert cache.breaker.state is not BreakerState.CLOSED
    assert counter(cache_metrics.lookups, "breaker_open") >= 5  # it stopped asking
    assert counter(cache_metrics.breaker_state, "open") + counter(cache_metrics.breaker_state, "half_open") == 1
    server.start()  # same port
    await serve_until(cache, computes, lambda: cache.breaker.state is BreakerState.CLOSED)
    await serve(cache, computes, "back")
    await wait_until(lambda: counter(cache_metrics.writes, "stored") >= 2)
    assert (await serve(cache, computes, "back")).served_by == "cache"
    lines = [r.getMessage() for r in caplog.records if "breaker" in r.getMessage()]
    assert any("closed -> open" in line for line in lines) and any("-> closed" in line for line in lines)


async def test_frozen_redis_costs_at_most_the_time_bound_then_nothing(redis_server, start_cache):
    server = redis_server()
    cache = await start_cache({"redis": {"url": server.url, "connect_timeout_ms": 200, "socket_timeout_ms": 200},
                               "breaker": FAST_BREAKER})
    computes = Computes()
    await serve(cache, computes, "warm")
    await wait_until(lambda: counter(cache._metrics.writes, "stored") == 1)  # the write is in the background
    server.pause()
    try:
        latencies = []
        for i in range(8):
            start = time.monotonic()
            assert (await serve(cache, computes, f"frozen {i}")).served_by == "edge"
            latencies.append(time.monotonic() - start)
            if i == 3:
                asked = counter(cache._metrics.lookups, "error")
                skipped = counter(cache._metrics.lookups, "breaker_open")
        bound = cache.settings.redis.operation_timeout_s
        assert max(latencies) < bound + 3.0  # slack for a busy machine; a frozen GET alone would hang
        # Breaker open: the last four never asked Redis (counted, so a busy machine cannot fool it).
        assert counter(cache._metrics.lookups, "error") == asked
        assert counter(cache._metrics.lookups, "breaker_open") == skipped + 4
    finally:
        server.resume()
    await serve_until(cache, computes, lambda: cache.breaker.state is BreakerState.CLOSED)
    hits = [(await serve(cache, computes, "warm")).served_by for _ in range(5)]  # 200 ms bounds: a busy
    assert "cache" in hits, hits  # machine may time one GET out; the entry written before the freeze is there


async def test_unreachable_at_start_uses_the_lru_then_moves_to_redis(redis_server, start_cache, caplog):
    from edgecloud_tools.stack import free_port

    port = free_port()
    caplog.set_level(logging.INFO, "gateway.cache")
    cache = await start_cache({"redis": {"url": f"redis://127.0.0.1:{port}", "reconnect_interval_ms": 50},
                               "lru": {"max_entries": 7}})
    assert isinstance(cache.backend, LruBackend)
    assert f"cache: Redis at redis://127.0.0.1:{port} unreachable at start" in caplog.text
    assert "using the in-process LRU cache (max 7 entries" in caplog.text
    computes = Computes()
    await serve(cache, computes, "x")
    await asyncio.sleep(0)
    assert (await serve(cache, computes, "x")).served_by == "cache"  # the LRU serves meanwhile
    redis_server(port=port)
    await wait_until(lambda: isinstance(cache.backend, RedisBackend))
    assert "reachable now" in caplog.text


async def test_a_request_cancelled_mid_get_leaves_the_pool_correct(redis_server, start_cache):
    server = redis_server()
    proxy = FaultProxy("127.0.0.1", server.port)
    await proxy.start()
    try:
        cache = await start_cache({"redis": {"url": f"redis://127.0.0.1:{proxy.port}", "max_connections": 1,
                                             "socket_timeout_ms": 1000, "connect_timeout_ms": 1000}})
        computes = Computes()
        texts = [f"text {i}" for i in range(5)]
        first = {}
        for n, t in enumerate(texts, 1):  # one connection: let each write finish before the next read
            first[t] = await serve(cache, computes, t)
            await wait_until(lambda: counter(cache._metrics.writes, "stored") == n)
        proxy.set_delay(0.06)
        for t in texts[:3]:
            task = asyncio.create_task(serve(cache, computes, t))
            await asyncio.sleep(0.04)  # mid-GET: sent, reply held by the proxy
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        proxy.set_delay(0.0)
        for t in texts:  # every hit carries its own key's answer
            hit = await serve(cache, computes, t)
            assert hit.served_by == "cache"
            assert hit.response.outputs[0].data.tobytes() == first[t].response.outputs[0].data.tobytes()
    finally:
        await proxy.stop()


async def test_the_near_cache_answers_hot_keys_without_redis_and_sees_other_writers_within_its_ttl(
        redis_server, start_cache, cache_metrics):
    """Hot keys are answered from the in-process copy (Redis frozen: still hits); another
    gateway's newer answer in Redis (a cloud answer replacing an edge one) is seen once the copy's
    ``near.ttl_ms`` has passed, never later; this gateway's own writes update its copy at once."""
    from edgecloud.clock import FakeClock

    server = redis_server()
    near_clock = FakeClock()
    config = {"redis": {"url": server.url}, "early_refresh_beta": 0, "near": {"ttl_ms": 1000}}
    cache = await start_cache(config, lru_clock=near_clock)
    other = await start_cache(config)  # a second gateway on the same Redis
    edge, cloud = Computes("edge"), Computes("cloud")
    await serve(cache, edge, "x")
    await wait_until(lambda: counter(cache_metrics.writes, "stored") == 1)
    server.pause()  # every hit from here on must come from the near copy
    try:
        for _ in range(5):
            hit = await serve(cache, edge, "x")
            assert hit.served_by == "cache" and hit.response.parameters["cache_source"] == "edge"
    finally:
        server.resume()
    assert counter(cache_metrics.near_hits) == 5 and counter(cache_metrics.lookups, "error") == 0
    # The other gateway upgrades the entry to a cloud answer.
    msg = text_msg(["x"])
    upgraded = await other.serve(cache_request(msg, require_cloud=True), cloud(msg))
    assert upgraded.served_by == "cloud"
    await wait_until(lambda: counter(cache_metrics.writes, "stored") == 2)
    assert (await serve(cache, edge, "x")).response.parameters["cache_source"] == "edge"  # within the TTL
    near_clock.advance(1.0)
    assert (await serve(cache, edge, "x")).response.parameters["cache_source"] == "cloud"
    # Its own write is in its copy at once.
    await serve(cache, edge, "y")
    await wait_until(lambda: counter(cache_metrics.writes, "stored") == 3)
    before = counter(cache_metrics.near_hits)
    assert (await serve(cache, edge, "y")).served_by == "cache" and counter(cache_metrics.near_hits) == before + 1
    assert edge.calls == 2 and cloud.calls == 1


async def test_near_hits_decode_a_value_once_and_each_get_a_response_of_their_own(redis_server, start_cache,
                                                                                cache_metrics):
    """Hits on one near copy share its decoded outputs but not their id or parameters: what one
    request's answer is given (its id, served_by) never shows in another's."""
    server = redis_server()
    cache = await start_cache({"redis": {"url": server.url}, "early_refresh_beta": 0})
    computes = Computes()
    await serve(cache, computes, "x")
    await wait_until(lambda: counter(cache_metrics.writes, "stored") == 1)
    first = await serve(cache, computes, "x", request_id="a")
    first.response.parameters["served_by"] = "cache"
    first.response.parameters["mine"] = "a"
    second = await serve(cache, computes, "x", request_id="b")
    assert counter(cache_metrics.near_hits) == 2 and computes.calls == 1
    assert (first.response.id, second.response.id) == ("a", "b")
    assert "mine" not in second.response.parameters and "served_by" not in second.response.parameters
    assert second.response.outputs[0].data.tobytes() == first.response.outputs[0].data.tobytes()
    assert second.response.outputs[0] is first.response.outputs[0]  # decoded once, for both
    assert second.response.wire is first.response.wire  # sent without encoding, as stored


async def test_the_near_cache_can_be_turned_off(redis_server, start_cache, cache_metrics):
    server = redis_server()
    cache = await start_cache({"redis": {"url": server.url}, "near": {"enabled": False}})
    computes = Computes()
    await serve(cache, computes, "x")
    await wait_until(lambda: counter(cache_metrics.writes, "stored") == 1)
    assert (await serve(cache, computes, "x")).served_by == "cache"
    assert counter(cache_metrics.near_hits) == 0


async def test_replicas_share_one_computation_through_a_lease(redis_server, cache_metrics):
    """200 identical concurrent misses over two caches (replicas) sharing Redis: one compute."""
    from gateway.cache import CacheSettings, GatewayCache
    from prometheus_client import CollectorRegistry
    from gateway.metrics import CacheMetrics
    server = redis_server()
    caches = []
    try:
        for _ in range(2):
            settings = CacheSettings.model_validate({"enabled": True, "redis": {
                "url": server.url, "connect_timeout_ms": 2000, "socket_timeout_ms": 2000}})
            caches.append(GatewayCache(settings, CacheMetrics(CollectorRegistry())))
            await caches[-1].start()
        computes = [Computes(delay_s=0.3), Computes(delay_s=0.3)]
        answers = await asyncio.gather(*(serve(caches[i % 2], computes[i % 2], "same text") for i in range(200)))
        assert computes[0].calls + computes[1].calls == 1
        lead = 0 if computes[0].calls else 1
        holder, waiter = caches[lead]._metrics, caches[1 - lead]._metrics
        assert counter(holder.flights, "lease_holder") == 1 and counter(waiter.flights, "lease_waiter") == 1
        first = answers[lead].response.outputs[0].data.tobytes()
        assert all(a.response.outputs[0].data.tobytes() == first for a in answers)
        assert {a.served_by for a in answers[1 - lead::2]} == {"cache"}  # the waiter's: from Redis
        assert not await caches[0].backend.client.keys("*:lease:*")  # released with the write
    finally:
        for cache in caches:
            await cache.stop()


async def test_a_replica_that_dies_holding_the_lease_is_replaced_by_a_waiter(redis_server):
    from gateway.cache import CacheSettings, GatewayCache
    from prometheus_client import CollectorRegistry
    from gateway.metrics import CacheMetrics
    server = redis_server()
    caches = []
    try:
        for _ in range(2):
            settings = CacheSettings.model_validate({"enabled": True, "lease": {"ttl_ms": 500}, "redis": {
                "url": server.url, "connect_timeout_ms": 2000, "socket_timeout_ms": 2000}})
            caches.append(GatewayCache(settings, CacheMetrics(CollectorRegistry())))
            await caches[-1].start()
        doomed, survivor = caches
        hangs, works = Computes(delay_s=3600), Computes(delay_s=0.05)
        stuck = asyncio.ensure_future(serve(doomed, hangs, "same text"))
        await hangs.started.wait()
        waiting = [asyncio.ensure_future(serve(survivor, works, "same text")) for _ in range(20)]
        await asyncio.sleep(0.3)
        assert not any(w.done() for w in waiting) and works.calls == 0  # they wait on the holder
        doomed._leases.release = _never_released  # dies: no release, no renewal
        stuck.cancel()
        await doomed.stop()
        started = time.monotonic()
        answers = await asyncio.gather(*waiting)
        assert works.calls == 1 and len(answers) == 20 and time.monotonic() - started < 3.0
        assert {a.served_by for a in answers} == {"edge"}
    finally:
        for cache in caches:
            await cache.stop()


async def _never_released(*args):
    return None
