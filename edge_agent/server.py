"""The edge agent as a network service: the Open Inference Protocol over gRPC (and HTTP when
``server.http_port`` is set), health and reflection.

Contract: ``EdgeServer.start()`` loads and warms every model, then listens and reports SERVING;
``port`` / ``http_port`` are the bound ports (config port 0 picks a free one). ``stop(grace)``
reports NOT_SERVING, stops accepting, drains in-flight requests for ``grace`` seconds, then
releases the models (the shared lifecycle of ``edgecloud.server.InferenceServer``).
"""

from __future__ import annotations

import logging

from edgecloud.server import InferenceServer, Resource
from edge_agent.agent import EdgeAgent
from edge_agent.config import EdgeConfig

__all__ = ["EdgeServer"]

log = logging.getLogger(__name__)


class EdgeServer(InferenceServer):
    def __init__(self, config: EdgeConfig, agent: EdgeAgent | None = None):
        self.config = config
        self.agent = agent or EdgeAgent(config)
        super().__init__("edge agent", self.agent.dataplane, config.server,
                         resources=[Resource("models", self.agent.aload, self.agent.aclose)])

    async def start(self) -> int:
        port = await super().start()
        names = ", ".join(f"{m.name} ({m.variant})" for m in self.agent.models)
        log.info("edge agent serving %s on %s:%d", names, self.settings.host, port)
        return port
