"""Fixtures for the client SDK tests: real gRPC servers on port 0, run on an event loop in a
background thread so blocking ``Client`` calls and ``AsyncClient`` calls both reach them.

- ``server_loop``: the background loop (``run(coro)`` runs a coroutine there and waits).
- ``edge``: a real ``EdgeServer`` with the built reference model (one per session).
- ``scripted``: a factory for tiny scripted OIP servers (fail N times, delay, set parameters).
- ``certs`` / ``tls_server``: a CA, server and client certificates made now, and TLS / mutual TLS
  servers over the edge's dataplane.
"""

from __future__ import annotations

from tests.support.certs import Certs, make_certs

import asyncio
import threading
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest

from edgecloud import codec
from edgecloud.config import LimitsSettings, ServerSettings
from edgecloud.grpc_server import INFERENCE_SERVICE, GrpcServer, inference_server
from edgecloud.types import InferResponse, ParameterValue, Tensor
from protos import inference_pb2 as pb
from protos import inference_pb2_grpc as pb_grpc

MODEL = "all-MiniLM-L6-v2"


class ServerLoop:
    """An asyncio loop in a daemon thread; ``run`` executes a coroutine on it and returns its result."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="test-server-loop", daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = 120.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.run(self.loop.shutdown_asyncgens())
        self.run(self.loop.shutdown_default_executor())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


@pytest.fixture(scope="session")
def server_loop() -> Iterator[ServerLoop]:
    loop = ServerLoop()
    yield loop
    loop.close()


# ---------------------------------------------------------------------------------------------
# the real edge agent


@dataclass
class Edge:
    server: Any
    address: str


@pytest.fixture(scope="session")
def edge(server_loop, model_dir) -> Iterator[Edge]:
    from edge_agent.config import EdgeConfig, ModelSettings
    from edge_agent.server import EdgeServer

    config = EdgeConfig(
        server=ServerSettings(port=0, grace_s=1),
        limits=LimitsSettings(max_batch_size=64),
        models=[ModelSettings(path=model_dir, intra_op_threads=1)],
    )
    server = EdgeServer(config)
    port = server_loop.run(server.start())
    yield Edge(server, f"127.0.0.1:{port}")
    server_loop.run(server.stop(0.5))


# ---------------------------------------------------------------------------------------------
# scripted servers


@dataclass
class ScriptedServicer(pb_grpc.GRPCInferenceServiceServicer):
    """An OIP server whose ``ModelInfer`` / ``ServerLive`` answers follow a script.

    Each call pops the next code from ``failures`` (then uses ``always``, None = succeed) and
    aborts with it; a successful ``ModelInfer`` echoes every input as ``<name>_out`` with
    ``parameters`` set on the response. ``calls`` counts calls; ``metadata`` keeps each call's.
    """

    failures: list[grpc.StatusCode] = field(default_factory=list)
    always: grpc.StatusCode | None = None
    delay_s: float = 0.0
    parameters: dict[str, ParameterValue] = field(default_factory=dict)
    retry_after_s: float | None = None
    calls: int = 0
    metadata: list[dict[str, str]] = field(default_factory=list)

    async def _script(self, context: grpc.aio.ServicerContext) -> None:
        self.calls += 1
        self.metadata.append({m.key: m.value for m in context.invocation_metadata()})
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        code = self.failures.pop(0) if self.failures else self.always
        if code is not None:
            trailing = (("retry-after", f"{self.retry_after_s:.3f}"),) if self.retry_after_s else ()
            await context.abort(code, f"scripted {code.name} on call {self.calls}", trailing_metadata=trailing)

    async def ServerLive(self, request, context):
        await self._script(context)
        return pb.ServerLiveResponse(live=True)

    async def ModelInfer(self, request, context):
        await self._script(context)
        decoded = codec.request_from_proto(request)
        outputs = [Tensor(f"{t.name}_out", t.datatype, t.shape, t.data) for t in decoded.inputs]
        response = InferResponse(decoded.model_name, outputs, model_version="7", id=decoded.id,
                                 parameters={**self.parameters, "echo_parameters": len(decoded.parameters)})
        return codec.response_to_proto(response)


@dataclass
class Scripted:
    servicer: ScriptedServicer
    address: str


@pytest.fixture
def scripted(server_loop) -> Iterator[Callable[..., Scripted]]:
    """``scripted(**servicer_fields)`` starts a scripted server; all are stopped at teardown."""
    servers: list[GrpcServer] = []

    def start(**kwargs: Any) -> Scripted:
        servicer = ScriptedServicer(**kwargs)
        server = GrpcServer(lambda s: pb_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, s),
                            [INFERENCE_SERVICE])
        port = server_loop.run(server.start())
        servers.append(server)
        return Scripted(servicer, f"127.0.0.1:{port}")

    yield start
    for server in servers:
        server_loop.run(server.stop(0))


@pytest.fixture
def closed_port_address() -> str:
    """An address nothing listens on (bound, then released)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


class SleepRecorder:
    """A ``sleep`` that records the delays instead of sleeping (sync and async forms)."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    def __call__(self, delay: float) -> None:
        self.delays.append(delay)

    async def asleep(self, delay: float) -> None:
        self.delays.append(delay)


@pytest.fixture
def sleeps() -> SleepRecorder:
    return SleepRecorder()


# ---------------------------------------------------------------------------------------------
# certificates and TLS servers


@pytest.fixture(scope="session")
def certs(tmp_path_factory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def tls_server(server_loop, edge, certs) -> Iterator[Callable[..., str]]:
    """``tls_server(require_client_auth)`` serves the edge's dataplane over TLS; returns the port."""
    servers: list[GrpcServer] = []

    def start(require_client_auth: bool) -> int:
        credentials = grpc.ssl_server_credentials(
            [(certs.server_key, certs.server_chain)], root_certificates=certs.ca,
            require_client_auth=require_client_auth,
        )
        server = inference_server(edge.server.agent.dataplane, credentials=credentials)
        port = server_loop.run(server.start())
        servers.append(server)
        return port

    yield start
    for server in servers:
        server_loop.run(server.stop(0))

