"""The gateway's result cache (Redis, Redis Cluster, or an in-process LRU).

One concern per module: ``api`` (what the dataplane sees: ``ResultCache``, ``CacheRequest``,
``Served``), ``settings`` (the ``cache:`` config section), ``keys`` (SHA-256 over a canonical
length-prefixed encoding), ``envelope`` (the stored value's binary header), ``freshness`` (TTL
and XFetch early refresh), ``breaker`` (circuit breaker on an injected clock), ``writer`` (bounded
background writes), ``backend`` / ``redis_backend`` / ``lru`` (where entries live), and ``cache``
(the ``GatewayCache`` that composes them, with ``gateway.singleflight`` for concurrent identical
misses; its docstring is the contract).
"""

from gateway.cache.api import CACHE_SOURCE, NO_CACHE_PARAMETER, QUALITY_PARAMETER, CacheRequest, ResultCache, Served
from gateway.cache.backend import BackendError, CacheBackend
from gateway.cache.breaker import BreakerState, CircuitBreaker
from gateway.cache.cache import CACHE_HIT, COALESCED, GatewayCache
from gateway.cache.envelope import CorruptEntry, Entry, Provenance
from gateway.cache.freshness import Freshness
from gateway.cache.keys import EXCLUDED_PARAMETERS, cache_key
from gateway.cache.lru import LruBackend
from gateway.cache.redis_backend import RedisBackend, make_redis_client
from gateway.cache.settings import BreakerSettings, CacheSettings, LruSettings, ModelCacheSettings, RedisSettings
from gateway.cache.writer import BackgroundWriter

__all__ = [
    "BackendError",
    "BackgroundWriter",
    "BreakerSettings",
    "BreakerState",
    "CACHE_HIT",
    "CACHE_SOURCE",
    "COALESCED",
    "CacheBackend",
    "CacheRequest",
    "CacheSettings",
    "CircuitBreaker",
    "CorruptEntry",
    "EXCLUDED_PARAMETERS",
    "Entry",
    "Freshness",
    "GatewayCache",
    "LruBackend",
    "LruSettings",
    "ModelCacheSettings",
    "NO_CACHE_PARAMETER",
    "Provenance",
    "QUALITY_PARAMETER",
    "RedisBackend",
    "RedisSettings",
    "ResultCache",
    "Served",
    "build_cache",
    "cache_key",
    "make_redis_client",
]


def build_cache(settings: CacheSettings, metrics) -> GatewayCache:
    """The cache for a gateway's ``cache`` settings: a ``GatewayCache`` (a pass-through while
    ``enabled`` is false, so a reload can turn it on); ``metrics`` is its ``CacheMetrics``."""
    return GatewayCache(settings, metrics)
