"""``gateway.cache`` exports what ``__all__`` says, and ``build_cache`` builds it from the config."""

from __future__ import annotations

import inspect

import gateway.cache
from gateway.cache import GatewayCache, build_cache
from gateway.config import GatewayConfig
from gateway.metrics import GatewayMetrics


def test_all_lists_exactly_the_public_names():
    public = {name for name, value in vars(gateway.cache).items()
              if not name.startswith("_") and not inspect.ismodule(value)}
    assert set(gateway.cache.__all__) == public
    assert sorted(gateway.cache.__all__) == gateway.cache.__all__


def test_every_module_declares_its_exports():
    for name in ("api", "backend", "breaker", "cache", "envelope", "freshness", "keys", "lru", "redis_backend",
                 "settings", "writer"):
        module = getattr(gateway.cache, name)
        assert module.__all__ and all(hasattr(module, n) for n in module.__all__), name


def test_build_cache_returns_the_gateway_cache_even_when_disabled():
    cache = build_cache(GatewayConfig().cache, GatewayMetrics().cache)
    assert isinstance(cache, GatewayCache) and not cache.settings.enabled
