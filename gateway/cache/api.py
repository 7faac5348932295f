"""The seam between the gateway's dataplane and its result cache.

Contract: ``ResultCache.serve(request, compute)`` returns a ``Served`` either from the cache
(``served_by="cache"``) or by awaiting ``compute()`` exactly once for this caller (concurrent
identical misses may share one compute: those that joined say ``route_reason="coalesced"``). The
cache must fail open: any cache failure degrades to ``compute()``, never to an error. ``compute``
returns the routed answer *before* the gateway adds its where-served parameters, which is what
gets stored.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from edgecloud.types import InferRequest, InferResponse, RequestedOutput

__all__ = ["CACHE_SOURCE", "CacheRequest", "NO_CACHE_PARAMETER", "QUALITY_PARAMETER", "ResultCache", "Served"]

QUALITY_PARAMETER = "quality"
"""Request parameter: ``"cloud"`` asks for a cloud (full-precision) answer; edge entries do not
satisfy it. ``"auto"`` (the default) lets routing choose."""
NO_CACHE_PARAMETER = "no_cache"
"""Request parameter: ``true`` bypasses the cache for this request (no read, no write)."""
CACHE_SOURCE = "cache_source"
"""Response parameter on a hit: who produced the cached answer (edge or cloud)."""


@dataclass(frozen=True, slots=True)
class CacheRequest:
    request: InferRequest
    """The decoded, validated request (its ``tenant`` is part of the key)."""
    model_version: str
    """The model version that would answer now (resolved from metadata), part of the key."""
    keyed_outputs: tuple[RequestedOutput, ...]
    """The requested outputs as they change the answer: empty when the request names every output
    of the model without parameters (the same answer as naming none)."""
    require_cloud: bool
    bypass: bool


@dataclass(slots=True)
class Served:
    response: InferResponse
    served_by: str
    """edge | cloud | cache"""
    reason: str
    cacheable: bool = True
    """False for an answer that must not be stored (an unsure edge answer the cloud could not check)."""


class ResultCache(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def reconfigure(self, settings) -> None:
        """Apply new cache settings (a config reload); entries already stored stay valid."""
        ...

    async def serve(self, request: CacheRequest, compute: Callable[[], Awaitable[Served]]) -> Served: ...
