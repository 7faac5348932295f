"""The gateway's result cache (Redis, Redis Cluster, or an in-process LRU), behind
``gateway.cache_api.ResultCache``.

One concern per module: ``settings`` (the ``cache:`` config section), ``keys`` (SHA-256 over a
canonical length-prefixed encoding), ``envelope`` (the stored value's binary header),
``freshness`` (TTL and XFetch early refresh), ``breaker`` (circuit breaker on an injected clock),
``singleflight`` (one compute per concurrent identical miss), ``writer`` (bounded background
writes), ``backend`` / ``redis_backend`` / ``lru`` (where entries live), and ``cache`` (the
``GatewayCache`` that composes them; its docstring is the contract).
"""

from gateway.cache.backend import BackendError, CacheBackend
from gateway.cache.breaker import BreakerState, CircuitBreaker
from gateway.cache.cache import CACHE_HIT, GatewayCache
from gateway.cache.envelope import CorruptEntry, Entry, Provenance
from gateway.cache.freshness import Freshness
from gateway.cache.keys import EXCLUDED_PARAMETERS, cache_key
from gateway.cache.lru import LruBackend
from gateway.cache.redis_backend import RedisBackend, make_redis_client
from gateway.cache.settings import BreakerSettings, CacheSettings, LruSettings, ModelCacheSettings, RedisSettings
from gateway.cache.singleflight import SingleFlight
from gateway.cache.writer import BackgroundWriter

__all__ = [
    "BackendError",
    "BackgroundWriter",
    "BreakerSettings",
    "BreakerState",
    "CACHE_HIT",
    "CacheBackend",
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
    "Provenance",
    "RedisBackend",
    "RedisSettings",
    "SingleFlight",
    "build_cache",
    "cache_key",
    "make_redis_client",
]


def build_cache(config, metrics) -> GatewayCache:
    """The cache for a ``GatewayConfig``: a ``GatewayCache`` (a pass-through while
    ``cache.enabled`` is false, so a reload can turn it on)."""
    return GatewayCache(config.cache, metrics.cache)
