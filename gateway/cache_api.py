"""The seam between the gateway core and its result cache.

Contract: ``ResultCache.serve(request, compute)`` returns a ``Served`` either from the cache
(``served_by="cache"``) or by awaiting ``compute()`` exactly once for this caller (concurrent
identical misses may share one compute). The cache must fail open: any cache failure degrades to
``compute()``, never to an error. ``compute`` returns the routed answer *before* the gateway adds
its where-served parameters, which is what gets stored. ``build_cache(config, metrics)`` picks the
implementation from the config.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from protos import inference_pb2 as pb

QUALITY_PARAMETER = "quality"
"""Request parameter: ``"cloud"`` asks for a cloud (full-precision) answer; edge entries do not satisfy it."""
NO_CACHE_PARAMETER = "no_cache"
"""Request parameter: ``true`` bypasses the cache for this request (no read, no write)."""
CACHE_SOURCE = "cache_source"
"""Response parameter on a hit: who produced the cached answer (edge or cloud)."""


@dataclass(frozen=True)
class CacheRequest:
    msg: pb.ModelInferRequest
    tenant: str
    model_version: str
    """The model version that would answer now (resolved from metadata), part of the key."""
    require_cloud: bool
    bypass: bool


@dataclass
class Served:
    response: pb.ModelInferResponse
    served_by: str
    """edge | cloud | cache"""
    reason: str


class ResultCache(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def reconfigure(self, settings) -> None:
        """Apply new cache settings (a config reload); entries already stored stay valid."""
        ...

    async def serve(self, request: CacheRequest, compute: Callable[[], Awaitable[Served]]) -> Served: ...


class NullCache:
    """No caching: every request is computed."""

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def reconfigure(self, settings) -> None:
        pass

    async def serve(self, request: CacheRequest, compute: Callable[[], Awaitable[Served]]) -> Served:
        return await compute()


def build_cache(config, metrics) -> ResultCache:
    """The cache the config asks for (``gateway.cache``; a pass-through while ``cache.enabled`` is false)."""
    from gateway.cache import build_cache as build  # gateway.cache imports this module

    return build(config, metrics)
