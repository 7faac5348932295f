"""The in-process LRU: bounded by entries and bytes, TTL on a fake clock."""

from __future__ import annotations

from edgecloud.clock import FakeClock
from gateway.cache.lru import LruBackend


async def test_evicts_the_least_recently_used_beyond_max_entries():
    lru = LruBackend(max_entries=2, max_bytes=10_000, clock=FakeClock())
    await lru.set("a", b"1", 60)
    await lru.set("b", b"2", 60)
    assert await lru.get("a") == b"1"  # a is now the most recent
    await lru.set("c", b"3", 60)
    assert await lru.get("b") is None and await lru.get("a") == b"1" and await lru.get("c") == b"3"
    assert len(lru) == 2


async def test_evicts_beyond_max_bytes_and_skips_values_bigger_than_all():
    lru = LruBackend(max_entries=100, max_bytes=10, clock=FakeClock())
    await lru.set("a", b"x" * 4, 60)
    await lru.set("b", b"x" * 4, 60)
    await lru.set("c", b"x" * 4, 60)
    assert await lru.get("a") is None and lru.bytes == 8
    await lru.set("huge", b"x" * 11, 60)
    assert await lru.get("huge") is None and lru.bytes == 8
    await lru.set("b", b"y", 60)  # replacing frees the old value's bytes
    assert lru.bytes == 5


async def test_entries_expire_after_their_ttl_on_the_injected_clock():
    clock = FakeClock()
    lru = LruBackend(max_entries=10, max_bytes=1000, clock=clock)
    await lru.set("k", b"v", ttl_s=5)
    clock.advance(4.999)
    assert await lru.get("k") == b"v"
    clock.advance(0.001)
    assert await lru.get("k") is None and len(lru) == 0 and lru.bytes == 0
