"""An edge agent inside the gateway's own process (the device profile): no network hop.

Contract (see ``gateway.backend.Backend``): an in-process ``EdgeAgent`` serves the decoded
request as it is (no encoding at all); its blocking compute runs on its own threads. The agent
validates with the gateway's request limits (``limits``; ``set_limits`` after a reload), so a
request the gateway accepts is never refused by its own edge for a limit. The agent is loaded by
``start()`` (or at first use). A call past ``timeout_s`` fails with ``DeadlineExceeded``;
the agent's typed errors pass through as they are.
"""

from __future__ import annotations

from edgecloud.config import LimitsSettings
from edgecloud.errors import DeadlineExceeded
from edgecloud.expiry import Expiry
from edgecloud.limits import RequestLimits
from edgecloud.types import InferRequest, InferResponse, ModelMetadata
from edge_agent.agent import EdgeAgent
from edge_agent.config import EdgeConfig, ModelSettings
from gateway.backend import EDGE, Backend

__all__ = ["EmbeddedEdge"]


class EmbeddedEdge(Backend):
    address = "in-process"

    def __init__(self, name: str, models: list[ModelSettings], limits: LimitsSettings | None = None):
        super().__init__(name, EDGE)
        self.agent = EdgeAgent(EdgeConfig(models=models, limits=limits or LimitsSettings()))
        self._expiry = Expiry()
        """The calls' time limits (one timer for all of them, not one each)."""

    async def start(self) -> None:
        await self.agent.aload()

    async def infer(self, request: InferRequest, timeout_s: float | None) -> InferResponse:
        try:
            with self._expiry.within(timeout_s):
                return await self.agent.infer(request)
        except TimeoutError:
            raise DeadlineExceeded("the embedded edge did not answer in time") from None

    async def stream(self, request: InferRequest, timeout_s: float | None):
        """The agent's own stream (its generative models); the dispatcher bounds the time."""
        await self.agent.aload()
        responses = self.agent.dataplane.stream(request)
        try:
            async for response in responses:
                yield response
        finally:
            await responses.aclose()

    async def probe(self, request: InferRequest, timeout_s: float) -> None:
        await self.infer(request, timeout_s)

    async def model_metadata(self, name: str, version: str, timeout_s: float) -> ModelMetadata:
        return await self.agent.dataplane.model_metadata(name, version)

    def set_limits(self, limits: RequestLimits) -> None:
        self.agent.dataplane.limits = limits

    async def close(self) -> None:
        await self.agent.aclose()
