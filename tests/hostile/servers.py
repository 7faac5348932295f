"""Servers under attack and the plain clients that attack them.

Contract:
- ``BackgroundLoop`` runs an event loop on its own thread, so synchronous tests (and
  schemathesis, which calls with ``requests``) can talk to in-process asyncio servers.
- ``InProcessEdgeRest`` is a ``RestFront`` over a real edge agent's dataplane on port 0, in a
  ``BackgroundLoop``; ``errors`` collects every ERROR log record while it serves.
- ``http_exchange`` sends exact bytes over a fresh TCP connection (no client library adds or fixes
  headers) and returns the parsed answer; ``chunk_flood`` sends a chunked body of tiny chunks from
  a second thread while the answer is read, so a server that answers early is measured early.
- ``grpc_call`` sends a message, or raw wire bytes, to ``ModelInfer`` and returns the status.
- ``memory(pid)`` reads VmRSS / VmHWM from ``/proc``; ``LogWatch`` reads what a server process
  logged since the last look and picks out the lines that mean an unexpected failure.
- ``leaks_in(message)`` names what an error message gives away that a client must never see
  (``LEAKS``: file paths, source files, tracebacks, addresses, Redis keys, Python reprs, module
  paths).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import socket
import threading
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from edgecloud.codec import serialize_bytes
from protos import inference_pb2 as pb
from protos import inference_pb2_grpc as pb_grpc
from tests.hostile.corpus import BODY_TIMEOUT_MS

MODEL = "all-MiniLM-L6-v2"
INFER_METHOD = "/inference.GRPCInferenceService/ModelInfer"

# ---------------------------------------------------------------------------------------------
# in-process servers


class BackgroundLoop:
    """An asyncio loop on a daemon thread; ``run(coro)`` waits for its result from any thread."""

    def __init__(self, name: str = "hostile-loop"):
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine, timeout: float = 120.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        async def drain() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.loop.shutdown_asyncgens()
            await self.loop.shutdown_default_executor()

        self.run(drain(), timeout=30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(30)
        self.loop.close()


class _ErrorRecords(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(f"{record.name}: {record.getMessage()}")


class InProcessEdgeRest:
    """The shared REST front over a real edge agent's dataplane, served from a background loop."""

    def __init__(self, model_dir: Path, limits: dict[str, int], max_body_bytes: int):
        self.model_dir = model_dir
        self.limits = limits
        self.max_body_bytes = max_body_bytes
        self.port = 0
        self._loop: BackgroundLoop | None = None
        self._front: Any = None
        self._agent: Any = None
        self._errors = _ErrorRecords()

    def start(self) -> InProcessEdgeRest:
        from edge_agent.agent import EdgeAgent
        from edge_agent.config import EdgeConfig, ModelSettings
        from edgecloud.config import LimitsSettings
        from edgecloud.http_front import RestFront

        config = EdgeConfig(limits=LimitsSettings(**self.limits),
                            models=[ModelSettings(path=self.model_dir, intra_op_threads=1)])
        self._loop = BackgroundLoop("edge-rest")

        async def start() -> int:
            self._agent = EdgeAgent(config)
            await self._agent.aload()
            self._front = RestFront(self._agent.dataplane, max_body_bytes=self.max_body_bytes,
                                    body_timeout_s=BODY_TIMEOUT_MS / 1000)
            return await self._front.start()

        self.port = self._loop.run(start())
        logging.getLogger().addHandler(self._errors)
        return self

    @property
    def errors(self) -> list[str]:
        return self._errors.records

    def stop(self) -> None:
        logging.getLogger().removeHandler(self._errors)
        if self._loop is None:
            return

        async def stop() -> None:
            await self._front.stop(0)
            await self._agent.aclose()

        try:
            self._loop.run(stop())
        finally:
            self._loop.close()
            self._loop = None


# ---------------------------------------------------------------------------------------------
# HTTP over a bare socket


@dataclass
class HttpAnswer:
    status: int
    headers: dict[str, str]
    """Lower-cased names."""
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def _read_answer(sock: socket.socket) -> HttpAnswer:
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"connection closed before an answer: {buffer[:200]!r}")
        buffer += chunk
    head, _, body = buffer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = headers.get("content-length")
    if length is not None:
        while len(body) < int(length):
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
        return HttpAnswer(status, headers, body[: int(length)])
    while chunk := sock.recv(65536):  # no length: the body runs to the end of the connection
        body += chunk
    return HttpAnswer(status, headers, body)


def http_request_bytes(method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None) -> bytes:
    """One HTTP/1.1 request, ``Connection: close``, with a Content-Length unless the headers frame it."""
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    given = {name.lower() for name in (headers or {})}
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    if "content-length" not in given and "transfer-encoding" not in given:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def http_exchange(port: int, raw: bytes, timeout: float = 10.0, *, then: bytes = b"",
                  pause_s: float = 0.3) -> HttpAnswer:
    """Send ``raw`` on a fresh connection to 127.0.0.1:port (and ``then``, ``pause_s`` later, as a
    second packet) and read one answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(raw)
            if then:
                time.sleep(pause_s)
                sock.sendall(then)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered (and closed) before taking everything: read what it said
        return _read_answer(sock)


def chunk_flood(port: int, path: str, headers: dict[str, str], chunks: int, chunk: bytes = b" ",
                terminate: bool = True, timeout: float = 10.0) -> HttpAnswer:
    """POST a body of ``chunks`` chunks of ``chunk`` (never terminated unless ``terminate``); the
    chunks go from a second thread, and the answer is read as soon as the server sends it."""
    head = http_request_bytes("POST", path, headers={**headers, "Transfer-Encoding": "chunked"})
    frame = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head)

        def send() -> None:
            try:
                block = frame * 1024
                for _ in range(chunks // 1024):
                    sock.sendall(block)
                sock.sendall(frame * (chunks % 1024))
                if terminate:
                    sock.sendall(b"0\r\n\r\n")
            except OSError:
                pass  # the server stopped reading: expected once it has answered

        sender = threading.Thread(target=send, name="chunk-flood", daemon=True)
        sender.start()
        try:
            return _read_answer(sock)
        finally:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sender.join(timeout)


# ---------------------------------------------------------------------------------------------
# gRPC


@dataclass
class GrpcAnswer:
    code: grpc.StatusCode
    details: str
    response: pb.ModelInferResponse | None = None


def grpc_call(channel: grpc.Channel, request: pb.ModelInferRequest | bytes, timeout: float = 10.0) -> GrpcAnswer:
    """``ModelInfer`` with a message or, for ``bytes``, exactly those bytes on the wire."""
    if isinstance(request, bytes):
        call = channel.unary_unary(INFER_METHOD, request_serializer=None, response_deserializer=None)
    else:
        call = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer
    try:
        response = call(request, timeout=timeout)
    except grpc.RpcError as exc:
        return GrpcAnswer(exc.code(), exc.details() or "")
    if isinstance(response, bytes):
        response = pb.ModelInferResponse.FromString(response)
    return GrpcAnswer(grpc.StatusCode.OK, "", response)


def good_grpc_request(text: str = "still serving") -> pb.ModelInferRequest:
    msg = pb.ModelInferRequest(model_name=MODEL, id="good")
    msg.inputs.add(name="text", datatype="BYTES", shape=[1])
    msg.raw_input_contents.append(serialize_bytes([text.encode()]))
    return msg


def good_http_body(text: str = "still serving") -> bytes:
    return json.dumps({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": [text]}]}).encode()


# ---------------------------------------------------------------------------------------------
# what an error message must not say

LEAKS = {  # what, and how to spot it
    "file path": re.compile(r"/(work|tmp|home|usr|root|opt|etc|proc|var)/|site-packages"),
    "source file": re.compile(r"\.py\b"),
    "traceback": re.compile(r"Traceback|File \"|line \d+, in "),
    "address": re.compile(r"127\.0\.0\.1|localhost|0\.0\.0\.0|ipv[46]:|\[::1?\]"),
    "redis key": re.compile(r"edgecloud:cache:"),
    "python object": re.compile(r"<class '|<module '| object at 0x"),
    "module path": re.compile(r"\b(google\.protobuf|grpc\._|aiohttp\.|numpy\.|edgecloud\.|gateway\.|edge_agent\.|"
                              r"cloud_worker\.)[a-z_]"),
}


def leaks_in(message: str) -> list[str]:
    """The kinds of internal detail ``message`` gives away (empty when none)."""
    return [kind for kind, pattern in LEAKS.items() if pattern.search(message)]


# ---------------------------------------------------------------------------------------------
# processes


def memory(pid: int | str = "self") -> dict[str, int]:
    """``VmRSS`` and ``VmHWM`` (peak) of a process, in bytes."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            out[name] = int(value.split()[0]) * 1024
    return out


UNEXPECTED = re.compile(
    r"unexpected error|Unhandled exception|Exception calling application|Exception deserializing|"
    r"Exception serializing|Traceback \(most recent call last\)")
"""Log lines that mean a request hit code that did not expect it (a crash, as far as a client goes).

aiohttp logs every request its HTTP parser refuses as ERROR with a traceback ("Error handling
request"); those are refusals of malformed HTTP, answered 400, and are not counted."""


class LogWatch:
    """What a server process logged since the previous ``new_unexpected()`` call."""

    def __init__(self, path: Path):
        self.path = path
        self._offset = path.stat().st_size if path.exists() else 0

    def new_unexpected(self) -> list[str]:
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self._offset)
                data = handle.read()
        except FileNotFoundError:
            return []
        self._offset += len(data)
        text = data.decode("utf-8", "replace")
        # A traceback that follows aiohttp's "Error handling request" is a refused malformed message.
        blocks = re.split(r"(?m)^(?=\d{4}-\d\d-\d\d )", text)
        return [block.strip().splitlines()[0] for block in blocks
                if UNEXPECTED.search(block) and "aiohttp.server: Error handling request" not in block]


def wait_until(predicate, timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
