"""Retries against real scripted gRPC servers: UNAVAILABLE then success, always UNAVAILABLE,
nothing listening, and the deadline bounding all attempts."""

from __future__ import annotations

import time

import grpc
import numpy as np
import pytest

from gateway.client import AsyncClient, Client, DeadlineExceeded, Jitter, RetryPolicy, Unavailable

UNAVAILABLE = grpc.StatusCode.UNAVAILABLE


def test_sync_retries_unavailable_then_succeeds(scripted, sleeps):
    server = scripted(failures=[UNAVAILABLE, UNAVAILABLE])
    policy = RetryPolicy(max_attempts=3, rand=lambda: 0.5)
    with Client(server.address, retry=policy, sleep=sleeps) as client:
        result = client.infer("m", {"x": np.arange(3, dtype=np.int64)})
    np.testing.assert_array_equal(result.as_numpy("x_out"), [0, 1, 2])
    assert server.servicer.calls == 3
    assert sleeps.delays == pytest.approx([0.025, 0.05])  # full jitter at draw 0.5 of caps 0.05, 0.1


async def test_async_retries_unavailable_then_succeeds(scripted, sleeps):
    server = scripted(failures=[UNAVAILABLE])
    async with AsyncClient(server.address, sleep=sleeps.asleep) as client:
        assert await client.server_live()
    assert server.servicer.calls == 2 and len(sleeps.delays) == 1


@pytest.mark.parametrize("max_attempts", [1, 4])
def test_sync_gives_up_after_max_attempts(scripted, sleeps, max_attempts):
    server = scripted(always=UNAVAILABLE)
    with Client(server.address, retry=RetryPolicy(max_attempts=max_attempts), sleep=sleeps) as client:
        with pytest.raises(Unavailable, match=f"scripted UNAVAILABLE on call {max_attempts}") as info:
            client.infer("m", {"x": ["a"]})
    assert isinstance(info.value.__cause__, grpc.RpcError)
    assert server.servicer.calls == max_attempts
    assert len(sleeps.delays) == max_attempts - 1


async def test_async_gives_up_after_max_attempts(scripted, sleeps):
    server = scripted(always=UNAVAILABLE)
    async with AsyncClient(server.address, retry=RetryPolicy(max_attempts=3), sleep=sleeps.asleep) as client:
        with pytest.raises(Unavailable):
            await client.embed(["a"])
    assert server.servicer.calls == 3


@pytest.mark.parametrize("client_kind", ["sync", "async"])
async def test_nothing_listening_is_unavailable_after_retries(closed_port_address, sleeps, client_kind):
    policy = RetryPolicy(max_attempts=3)
    if client_kind == "sync":
        with Client(closed_port_address, retry=policy, sleep=sleeps) as client:
            with pytest.raises(Unavailable):
                client.server_ready()
    else:
        async with AsyncClient(closed_port_address, retry=policy, sleep=sleeps.asleep) as client:
            with pytest.raises(Unavailable):
                await client.server_ready()
    assert len(sleeps.delays) == 2


def test_retry_after_from_the_server_is_honoured(scripted, sleeps):
    server = scripted(failures=[UNAVAILABLE], retry_after_s=0.4)
    with Client(server.address, retry=RetryPolicy(rand=lambda: 0.0), sleep=sleeps) as client:
        assert client.server_live()
    assert sleeps.delays == pytest.approx([0.4])


def test_the_deadline_bounds_all_attempts_with_real_sleeps(scripted):
    """Each attempt fails slowly; with real backoff the call still ends within its deadline."""
    server = scripted(always=UNAVAILABLE, delay_s=0.1)
    policy = RetryPolicy(max_attempts=50, initial_backoff_s=0.05, jitter=Jitter.NONE)
    with Client(server.address, retry=policy, timeout_s=2.0) as client:
        start = time.monotonic()
        with pytest.raises((Unavailable, DeadlineExceeded)):
            client.infer("m", {"x": ["a"]})
        elapsed = time.monotonic() - start
    assert elapsed < 2.0 + 2.5  # the deadline plus a busy machine's slack, not 50 attempts (>= 7.5 s)
    assert 2 <= server.servicer.calls < 50
