"""The gateway process: core + gRPC front (+ HTTP front) + config hot reload.

Contract: ``GatewayServer.start()`` starts the core's probes and the fronts; ``grpc_port`` /
``http_port`` are the bound ports. ``reload()`` re-reads the config file: a valid file is applied
without dropping in-flight requests; an invalid one is refused, the old config stays, and the
reason is logged and returned. ``stop(grace)`` reports NOT_SERVING, drains, then closes upstreams.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

from edgecloud.config import ConfigError
from gateway.config import GatewayConfig, load_gateway_config
from gateway.core import GatewayCore
from gateway.grpc_front import gateway_grpc_server

log = logging.getLogger(__name__)


class GatewayServer:
    def __init__(self, config: GatewayConfig, config_path: str | Path | None = None, *, core: GatewayCore | None = None):
        self.config = config
        self.config_path = Path(config_path) if config_path else None
        self.core = core or GatewayCore(config)
        self._grpc = None
        self._http = None
        self.grpc_port: int | None = None
        self.http_port: int | None = None
        self._watch_task: asyncio.Task | None = None
        self._mtime: float | None = None

    async def start(self) -> int:
        try:
            return await self._start()
        except BaseException:
            await self.stop(0)
            raise

    async def _start(self) -> int:
        await self.core.start()
        server = self.config.server
        self._grpc = gateway_grpc_server(self.core, host=server.host, port=server.port,
                                         max_message_bytes=server.max_message_bytes,
                                         credentials=server.tls.grpc_credentials() if server.tls else None)
        self.grpc_port = await self._grpc.start()
        if server.http_port is not None:
            from gateway.http_front import gateway_rest_front

            self._http = gateway_rest_front(self.core, host=server.host, port=server.http_port,
                                            max_body_bytes=server.max_message_bytes,
                                            ssl_context=server.tls.ssl_context() if server.tls else None)
            self.http_port = await self._http.start()
        if self.config_path is not None:
            self._mtime = self._stat()
            self._watch_task = asyncio.create_task(self._watch())
        log.info("gateway listening: grpc %s:%s%s; edge %s; cloud workers %s", server.host, self.grpc_port,
                 f", http {server.host}:{self.http_port}" if self.http_port else "",
                 self.config.edge.address or "none", ", ".join(self.config.cloud.workers) or "none")
        return self.grpc_port

    def _stat(self) -> float | None:
        try:
            return os.stat(self.config_path).st_mtime
        except OSError:
            return None

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.config.reload_poll_ms / 1000.0)
            mtime = self._stat()
            if mtime is not None and mtime != self._mtime:
                self._mtime = mtime
                await self.reload()

    async def reload(self) -> str | None:
        """Apply the config file again; returns None on success, else why it was refused."""
        if self.config_path is None:
            return "no config file to reload"
        try:
            config = load_gateway_config(self.config_path)
        except ConfigError as exc:
            self.core.metrics.reloads.labels("refused").inc()
            log.error("config reload refused, keeping the running config: %s", exc)
            return str(exc)
        if config.server != self.config.server:
            log.warning("config reload: server settings (ports, limits of the fronts) change only on restart")
        await self.core.apply_config(config)
        self.config = config
        self.core.metrics.reloads.labels("applied").inc()
        log.info("config reloaded from %s (threshold %.0f ms)", self.config_path, config.routing.threshold_ms)
        return None

    async def stop(self, grace: float | None = None) -> None:
        grace = self.config.server.grace_s if grace is None else grace
        if self._watch_task is not None:
            self._watch_task.cancel()
            await asyncio.gather(self._watch_task, return_exceptions=True)
        stops = []
        if self._grpc is not None:
            stops.append(self._grpc.stop(grace))
        if self._http is not None:
            stops.append(self._http.stop(grace))
        await asyncio.gather(*stops, return_exceptions=True)
        await self.core.stop()
