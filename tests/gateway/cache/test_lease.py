"""``Leases``: the cross-replica lease protocol on an in-memory Redis stand-in and virtual time.
The real-Redis wiring is in test_cache_redis.py and tests/gateway/test_replicas.py."""

from __future__ import annotations

import asyncio

import pytest

from gateway.cache.backend import BackendError
from gateway.cache.lease import Leases
from gateway.cache.settings import LeaseSettings
from tests.support.virtual_clock import VirtualClock

KEY, LEASE = "k{ab}", "k{ab}:lease:any"


class LeaseStore:
    """Keys with expiry on the virtual clock, and the ``LeaseBackend`` operations over them."""

    remote = True
    leases = True
    name = "redis"

    def __init__(self, clock: VirtualClock):
        self.clock = clock
        self.data: dict[str, tuple[object, float]] = {}
        self.peeks = 0
        self.renewals = 0
        self.fail: BackendError | None = None

    def _get(self, key):
        item = self.data.get(key)
        if item is None or item[1] <= self.clock.now():
            self.data.pop(key, None)
            return None
        return item[0]

    def _check(self):
        if self.fail is not None:
            raise self.fail

    async def acquire_lease(self, lease, token, ttl_s):
        self._check()
        if self._get(lease) is not None:
            return False
        self.data[lease] = (token, self.clock.now() + ttl_s)
        return True

    async def renew_lease(self, lease, token, ttl_s):
        self._check()
        self.renewals += 1
        if self._get(lease) != token:
            return False
        self.data[lease] = (token, self.clock.now() + ttl_s)
        return True

    async def release_lease(self, lease, token):
        self._check()
        if self._get(lease) == token:
            del self.data[lease]

    async def peek(self, key, lease):
        self._check()
        self.peeks += 1
        return self._get(key), self._get(lease) is not None

    async def store_and_release(self, key, value, ttl_s, lease, token):
        self._check()
        self.data[key] = (value, self.clock.now() + ttl_s)
        await self.release_lease(lease, token)


def leases(clock, errors=None, **settings) -> Leases:
    on_error = (lambda op, exc, started, key: errors.append((op, exc.kind))) if errors is not None else None
    return Leases(LeaseSettings(**settings), clock, clock.sleep, on_error=on_error)


def accept_all(value):
    return value


@pytest.fixture
def clock():
    return VirtualClock()


async def test_a_free_lease_is_taken_and_a_second_claimant_waits_for_the_answer(clock):
    store = LeaseStore(clock)
    first = await leases(clock).claim(store, KEY, LEASE, accept_all)
    assert first.held and first.answer is None

    async def holder_answers_after(seconds):
        await clock.sleep(seconds)
        await store.store_and_release(KEY, b"answer", 60, LEASE, first.token)

    asyncio.ensure_future(holder_answers_after(0.3))
    started = clock.now()
    second = await clock.run(leases(clock).claim(store, KEY, LEASE, accept_all))
    assert not second.held and second.answer == b"answer"
    waited = clock.now() - started
    assert 0.3 <= waited <= 0.3 + 0.05  # noticed within one poll_max_ms
    assert store.peeks <= 12  # backed off: 2, 4, ... 50 ms apart, not a busy loop
    assert LEASE not in store.data


async def test_a_dead_holder_lapses_and_one_waiter_takes_over(clock):
    store = LeaseStore(clock)
    dead = await leases(clock, ttl_ms=1000).claim(store, KEY, LEASE, accept_all)
    assert dead.held  # ... and never renews, writes or releases
    waiters = [leases(clock, ttl_ms=1000).claim(store, KEY, LEASE, accept_all) for _ in range(5)]
    started = clock.now()
    first = await clock.run(asyncio.gather(*waiters[:1]))
    assert first[0].held and 1.0 <= clock.now() - started <= 1.06
    # the others, arriving now, find the new holder's lease and wait on it
    rest = [asyncio.ensure_future(w) for w in waiters[1:]]
    await clock.advance(0.2)
    await store.store_and_release(KEY, b"from the successor", 60, LEASE, first[0].token)
    await clock.advance(0.1)
    assert all(t.done() and t.result().answer == b"from the successor" for t in rest)


async def test_renewing_keeps_a_slow_holder_in_charge_and_stops_when_done(clock):
    store = LeaseStore(clock)
    holder = await leases(clock, ttl_ms=300).claim(store, KEY, LEASE, accept_all)

    async def slow_compute():
        async with holder.renewing():
            await clock.sleep(2.0)  # far longer than the lease

    waiter = asyncio.ensure_future(leases(clock, ttl_ms=300, max_wait_ms=60_000).claim(store, KEY, LEASE, accept_all))
    await clock.run(slow_compute())
    assert not waiter.done()  # the lease never lapsed while the holder computed
    await clock.advance(0.31)  # no longer renewed: it lapses and the waiter takes it
    assert waiter.done() and waiter.result().held
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "cache-lease-renew"]


async def test_a_waiter_gives_up_after_max_wait_and_computes(clock):
    store = LeaseStore(clock)
    holder = await leases(clock, ttl_ms=200).claim(store, KEY, LEASE, accept_all)

    async def holder_computes_forever():
        async with holder.renewing():
            await clock.sleep(3600)

    forever = asyncio.ensure_future(holder_computes_forever())
    started = clock.now()
    claim = await clock.run(leases(clock, max_wait_ms=500).claim(store, KEY, LEASE, accept_all))
    assert not claim.held and claim.answer is None and claim.why == "timeout"
    assert 0.5 <= clock.now() - started <= 0.5 + 1e-9
    forever.cancel()
    await asyncio.gather(forever, return_exceptions=True)


async def test_an_unacceptable_entry_is_waited_past_until_the_lease_is_gone(clock):
    """A cloud-quality waiter finds an edge answer: it keeps waiting on the cloud lease."""
    store = LeaseStore(clock)
    store.data[KEY] = (b"edge answer", 1e9)
    holder = await leases(clock).claim(store, KEY, LEASE, accept_all)
    waiter = asyncio.ensure_future(leases(clock).claim(store, KEY, LEASE, lambda v: v if v == b"cloud" else None))
    await clock.advance(0.5)
    assert not waiter.done()
    await store.store_and_release(KEY, b"cloud", 60, LEASE, holder.token)
    await clock.advance(0.06)
    assert waiter.result().answer == b"cloud"


async def test_a_released_lease_without_an_answer_is_taken_by_a_waiter(clock):
    store = LeaseStore(clock)
    holder = await leases(clock).claim(store, KEY, LEASE, accept_all)
    waiter = asyncio.ensure_future(leases(clock).claim(store, KEY, LEASE, accept_all))
    await clock.advance(0.1)
    await leases(clock).release(store, LEASE, holder.token)  # e.g. the answer was not cacheable
    await clock.advance(0.06)
    assert waiter.result().held


@pytest.mark.parametrize("when", ["acquire", "peek"])
async def test_redis_failing_means_computing_and_is_reported(clock, when):
    store = LeaseStore(clock)
    errors: list = []
    if when == "peek":
        await leases(clock).claim(store, KEY, LEASE, accept_all)
        waiter = asyncio.ensure_future(leases(clock, errors).claim(store, KEY, LEASE, accept_all))
        await clock.advance(0.01)
        store.fail = BackendError("connection", "gone")
        await clock.advance(0.1)
        claim = waiter.result()
    else:
        store.fail = BackendError("timeout", "slow")
        claim = await leases(clock, errors).claim(store, KEY, LEASE, accept_all)
    assert not claim.held and claim.answer is None and claim.why == "error"
    assert errors == [("lease", "connection" if when == "peek" else "timeout")]


async def test_a_lost_lease_stops_renewing(clock):
    store = LeaseStore(clock)
    holder = await leases(clock, ttl_ms=300).claim(store, KEY, LEASE, accept_all)
    async with holder.renewing():
        await clock.advance(0.11)
        assert store.renewals == 1 and store.data[LEASE][0] == holder.token
        del store.data[LEASE]  # e.g. Redis restarted
        await clock.advance(1.0)
        assert store.renewals == 2  # the failed renewal was the last
        assert not [t for t in asyncio.all_tasks() if t.get_name() == "cache-lease-renew"]
    assert LEASE not in store.data  # it did not take back a lease someone else may hold now


async def test_no_free_connection_is_retried_not_given_up(clock):
    """``busy`` is this gateway's own pool being full under a burst, not a sick Redis."""
    store = LeaseStore(clock)
    store.fail = BackendError("busy", "no free connection")

    async def connection_frees_up():
        await clock.sleep(0.01)
        store.fail = None

    asyncio.ensure_future(connection_frees_up())
    claim = await clock.run(leases(clock).claim(store, KEY, LEASE, accept_all))
    assert claim.held
