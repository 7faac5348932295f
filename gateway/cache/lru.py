"""The in-process LRU backend: bounded by entries and by bytes, with per-entry TTL.

Contract (``LruBackend``): at most ``max_entries`` entries and ``max_bytes`` bytes of values;
inserting beyond either evicts the least recently used (a ``get`` counts as a use); a value
bigger than ``max_bytes`` is not stored. An entry is gone from ``ttl_s`` after it was set, by the
injected monotonic clock. Never raises; never suspends (the methods are async only to share the
backend interface). One gateway process only: nothing is shared across processes.
"""

from __future__ import annotations

from collections import OrderedDict

from edgecloud.clock import Clock, MonotonicClock

__all__ = ["LruBackend"]


class LruBackend:
    name = "lru"
    remote = False

    def __init__(self, max_entries: int, max_bytes: int, clock: Clock | None = None):
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._clock = clock or MonotonicClock()
        self._entries: OrderedDict[str, tuple[bytes, float]] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def bytes(self) -> int:
        return self._bytes

    def describe(self) -> str:
        return f"the in-process LRU cache (max {self.max_entries} entries, {self.max_bytes} bytes)"

    async def start(self) -> None:
        pass

    async def ping(self, node: str = "") -> None:
        pass

    def node_of(self, key: str) -> str:
        return ""

    async def close(self) -> None:
        self._entries.clear()
        self._bytes = 0

    async def get(self, key: str) -> bytes | None:
        return self.get_now(key)

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        self.put(key, value, ttl_s)

    def get_now(self, key: str) -> bytes | None:
        """``get`` for callers that must not suspend (the near cache in front of Redis)."""
        item = self._entries.get(key)
        if item is None:
            return None
        value, expires = item
        if self._clock.now() >= expires:
            self._remove(key)
            return None
        self._entries.move_to_end(key)
        return value

    def put(self, key: str, value: bytes, ttl_s: float) -> None:
        """``set`` for callers that must not suspend."""
        if len(value) > self.max_bytes:
            return
        if key in self._entries:
            self._remove(key)
        self._entries[key] = (value, self._clock.now() + ttl_s)
        self._bytes += len(value)
        while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
            oldest = next(iter(self._entries))
            self._remove(oldest)

    def _remove(self, key: str) -> None:
        value, _ = self._entries.pop(key)
        self._bytes -= len(value)
