"""An edge agent inside the gateway's own process (the device profile): no network hop.

Contract: ``EmbeddedEdge`` offers what the core uses of an ``Upstream`` (``infer``, ``probe``,
``model_metadata``, ``up``, ``outstanding``, ``close``), backed by an in-process ``EdgeAgent``
whose blocking compute runs on its own threads. Typed errors become ``UpstreamError`` with the
status the table gives their kind, so routing treats both kinds of edge alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import grpc

from edgecloud import codec
from edgecloud.errors import DeadlineExceeded, InferenceError
from edgecloud.status import grpc_code
from edge_agent.agent import EdgeAgent
from edge_agent.config import EdgeConfig, ModelSettings
from gateway.upstream import UpstreamError
from protos import inference_pb2 as pb


class EmbeddedEdge:
    role = "edge"

    def __init__(self, name: str, models: list[ModelSettings]):
        self.name = name
        self.address = "in-process"
        self.agent = EdgeAgent(EdgeConfig(models=models))
        self.outstanding = 0
        self.up = True
        self._loaded = False

    async def _ensure_loaded(self) -> None:
        if not self._loaded:
            await self.agent.aload()
            self._loaded = True

    @contextlib.asynccontextmanager
    async def _call(self, counted: bool = True):
        if counted:
            self.outstanding += 1
        try:
            await self._ensure_loaded()
            yield
        except InferenceError as exc:
            raise UpstreamError(self.name, grpc_code(exc.kind), exc) from exc
        except TimeoutError as exc:
            raise UpstreamError(self.name, grpc.StatusCode.DEADLINE_EXCEEDED,
                                DeadlineExceeded("the embedded edge did not answer in time")) from exc
        finally:
            if counted:
                self.outstanding -= 1

    def mark_success(self) -> None:
        self.up = True

    def mark_failure(self) -> None:
        pass  # an in-process agent has no connection to lose

    async def infer(self, msg: pb.ModelInferRequest, timeout_s: float | None) -> pb.ModelInferResponse:
        async with self._call():
            async with asyncio.timeout(timeout_s):
                return await self.agent.infer(msg)

    async def probe(self, msg: pb.ModelInferRequest, timeout_s: float) -> float:
        start = time.monotonic()
        async with self._call(counted=False):
            async with asyncio.timeout(timeout_s):
                await self.agent.infer(msg)
        return time.monotonic() - start

    async def model_metadata(self, name: str, version: str, timeout_s: float) -> pb.ModelMetadataResponse:
        async with self._call(counted=False):
            return codec.model_metadata_to_proto(self.agent.dataplane.model_metadata(name, version))

    async def close(self) -> None:
        await self.agent.aclose()
