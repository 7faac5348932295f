"""Hostile HTTP framing against a real REST front on port 0, over raw sockets: a body whose chunks
turn out malformed after the headers, a body that stops arriving, a client that leaves mid-body,
and more connections than the front holds. Each is answered at once (or after the body timeout),
the connection is closed, nothing is logged as an error, and the server keeps serving."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from edgecloud.dataplane import Dataplane
from edgecloud.http_front import RestFront
from edgecloud.limits import RequestLimits
from edgecloud.model import ModelRepository
from edgecloud.types import ServerMetadata

HEAD = (b"POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n")


@pytest.fixture
async def front():
    dataplane = Dataplane(ModelRepository(), ServerMetadata("test", "0"), RequestLimits())
    dataplane.set_ready(True)
    server = RestFront(dataplane, port=0, body_timeout_s=0.5, max_connections=3)
    await server.start()
    yield server
    await server.stop(0.5)


async def exchange(port: int, *parts: bytes, pause_s: float = 0.2, read_s: float = 5.0) -> tuple[bytes, float, bool]:
    """Send ``parts`` with pauses; the first answer, seconds until it came, and whether the server
    then closed the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for index, part in enumerate(parts):
            if index:
                await asyncio.sleep(pause_s)
            writer.write(part)
            await writer.drain()
        start = time.monotonic()
        answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), read_s)
        took = time.monotonic() - start
        try:
            rest = await asyncio.wait_for(reader.read(), read_s)
            closed = True
        except TimeoutError:
            rest, closed = b"", False
        return answer + rest, took, closed
    finally:
        writer.close()


async def healthy(port: int) -> bool:
    answer, _, _ = await exchange(port, b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    return answer.startswith(b"HTTP/1.1 200")


@pytest.mark.parametrize("bad_chunk", [b"zz\r\nabc\r\n0\r\n\r\n", b"3\r\nabcdef\r\n0\r\n\r\n"],
                         ids=["bad chunk size", "chunk longer than declared"])
async def test_a_body_malformed_after_its_headers_is_400_at_once_and_closed(front, bad_chunk, caplog):
    caplog.set_level(logging.INFO)
    answer, took, closed = await exchange(front.port, HEAD, bad_chunk)
    assert answer.startswith(b"HTTP/1.1 400") and b'"body: is not well-formed HTTP' in answer
    assert took < 0.4 and closed  # not the body timeout: at once
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert await healthy(front.port)


async def test_a_malformed_request_line_is_one_log_line(front, caplog):
    caplog.set_level(logging.INFO)
    answer, _, _ = await exchange(front.port, HEAD + b"zz\r\nabc\r\n0\r\n\r\n")
    assert answer.startswith(b"HTTP/1.0 400")
    records = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert len(records) <= 1 and all(r.levelno < logging.WARNING and not r.exc_info for r in records)


async def test_a_body_that_stops_arriving_is_408_after_the_body_timeout(front):
    head = HEAD.replace(b"Transfer-Encoding: chunked", b"Content-Length: 100")
    answer, took, closed = await exchange(front.port, head, b'{"inputs": [')
    assert answer.startswith(b"HTTP/1.1 408") and b"did not arrive within 0.5 s" in answer
    assert 0.2 < took < 3.0 and closed
    assert await healthy(front.port)


async def test_a_client_leaving_mid_body_is_not_an_error(front, caplog):
    caplog.set_level(logging.INFO)
    head = HEAD.replace(b"Transfer-Encoding: chunked", b"Content-Length: 100")
    reader, writer = await asyncio.open_connection("127.0.0.1", front.port)
    writer.write(head + b'{"inputs": [')
    await writer.drain()
    await asyncio.sleep(0.1)
    writer.close()
    await asyncio.sleep(0.3)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert await healthy(front.port)


async def test_connections_beyond_the_limit_are_closed_when_accepted(front, caplog):
    held = [await asyncio.open_connection("127.0.0.1", front.port) for _ in range(3)]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", front.port)
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed without a word
        writer.close()
        assert "refusing new ones" in caplog.text
    finally:
        for _, writer in held:
            writer.close()
        await asyncio.sleep(0.2)
    assert await healthy(front.port)
