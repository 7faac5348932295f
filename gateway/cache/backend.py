"""What a cache backend is, and its one error type.

Contract (``CacheBackend``): ``get(key)`` returns the stored bytes or None; ``set(key, value,
ttl_s)`` stores them for ``ttl_s`` seconds; ``ping()`` checks the backend answers. A remote
backend bounds every command in time and raises only ``BackendError`` (the cache fails open on
it); cancelling a command never leaves a connection with an unread reply behind. ``remote`` tells
the cache whether a circuit breaker guards it. ``describe()`` names it for logs without secrets.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["BackendError", "CacheBackend"]


class BackendError(Exception):
    """A backend command failed. ``kind`` is ``timeout``, ``connection``, ``busy`` (no free
    connection: local congestion, not a sick backend) or ``error``."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind

    @property
    def counts_against_backend(self) -> bool:
        """Whether the circuit breaker should count this failure."""
        return self.kind != "busy"


class CacheBackend(Protocol):
    name: str
    """``redis``, ``redis-cluster`` or ``lru`` (a metrics label)."""
    remote: bool

    async def start(self) -> None: ...

    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, ttl_s: float) -> None: ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...

    def describe(self) -> str: ...
