"""The ``cache:`` section of the gateway config, validated at load.

Durations are milliseconds (``_ms``), sizes bytes, like the rest of the gateway config. The
backend is chosen from these settings: ``redis.url`` (standalone Redis), ``redis.cluster_nodes``
(Redis Cluster) or neither (the bounded in-process LRU).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator

from edgecloud.config import Section

__all__ = [
    "BreakerSettings",
    "CacheSettings",
    "LeaseSettings",
    "LruSettings",
    "ModelCacheSettings",
    "RedisSettings",
]


def _host_port(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{value!r} is not host:port")
    return value


class RedisSettings(Section):
    """Where the shared Redis is and how long the gateway waits for it (fail-open)."""

    url: str | None = None
    """``redis://[user[:password]@]host:port[/db]`` (``rediss://`` for TLS) of a standalone Redis;
    null (and no ``cluster_nodes``) for the in-process LRU. Prefer ``password`` over a password in the URL."""
    cluster_nodes: list[str] = Field(default_factory=list)
    """``host:port`` startup nodes of a Redis Cluster (the rest are discovered); excludes ``url``."""
    username: str | None = None
    """ACL user name (Redis 6+); overrides one in the URL."""
    password: SecretStr | None = None
    """AUTH password (env ``EDGECLOUD_GATEWAY_CACHE__REDIS__PASSWORD``); overrides one in the URL; never logged."""
    tls: bool = False
    """Speak TLS to Redis; implied by a ``rediss://`` URL."""
    tls_ca_path: str | None = None
    """CA bundle (PEM) that signs the server's certificate; default: the system's trust store."""
    tls_cert_path: str | None = None
    """Client certificate (PEM) for mutual TLS."""
    tls_key_path: str | None = None
    """Private key (PEM) of ``tls_cert_path``."""
    tls_check_hostname: bool = True
    """Check the server certificate's host name against the address dialled."""
    connect_timeout_ms: float = Field(50, gt=0, le=10_000)
    """Give up opening a connection to Redis after this long (a dead host costs at most this)."""
    socket_timeout_ms: float = Field(30, gt=0, le=10_000)
    """Give up waiting for one reply after this long (a frozen Redis costs at most this). Every
    command is also bounded as a whole by ``connect_timeout_ms + socket_timeout_ms``."""
    max_connections: int = Field(64, ge=1, le=10_000)
    """Connections per Redis node; a command that finds them all busy is a miss at once (never queued)."""
    reconnect_interval_ms: float = Field(2000, gt=0, le=3_600_000)
    """When Redis was unreachable at start, how often it is tried again; the LRU serves meanwhile."""

    @field_validator("url")
    @classmethod
    def _url_scheme(cls, value: str | None) -> str | None:
        if value is not None:
            parts = urlsplit(value)
            if parts.scheme not in ("redis", "rediss", "unix"):
                raise ValueError("must start with redis://, rediss:// or unix://")
        return value

    @field_validator("cluster_nodes")
    @classmethod
    def _nodes(cls, value: list[str]) -> list[str]:
        return [_host_port(node) for node in value]

    @model_validator(mode="after")
    def _one_backend(self) -> RedisSettings:
        if self.url is not None and self.cluster_nodes:
            raise ValueError("set either url (standalone Redis) or cluster_nodes (Redis Cluster), not both")
        if (self.tls_cert_path is None) != (self.tls_key_path is None):
            raise ValueError("tls_cert_path and tls_key_path go together")
        return self

    @property
    def configured(self) -> bool:
        return self.url is not None or bool(self.cluster_nodes)

    @property
    def use_tls(self) -> bool:
        return self.tls or (self.url is not None and self.url.startswith("rediss://"))

    @property
    def operation_timeout_s(self) -> float:
        """The bound on one command, connecting included."""
        return (self.connect_timeout_ms + self.socket_timeout_ms) / 1000.0

    def describe(self) -> str:
        """Where Redis is, for logs: never the password."""
        if self.cluster_nodes:
            return "Redis Cluster at " + ",".join(self.cluster_nodes)
        parts = urlsplit(self.url or "")
        netloc = parts.hostname or ""
        if parts.port:
            netloc += f":{parts.port}"
        return f"Redis at {parts.scheme}://{netloc}{parts.path}"


class LruSettings(Section):
    """The in-process cache used when no Redis is configured or it is unreachable at start."""

    max_entries: int = Field(10_000, ge=1, le=100_000_000)
    """Entries kept; the least recently used go first."""
    max_bytes: int = Field(64 * 1024 * 1024, ge=1024, le=2**40)
    """Bytes of stored values kept (the envelope included); the least recently used go first."""


class NearCacheSettings(Section):
    """A small in-process copy of hot Redis entries, read before Redis: a hit on it costs no round
    trip. Copies are kept briefly, so an entry replaced in Redis by another gateway (a cloud
    answer over an edge one, a refresh) is seen here at most ``ttl_ms`` late; this gateway's own
    writes update its copy at once. Used only in front of Redis (the LRU is in-process already)."""

    enabled: bool = True
    """Keep near copies of entries read from or written to Redis."""
    ttl_ms: float = Field(1000, gt=0, le=60_000)
    """How long a copy answers before Redis is asked again (well under the entries' TTL)."""
    max_entries: int = Field(4096, ge=1, le=10_000_000)
    """Copies kept; the least recently used go first."""
    max_bytes: int = Field(32 * 1024 * 1024, ge=1024, le=2**40)
    """Bytes of copies kept; the least recently used go first."""


class LeaseSettings(Section):
    """Gateway replicas sharing one Redis compute a missing entry once between them: the first to
    miss takes a short lease on the entry and computes; the others wait for its answer, polling
    Redis, and compute themselves if the lease holder dies (its lease expires), gives up without an
    answer, or takes longer than ``max_wait_ms``. Within one gateway, concurrent identical misses
    share one computation anyway (single-flight); the lease only coordinates replicas."""

    enabled: bool = True
    """Use leases in front of Redis (no effect on the in-process LRU)."""
    ttl_ms: float = Field(2000, ge=50, le=600_000)
    """Lease lifetime; the holder renews it every third of this while it computes, so a dead
    holder is noticed (its lease lapses) within this long."""
    max_wait_ms: float = Field(10_000, gt=0, le=600_000)
    """A waiter computes itself after this long (each request's own deadline still applies)."""
    poll_initial_ms: float = Field(2, gt=0, le=10_000)
    """First interval between a waiter's polls of Redis; it doubles up to ``poll_max_ms``."""
    poll_max_ms: float = Field(50, gt=0, le=60_000)
    """Longest interval between a waiter's polls."""


class BreakerSettings(Section):
    """The circuit breaker in front of Redis: stop asking a failing Redis, probe it back."""

    consecutive_failures: int = Field(5, ge=1, le=10_000)
    """Consecutive failed commands (timeouts, connection errors) that open the breaker."""
    open_ms: float = Field(1000, gt=0, le=600_000)
    """How long the breaker stays open before one background probe (PING) is tried."""


class ModelCacheSettings(Section):
    """Per-model overrides, keyed by model name."""

    enabled: bool = True
    """Cache this model's answers (false: every request for it is computed)."""
    ttl_ms: float | None = Field(None, gt=0, le=30 * 24 * 3_600_000)
    """Time to live of this model's entries; default: the cache's ``ttl_ms``."""


class CacheSettings(Section):
    """The gateway's result cache: keys, freshness, backend and fail-open behaviour."""

    enabled: bool = False
    """Cache results (off unless configured, so benchmarks of the routing path measure routing)."""
    ttl_ms: float = Field(300_000, gt=0, le=30 * 24 * 3_600_000)
    """Time to live of an entry. A new model version never reads old entries (the version is in the key)."""
    early_refresh_beta: float = Field(1.0, ge=0, le=100)
    """XFetch's beta: a hit near expiry refreshes the entry in the background with a probability
    that grows as expiry nears, scaled by the answer's compute time; 0 turns early refresh off."""
    key_prefix: str = Field("edgecloud:cache:v2:", max_length=200)
    """Prefix of every Redis key (namespaces gateways that share one Redis)."""
    ignore_parameters: list[str] = Field(default_factory=list)
    """Extra request/tensor parameters that never change the answer (tracing ids, ...), left out of
    the key; transport, cache-control and scheduling parameters are always left out."""
    max_entry_bytes: int = Field(4 * 1024 * 1024, ge=1024, le=512 * 1024 * 1024)
    """Answers bigger than this (serialized) are not stored."""
    max_pending_writes: int = Field(64, ge=1, le=100_000)
    """Background writes in flight at once; a write beyond this is dropped (counted), never waited for."""
    redis: RedisSettings = Field(default_factory=RedisSettings)
    """The shared Redis (standalone or cluster); none configured means the in-process LRU."""
    lru: LruSettings = Field(default_factory=LruSettings)
    """Bounds of the in-process LRU."""
    near: NearCacheSettings = Field(default_factory=NearCacheSettings)
    """The in-process near cache in front of Redis (hot keys answered without a round trip)."""
    breaker: BreakerSettings = Field(default_factory=BreakerSettings)
    """When to stop asking Redis and when to probe it back."""
    lease: LeaseSettings = Field(default_factory=LeaseSettings)
    """Replicas sharing Redis compute a missing entry once (a short lease on the entry)."""
    models: dict[str, ModelCacheSettings] = Field(default_factory=dict)
    """Per-model enable/disable and TTL, keyed by model name."""

    def model_enabled(self, model: str) -> bool:
        override = self.models.get(model)
        return self.enabled and (override is None or override.enabled)

    def ttl_s(self, model: str) -> float:
        override = self.models.get(model)
        ttl = override.ttl_ms if override is not None and override.ttl_ms is not None else self.ttl_ms
        return ttl / 1000.0

    def backend_settings(self) -> tuple:
        """What choosing and connecting the backend depends on (a change means a new backend)."""
        return (self.enabled, self.redis, self.lru, self.near)
