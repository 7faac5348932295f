"""The edge agent as a network service: the Open Inference Protocol over gRPC (and HTTP when
``server.http_port`` is set), health and reflection.

Contract: ``EdgeServer.start()`` loads and warms every model, then listens and reports SERVING;
``port`` / ``http_port`` are the bound ports (config port 0 picks a free one). ``stop(grace)``
reports NOT_SERVING, stops accepting, drains in-flight requests for ``grace`` seconds, then
releases the models (``edgecloud.server.InferenceServer``).
"""

from __future__ import annotations

import logging

from edgecloud.server import InferenceServer, Resource
from edge_agent.agent import EdgeAgent
from edge_agent.config import EdgeConfig

__all__ = ["EdgeServer"]

log = logging.getLogger(__name__)


class EdgeServer:
    def __init__(self, config: EdgeConfig, agent: EdgeAgent | None = None):
        self.config = config
        self.agent = agent or EdgeAgent(config)
        self._server = InferenceServer("edge agent", self.agent.dataplane, config.server,
                                       resources=[Resource("models", self.agent.aload, self.agent.aclose)])

    @property
    def port(self) -> int | None:
        return self._server.port

    @property
    def http_port(self) -> int | None:
        return self._server.http_port

    async def start(self) -> int:
        port = await self._server.start()
        names = ", ".join(f"{m.name} ({m.variant})" for m in self.agent.models)
        log.info("edge agent serving %s on %s:%d", names, self.config.server.host, port)
        return port

    async def stop(self, grace: float | None = None) -> None:
        await self._server.stop(grace)
