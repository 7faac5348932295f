"""The ``cache:`` section: validated at load with errors that name the field, env overrides,
secrets never printed, and the gateway config carries it."""

from __future__ import annotations

import pytest

from edgecloud.config import ConfigError
from gateway.cache import CacheSettings, RedisSettings
from gateway.config import load_gateway_config


def write(tmp_path, text: str):
    path = tmp_path / "gateway.yaml"
    path.write_text(text)
    return path


def test_defaults_are_off_and_lru():
    settings = load_gateway_config(None, environ={}).cache
    assert not settings.enabled and not settings.redis.configured
    assert settings.redis.socket_timeout_ms == 30 and settings.redis.connect_timeout_ms == 50
    assert settings.redis.operation_timeout_s == pytest.approx(0.08)


@pytest.mark.parametrize(("yaml_text", "field"), [
    ("cache:\n  redis:\n    url: http://redis:6379\n", "cache.redis.url"),
    ("cache:\n  redis:\n    cluster_nodes: [redis-a]\n", "cache.redis.cluster_nodes"),
    ("cache:\n  redis:\n    url: redis://a:1\n    cluster_nodes: ['b:2']\n", "cache.redis"),
    ("cache:\n  redis:\n    tls_cert_path: /c.pem\n", "cache.redis"),
    ("cache:\n  redis:\n    socket_timeout_ms: 0\n", "cache.redis.socket_timeout_ms"),
    ("cache:\n  ttl_ms: -1\n", "cache.ttl_ms"),
    ("cache:\n  models:\n    m:\n      ttl_ms: 0\n", "cache.models.m.ttl_ms"),
    ("cache:\n  breaker:\n    consecutive_failures: 0\n", "cache.breaker.consecutive_failures"),
    ("cache:\n  lru:\n    max_entries: 0\n", "cache.lru.max_entries"),
    ("cache:\n  surprise: 1\n", "cache.surprise"),
])
def test_bad_values_are_refused_naming_the_field(tmp_path, yaml_text, field):
    with pytest.raises(ConfigError) as info:
        load_gateway_config(write(tmp_path, yaml_text), environ={})
    assert field in str(info.value)


def test_env_overrides_and_the_password_stays_secret(tmp_path):
    path = write(tmp_path, "cache:\n  enabled: true\n  redis:\n    url: redis://cache:6379/0\n")
    settings = load_gateway_config(path, environ={"EDGECLOUD_GATEWAY_CACHE__REDIS__PASSWORD": "hunter2",
                                                  "EDGECLOUD_GATEWAY_CACHE__TTL_MS": "1000"}).cache
    assert settings.redis.password.get_secret_value() == "hunter2" and settings.ttl_s("any") == 1.0
    assert "hunter2" not in repr(settings) and "hunter2" not in settings.redis.describe()
    assert RedisSettings(url="rediss://u:pw@h:7/1").describe() == "Redis at rediss://h:7/1"
    assert RedisSettings(url="rediss://h:7").use_tls and RedisSettings(cluster_nodes=["h:7"], tls=True).use_tls


def test_per_model_switches_and_ttls():
    settings = CacheSettings(enabled=True, ttl_ms=5000, models={"a": {"enabled": False}, "b": {"ttl_ms": 100}})
    assert not settings.model_enabled("a") and settings.model_enabled("b") and settings.model_enabled("c")
    assert settings.ttl_s("b") == 0.1 and settings.ttl_s("c") == 5.0
    assert not CacheSettings(enabled=False).model_enabled("c")
