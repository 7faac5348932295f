"""``unary``: awaiting a grpc.aio call like ``await call``, but a cancelled caller cancels the RPC
in gRPC core and leaks nothing (grpc/grpc#43360). A real server in its own process."""

from __future__ import annotations

import asyncio
import gc
import os
import subprocess
import sys

import grpc
import pytest

from edgecloud.grpc_calls import unary

SERVER = """
import asyncio, sys
import grpc

async def slow(request, context):
    if request == b"fail":
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "bad request")
    if request.startswith(b"!"):  # announce that this call reached the handler
        request = request[1:]
        print("started", flush=True)
    try:
        await asyncio.sleep(float(request or b"0.05"))
    except asyncio.CancelledError:
        print("cancelled", flush=True)
        raise
    return b"done:" + request

async def main():
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "t.S", {"M": grpc.unary_unary_rpc_method_handler(slow)}),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(port, flush=True)
    await server.wait_for_termination()

asyncio.run(main())
"""


@pytest.fixture
def server():
    proc = subprocess.Popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True)
    try:
        port = int(proc.stdout.readline())
        yield proc, f"127.0.0.1:{port}"
    finally:
        proc.kill()
        proc.wait(timeout=10)
        proc.stdout.close()


def rss_mib() -> float:
    with open(f"/proc/{os.getpid()}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def test_returns_the_response_and_raises_the_rpc_error(server):
    _, address = server
    async with grpc.aio.insecure_channel(address) as channel:
        method = channel.unary_unary("/t.S/M")
        assert await unary(method(b"0", timeout=10)) == b"done:0"
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await unary(method(b"fail", timeout=10))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await unary(method(b"5", timeout=0.05))
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


async def test_a_cancelled_caller_cancels_the_rpc_on_the_server_at_once(server):
    proc, address = server
    async with grpc.aio.insecure_channel(address) as channel:
        method = channel.unary_unary("/t.S/M")
        task = asyncio.create_task(unary(method(b"!30", timeout=60)))
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), timeout=30)
        assert line.strip() == "started"
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), timeout=10)
        assert line.strip() == "cancelled"  # the handler was cancelled: not left running for 30 s
        assert await unary(method(b"0", timeout=10)) == b"done:0"  # the channel is fine


async def test_cancelling_thousands_of_calls_in_flight_does_not_grow_memory(server):
    """With ``await call`` instead, this grows RSS by ~18 KB a call (~55 MiB here) on grpcio 1.85."""
    _, address = server
    async with grpc.aio.insecure_channel(address) as channel:
        method = channel.unary_unary("/t.S/M")

        async def cancelled_in_flight() -> None:
            task = asyncio.ensure_future(unary(method(b"10" + b" " * 2000, timeout=10)))
            await asyncio.sleep(0.005)  # sent (or not yet: cancelled either way, never answered)
            task.cancel()
            # Cancelled here, or (on a loaded machine, rarely) already ended CANCELLED in gRPC core
            # by the time the task saw it: either way the call was cancelled, never answered.
            with pytest.raises((asyncio.CancelledError, grpc.aio.AioRpcError)) as info:
                await task
            if isinstance(info.value, grpc.aio.AioRpcError):
                assert info.value.code() == grpc.StatusCode.CANCELLED

        async def rounds(n: int) -> None:
            for _ in range(n):
                await asyncio.gather(*(cancelled_in_flight() for _ in range(100)))

        await rounds(10)  # warm-up: channel, arenas, caches
        gc.collect()
        before = rss_mib()
        await rounds(30)
        gc.collect()
        grown = rss_mib() - before
    assert grown < 15, f"3,000 cancelled calls grew RSS by {grown:.1f} MiB"
