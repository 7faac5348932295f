"""What a cache backend is, and its one error type.

Contract (``CacheBackend``): ``get(key)`` returns the stored bytes or None; ``set(key, value,
ttl_s)`` stores them for ``ttl_s`` seconds; ``ping()`` checks the backend answers. A remote
backend bounds every command in time and raises only ``BackendError`` (the cache fails open on
it); cancelling a command never leaves a connection with an unread reply behind. ``remote`` tells
the cache whether a circuit breaker guards it. ``describe()`` names it for logs without secrets.

Contract (``LeaseBackend``, a shared backend that other gateways see too, i.e. Redis): leases let
gateway replicas compute a missing entry once between them. ``acquire_lease(lease, token, ttl_s)``
takes the lease if nobody holds it (true) and never waits; ``renew_lease`` extends it only while
``token`` still holds it; ``release_lease`` drops it only while ``token`` holds it;
``peek(key, lease)`` is the entry's bytes (or None) and whether the lease is held, in one round
trip; ``store_and_release(key, value, ttl_s, lease, token)`` writes the entry and drops the lease
(if ``token`` holds it) atomically, so a waiter never sees neither. ``key`` and ``lease`` share a
Redis Cluster hash slot (``keys.entry_key``/``keys.lease_key``).
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["BackendError", "CacheBackend", "LeaseBackend"]


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

    async def ping(self, node: str = "") -> None:
        """Check the backend (with ``node``: that node of a cluster) answers."""
        ...

    def node_of(self, key: str) -> str:
        """The node that holds ``key`` (a Redis Cluster master's name; ``""`` for a single
        server, or while the cluster's layout is not known): what a circuit breaker guards."""
        ...

    async def close(self) -> None: ...

    def describe(self) -> str: ...


class LeaseBackend(CacheBackend, Protocol):
    async def acquire_lease(self, lease: str, token: str, ttl_s: float) -> bool: ...

    async def renew_lease(self, lease: str, token: str, ttl_s: float) -> bool: ...

    async def release_lease(self, lease: str, token: str) -> None: ...

    async def peek(self, key: str, lease: str) -> tuple[bytes | None, bool]: ...

    async def store_and_release(self, key: str, value: bytes, ttl_s: float, lease: str, token: str) -> None: ...
