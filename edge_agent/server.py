"""The edge agent as a network service: gRPC Open Inference Protocol + health + reflection.

Contract: ``EdgeServer.start()`` loads and warms every model, then listens and reports SERVING;
``port`` is the bound port (config port 0 picks a free one). ``stop(grace)`` reports NOT_SERVING,
stops accepting, drains in-flight requests for ``grace`` seconds, then releases the models.
"""

from __future__ import annotations

import asyncio
import logging

from edgecloud.grpc_server import GrpcServer, inference_server
from edge_agent.agent import EdgeAgent
from edge_agent.config import EdgeConfig

log = logging.getLogger(__name__)


class EdgeServer:
    def __init__(self, config: EdgeConfig, agent: EdgeAgent | None = None):
        self.config = config
        self.agent = agent or EdgeAgent(config)
        self._grpc: GrpcServer | None = None
        self._http = None
        self.port: int | None = None
        self.http_port: int | None = None

    async def start(self) -> int:
        await self.agent.aload()
        server = self.config.server
        self._grpc = inference_server(
            self.agent.dataplane, host=server.host, port=server.port, max_message_bytes=server.max_message_bytes,
            credentials=server.tls.grpc_credentials() if server.tls else None,
        )
        self.port = await self._grpc.start()
        if server.http_port is not None:
            from edgecloud.http_front import RestFront

            self._http = RestFront(self.agent.dataplane, host=server.host, port=server.http_port,
                                   max_body_bytes=server.max_message_bytes,
                                   ssl_context=server.tls.ssl_context() if server.tls else None)
            self.http_port = await self._http.start()
        names = ", ".join(f"{m.name} ({m.variant})" for m in self.agent.models)
        log.info("edge agent serving %s on %s:%d", names, server.host, self.port)
        return self.port

    async def stop(self, grace: float | None = None) -> None:
        grace = self.config.server.grace_s if grace is None else grace
        self.agent.dataplane.set_ready(False)
        stops = []
        if self._grpc is not None:
            stops.append(self._grpc.stop(grace))
            self._grpc = None
        if self._http is not None:
            stops.append(self._http.stop(grace))
            self._http = None
        await asyncio.gather(*stops)
        await self.agent.aclose()
