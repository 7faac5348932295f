"""The Redis backends: a standalone Redis by URL, or a Redis Cluster by startup nodes.

Contract (``RedisBackend``):
- Fail fast: connect and socket timeouts from the settings (tens of milliseconds), no retries
  (redis-py's default retries with backoff would stall every request for seconds when Redis is
  gone), and every command bounded as a whole by ``connect_timeout + socket_timeout``. When all
  ``max_connections`` are busy a command fails at once as ``busy`` instead of queueing (a miss,
  not a sign of a sick Redis; the non-blocking pool is also ~10% cheaper per command than
  redis-py's blocking one). No ``CLIENT SETINFO`` round trips on connect.
- Every failure is raised as ``BackendError`` (translated once, in ``_command``).
- Cancellation safety: a command cancelled mid-flight (its request cancelled, or the time bound
  hit) disconnects its connection before the connection goes back to the pool (redis-py does this
  for any ``BaseException`` between send and read), so a late reply is never read by the next
  command. ``tests/gateway/cache/test_redis_backend.py`` holds this to account through a delay
  proxy.
- Leases (``backend.LeaseBackend``): ``SET NX PX`` to take one; small Lua scripts (each on keys of
  one hash slot, so they run on Redis Cluster too) to renew, release, peek and store-and-release
  by token.
- AUTH (``username``/``password``) and TLS (``rediss://`` or ``tls``; CA, client cert and key
  paths) for both kinds.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any

from redis import exceptions as redis_errors
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import SSLConnection, parse_url
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from edgecloud.expiry import Expiry
from gateway.cache.backend import BackendError
from gateway.cache.settings import RedisSettings

__all__ = ["RedisBackend", "make_redis_client"]


def _common_kwargs(settings: RedisSettings) -> dict[str, Any]:
    kwargs: dict[str, Any] = dict(
        socket_timeout=settings.socket_timeout_ms / 1000.0,
        socket_connect_timeout=settings.connect_timeout_ms / 1000.0,
        socket_keepalive=True,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=0,
        driver_info=None,
    )
    if settings.username is not None:
        kwargs["username"] = settings.username
    if settings.password is not None:
        kwargs["password"] = settings.password.get_secret_value()
    return kwargs


def _tls_kwargs(settings: RedisSettings) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"ssl_check_hostname": settings.tls_check_hostname}
    if settings.tls_ca_path is not None:
        kwargs["ssl_ca_certs"] = settings.tls_ca_path
    if settings.tls_cert_path is not None:
        kwargs["ssl_certfile"] = settings.tls_cert_path
        kwargs["ssl_keyfile"] = settings.tls_key_path
    return kwargs


def make_redis_client(settings: RedisSettings) -> Redis | RedisCluster:
    """A redis-py asyncio client for the settings (no I/O happens here)."""
    common = _common_kwargs(settings)
    tls = _tls_kwargs(settings) if settings.use_tls else {}
    if settings.cluster_nodes:
        nodes = [ClusterNode(host, int(port)) for host, _, port in (n.rpartition(":") for n in settings.cluster_nodes)]
        return RedisCluster(startup_nodes=nodes, ssl=settings.use_tls, max_connections=settings.max_connections,
                            require_full_coverage=False, **common, **tls)
    assert settings.url is not None
    options: dict[str, Any] = dict(parse_url(settings.url))
    options.update(common)  # explicit settings win over credentials in the URL
    options.update(tls)
    if settings.use_tls:
        options["connection_class"] = SSLConnection
    pool = ConnectionPool(max_connections=settings.max_connections, **options)
    return Redis.from_pool(pool)


def _translate(exc: BaseException) -> BackendError:
    if isinstance(exc, (TimeoutError, redis_errors.TimeoutError)):
        return BackendError("timeout", f"timed out: {exc}" if str(exc) else "timed out")
    if isinstance(exc, redis_errors.MaxConnectionsError):
        return BackendError("busy", "no free connection")
    if isinstance(exc, (redis_errors.ConnectionError, OSError)):
        return BackendError("connection", str(exc) or type(exc).__name__)
    return BackendError("error", f"{type(exc).__name__}: {exc}")


def _command(method):
    """Bound a command in time and translate whatever it raises into ``BackendError``."""

    @functools.wraps(method)
    async def wrapper(self: RedisBackend, *args):
        try:
            with self._expiry.within(self.timeout_s):
                return await method(self, *args)
        except Exception as exc:
            raise _translate(exc) from exc

    return wrapper


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end
return 0
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""
_PEEK = """
return {redis.call('get', KEYS[1]), redis.call('exists', KEYS[2])}
"""
_STORE_AND_RELEASE = """
redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2])
if redis.call('get', KEYS[2]) == ARGV[3] then redis.call('del', KEYS[2]) end
return 1
"""


class RedisBackend:
    remote = True
    leases = True

    def __init__(self, settings: RedisSettings):
        self.settings = settings
        self.name = "redis-cluster" if settings.cluster_nodes else "redis"
        self.timeout_s = settings.operation_timeout_s
        self._expiry = Expiry()
        """Every command's time limit (one timer for all of them)."""
        self._client: Redis | RedisCluster = make_redis_client(settings)
        self._cluster = isinstance(self._client, RedisCluster)
        self._renew = self._client.register_script(_RENEW)
        self._release = self._client.register_script(_RELEASE)
        self._peek = self._client.register_script(_PEEK)
        self._store_and_release = self._client.register_script(_STORE_AND_RELEASE)

    @property
    def client(self) -> Redis | RedisCluster:
        return self._client

    def describe(self) -> str:
        return self.settings.describe()

    async def start(self) -> None:
        await self.ping()

    @_command
    async def ping(self, node: str = "") -> None:
        """PING the server (the cluster node ``node``). A cluster node that does not answer makes
        the client reload its slot map before the error is raised: requests for that node's keys
        are bypassed by its open breaker, so no keyed command would tell the client that a replica
        has taken over those slots."""
        target = self._client.get_node(node_name=node) if node and self._cluster else None
        if target is None:
            await self._client.ping()
            return
        try:
            await self._client.ping(target_nodes=target)
        except Exception:
            with contextlib.suppress(Exception):  # the ping's error is the one that counts
                await self._client.nodes_manager.initialize()
            raise

    def node_of(self, key: str) -> str:
        if not self._cluster:
            return ""
        try:  # the client's current slot map: a CRC16 and a lookup, no I/O
            return self._client.nodes_manager.get_node_from_slot(self._client.keyslot(key)).name
        except Exception:  # not initialized yet, or the slot is not covered right now
            return ""

    @_command
    async def get(self, key: str) -> bytes | None:
        return await self._client.get(key)

    @_command
    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        await self._client.set(key, value, px=_ms(ttl_s))

    @_command
    async def acquire_lease(self, lease: str, token: str, ttl_s: float) -> bool:
        return bool(await self._client.set(lease, token, px=_ms(ttl_s), nx=True))

    @_command
    async def renew_lease(self, lease: str, token: str, ttl_s: float) -> bool:
        return bool(await self._renew(keys=[lease], args=[token, _ms(ttl_s)]))

    @_command
    async def release_lease(self, lease: str, token: str) -> None:
        await self._release(keys=[lease], args=[token])

    @_command
    async def peek(self, key: str, lease: str) -> tuple[bytes | None, bool]:
        value, held = await self._peek(keys=[key, lease])
        return value, bool(held)

    @_command
    async def store_and_release(self, key: str, value: bytes, ttl_s: float, lease: str, token: str) -> None:
        await self._store_and_release(keys=[key, lease], args=[value, _ms(ttl_s), token])

    async def close(self) -> None:
        await self._client.aclose()
