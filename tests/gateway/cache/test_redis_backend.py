"""The Redis backend against real ``redis-server`` processes: commands, TTL, bounded time,
cancellation safety through a delay proxy, AUTH, TLS and Redis Cluster."""

from __future__ import annotations

import asyncio
import time

import pytest
from redis.asyncio.cluster import RedisCluster

from edgecloud_tools.fault_proxy import FaultProxy
from edgecloud_tools.stack import free_port
from gateway.cache import BackendError, RedisBackend, RedisSettings, make_redis_client
from tests.gateway.cache.conftest import TEST_REDIS_TIMEOUTS
from tests.support.certs import make_certs


def settings(url: str, **overrides) -> RedisSettings:
    """Generous timeouts (``TEST_REDIS_TIMEOUTS``) unless the test sets its own."""
    return RedisSettings(url=url, **{**TEST_REDIS_TIMEOUTS, **overrides})


@pytest.fixture
async def backends():
    made: list[RedisBackend] = []

    async def make(s: RedisSettings, start: bool = True) -> RedisBackend:
        backend = RedisBackend(s)
        made.append(backend)
        if start:
            await backend.start()
        return backend

    yield make
    for backend in made:
        await backend.close()


async def test_set_get_and_real_ttl_expiry(redis_server, backends):
    backend = await backends(settings(redis_server().url))
    await backend.set("k", b"\x00value", 3.0)
    assert await backend.get("k") == b"\x00value" and await backend.get("missing") is None
    await asyncio.sleep(3.1)
    assert await backend.get("k") is None


async def test_commands_against_a_frozen_redis_fail_fast(redis_server, backends):
    server = redis_server()
    backend = await backends(settings(server.url, socket_timeout_ms=30, connect_timeout_ms=50))
    server.pause()
    try:
        start = time.monotonic()
        with pytest.raises(BackendError) as info:
            await backend.get("k")
        assert info.value.kind == "timeout" and time.monotonic() - start < 3.0  # one 30 ms bound, no retries
    finally:
        server.resume()
    assert await _despite_timeouts(backend.get, "k") is None  # the timed-out connection was discarded


async def test_commands_against_a_dead_redis_fail_fast(redis_server, backends):
    server = redis_server()
    backend = await backends(settings(server.url))
    server.kill()
    start = time.monotonic()
    for _ in range(3):
        with pytest.raises(BackendError) as info:
            await backend.get("k")
        assert info.value.kind in ("connection", "timeout")
    assert time.monotonic() - start < 3.0  # no retries with backoff (which would take many seconds)


@pytest.mark.parametrize("how", ["cancel", "time_bound"])
async def test_a_command_abandoned_mid_reply_never_hands_its_reply_to_the_next(how, redis_server, backends):
    """The classic redis-py asyncio bug: a GET abandoned after sending (its request cancelled, or
    its time bound hit) goes back to the pool with the reply unread, and the next GET on that
    connection reads the previous key's value. One connection, so any reuse would show."""
    server = redis_server()
    proxy = FaultProxy("127.0.0.1", server.port)
    await proxy.start()
    try:
        timeout_ms = 2000 if how == "cancel" else 40
        backend = await backends(settings(f"redis://127.0.0.1:{proxy.port}", max_connections=1,
                                          socket_timeout_ms=timeout_ms, connect_timeout_ms=timeout_ms), start=False)
        await _despite_timeouts(backend.start)  # 40 ms bounds: a busy machine may need a second try
        direct = await backends(settings(server.url, socket_timeout_ms=2000, connect_timeout_ms=2000))
        for i in range(10):  # written directly: a busy machine must not fail the setup at 40 ms
            await direct.set(f"k{i}", f"v{i}".encode(), 60)
        proxy.set_delay(0.06)  # every reply is held 60 ms: each GET is abandoned before its reply ...
        for i in range(6):  # ... and the next one is sent while that stale reply is still on its way
            if how == "cancel":
                task = asyncio.create_task(backend.get(f"k{i}"))
                await asyncio.sleep(0.04)
                task.cancel()
                (result,) = await asyncio.gather(task, return_exceptions=True)
            else:
                try:
                    result = await backend.get(f"k{i}")
                except BackendError as exc:
                    result = exc
            assert isinstance(result, (asyncio.CancelledError, BackendError)) or result == f"v{i}".encode(), \
                f"GET k{i} returned {result!r}"
        proxy.set_delay(0.0)
        await asyncio.sleep(0.2)  # the held replies arrive now, on connections that must be gone
        for _ in range(3):
            for i in range(10):
                assert await _despite_timeouts(backend.get, f"k{i}") == f"v{i}".encode()
    finally:
        await proxy.stop()


async def _despite_timeouts(command, *args):
    """``await command(*args)``, tried again when it only timed out (short bounds on a busy
    machine); a wrong value — a stale reply read by the wrong command — is returned at once and
    fails the test."""
    for _ in range(20):
        try:
            return await command(*args)
        except BackendError as exc:
            if exc.kind != "timeout":
                raise
    raise AssertionError(f"{command.__name__}{args} timed out 20 times")


async def test_auth_with_password(redis_server, backends):
    server = redis_server("--requirepass", "s3cret")
    backend = await backends(settings(server.url, password="s3cret"))
    await backend.set("k", b"v", 10)
    assert await backend.get("k") == b"v"
    wrong = await backends(settings(server.url, password="nope"), start=False)
    with pytest.raises(BackendError):
        await wrong.start()
    assert "s3cret" not in repr(RedisSettings(url=server.url, password="s3cret"))


async def test_explicit_credentials_win_over_the_url():
    client = make_redis_client(RedisSettings(url="redis://u:p@127.0.0.1:1/2", username="admin", password="x"))
    try:
        kwargs = client.connection_pool.connection_kwargs
        assert (kwargs["username"], kwargs["password"], kwargs["db"]) == ("admin", "x", 2)
        assert kwargs["socket_timeout"] == 0.03 and kwargs["retry"].get_retries() == 0
        assert kwargs["driver_info"] is None
    finally:
        await client.aclose()
    assert "p@" not in RedisSettings(url="redis://u:p@h:1").describe()


async def test_tls_with_ca_and_client_certificate(redis_server, backends, tmp_path):
    make_certs(tmp_path)  # writes ca.pem, server_chain.pem, server_key.pem, client_chain.pem, client_key.pem
    port = free_port()
    redis_server("--port", "0", "--tls-port", str(port), "--tls-cert-file", str(tmp_path / "server_chain.pem"),
                 "--tls-key-file", str(tmp_path / "server_key.pem"), "--tls-ca-cert-file", str(tmp_path / "ca.pem"),
                 "--tls-auth-clients", "yes", port=port)
    backend = await backends(RedisSettings(url=f"rediss://127.0.0.1:{port}", tls_ca_path=str(tmp_path / "ca.pem"),
                                           tls_cert_path=str(tmp_path / "client_chain.pem"),
                                           tls_key_path=str(tmp_path / "client_key.pem"),
                                           connect_timeout_ms=2000, socket_timeout_ms=2000))
    await backend.set("k", b"over tls", 10)
    assert await backend.get("k") == b"over tls"
    untrusted = await backends(RedisSettings(url=f"rediss://127.0.0.1:{port}", connect_timeout_ms=2000,
                                             socket_timeout_ms=2000), start=False)
    with pytest.raises(BackendError):
        await untrusted.start()


async def test_cluster_client_is_built_from_startup_nodes_without_retries():
    s = RedisSettings(cluster_nodes=["10.0.0.1:7000", "10.0.0.2:7001"], password="pw", tls=True,
                      tls_ca_path="/etc/ca.pem", socket_timeout_ms=20, max_connections=8)
    client = make_redis_client(s)
    try:
        assert isinstance(client, RedisCluster)
        assert set(client.nodes_manager.startup_nodes) == {"10.0.0.1:7000", "10.0.0.2:7001"}
        kwargs = client.nodes_manager.connection_kwargs
        assert kwargs["password"] == "pw" and kwargs["socket_timeout"] == 0.02 and kwargs["max_connections"] == 8
        assert kwargs["ssl_ca_certs"] == "/etc/ca.pem" and client.retry.get_retries() == 0
    finally:
        await client.aclose()
    assert RedisBackend(s).name == "redis-cluster"


async def test_a_real_three_node_cluster(redis_cluster, backends):
    cluster = redis_cluster(masters=3, replicas=0)
    backend = await backends(RedisSettings(cluster_nodes=cluster.startup_nodes[:1], connect_timeout_ms=1000,
                                           socket_timeout_ms=1000))
    for i in range(30):  # keys spread over all three nodes' slots
        await backend.set(f"key-{i}", str(i).encode(), 10)
    assert [await backend.get(f"key-{i}") for i in range(30)] == [str(i).encode() for i in range(30)]


async def test_all_connections_busy_is_a_fast_busy_error_not_a_wait(redis_server, backends):
    server = redis_server()
    backend = await backends(settings(server.url, max_connections=1, socket_timeout_ms=5000))
    server.pause()
    try:
        first = asyncio.create_task(backend.get("a"))  # holds the only connection until its timeout
        await asyncio.sleep(0.5)
        start = time.monotonic()
        with pytest.raises(BackendError) as info:
            await backend.get("b")
        assert info.value.kind == "busy" and not info.value.counts_against_backend
        assert time.monotonic() - start < 2.5  # not the 5 s wait for the connection's timeout
        server.resume()
        assert await first is None  # the held GET completes once Redis runs again
    finally:
        server.resume()
