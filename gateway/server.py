"""The gateway process: its dataplane behind the shared fronts, and config hot reload.

Contract: ``GatewayServer.start()`` starts the dataplane (cache, probes), then the gRPC front (and
the HTTP front when ``server.http_port`` is set) with the shared lifecycle
(``edgecloud.server.InferenceServer``); ``grpc_port`` / ``http_port`` are the bound ports. Both
fronts authenticate with the configured API keys, answer with ``served_by`` / ``route_reason``
parameters (and ``X-Edgecloud-*`` headers over HTTP), and the HTTP front adds
``/v2/debug/latency-trace``. Prometheus metrics are served on ``server.metrics_port`` (8002 by
default), an operator port apart from the public fronts, never on them. ``reload()`` re-reads the
config file: a valid file is applied without dropping in-flight requests; an invalid one is
refused, the old config stays, and the reason is logged and returned. The file is watched every ``reload_poll_ms`` (SIGHUP reloads at
once, see ``gateway.main``). ``stop(grace)``: NOT_SERVING, drain, then close the backends.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path

from aiohttp import web

from edgecloud.config import ConfigError
from edgecloud.server import InferenceServer, Resource, RestOptions
from gateway.config import GatewayConfig, load_gateway_config
from gateway.dataplane import GatewayDataplane
from gateway.openai_api.front import OpenAIFront
from gateway.where_served import ROUTE_REASON_HEADER, SERVED_BY_HEADER, where_served_headers

__all__ = ["GatewayServer", "ROUTE_REASON_HEADER", "SERVED_BY_HEADER", "where_served_headers"]

log = logging.getLogger(__name__)

def _latency_trace_route(dataplane: GatewayDataplane):
    async def handler(request: web.Request) -> web.Response:
        """``GET /v2/debug/latency-trace?since=T[&kind=ttft]``: per-backend samples for ``edgecloud
        tune record``: request round trips (``rtt``, the default) or streams' time to first token
        (``ttft``), both as ``rtt_ms``."""
        try:
            since = float(request.query.get("since", "-inf"))
        except ValueError:
            return web.json_response({"error": "since: must be a number"}, status=400)
        kind = request.query.get("kind", "rtt")
        monitors = {"rtt": dataplane.monitor, "ttft": dataplane.ttft}
        if kind not in monitors:
            return web.json_response({"error": "kind: must be rtt or ttft"}, status=400)
        monitor = monitors[kind]
        samples = [{"t": t, "backend": "edge" if backend == "edge" else "cloud", "rtt_ms": rtt * 1000.0,
                    "probe": probe} for t, backend, rtt, probe in monitor.trace.since(since)]
        return web.json_response({"now": monitor.clock.now(), "kind": kind,
                                  "threshold_ms": dataplane.config.routing.threshold_ms, "samples": samples})

    def add(app: web.Application) -> None:
        app.router.add_get("/v2/debug/latency-trace", handler)

    return add


class _ReloadedAuth:
    """The fronts' ``Authenticate``: the API keys a reload installed last (``dataplane.auth``)."""

    def __init__(self, dataplane: GatewayDataplane):
        self._dataplane = dataplane

    @property
    def required(self) -> bool:
        """False while auth is off: the gRPC front then reads no credentials at all."""
        return self._dataplane.auth.enabled

    def __call__(self, headers: Mapping[str, str]) -> str:
        return self._dataplane.auth.tenant_for(headers)


class GatewayServer(InferenceServer):
    def __init__(self, config: GatewayConfig, config_path: str | Path | None = None, *,
                 dataplane: GatewayDataplane | None = None,
                 transform: Callable[[GatewayConfig], GatewayConfig] | None = None):
        """``transform`` is applied to the file's config on every reload, as it was to ``config``
        (a worker of ``--processes`` keeps its own metrics port)."""
        self._transform = transform or (lambda loaded: loaded)
        self.config = config
        self.config_path = Path(config_path) if config_path else None
        self.dataplane: GatewayDataplane = dataplane or GatewayDataplane(config)
        self._watch_task: asyncio.Task | None = None
        self._mtime: float | None = None
        resources = [Resource("gateway dataplane", self.dataplane.start, self.dataplane.stop)]
        if self.config_path is not None:
            resources.append(Resource("config watch", self._start_watch, self._stop_watch))
        self.openai = OpenAIFront(self.dataplane, max_body_bytes=config.server.max_message_bytes,
                                  body_timeout_s=config.server.body_read_timeout_ms / 1000.0)
        rest = RestOptions(response_headers=where_served_headers, extra_routes=self._add_routes)
        super().__init__("gateway", self.dataplane, config.server, resources=resources,
                         authenticate=_ReloadedAuth(self.dataplane), rest=rest, metrics=self.dataplane.metrics.exposition)

    def _add_routes(self, app: web.Application) -> None:
        _latency_trace_route(self.dataplane)(app)
        if self.config.openai.enabled:
            self.openai.add_routes(app)


    @property
    def grpc_port(self) -> int | None:
        return self.port

    async def start(self) -> int:
        port = await super().start()
        server = self.config.server
        edge = self.config.edge
        discovery = self.config.cloud.discovery
        log.info("gateway listening: grpc %s:%s%s; edge %s; cloud workers %s%s", server.host, port,
                 f", http {server.host}:{self.http_port}" if self.http_port else "",
                 "embedded" if edge.embedded is not None else edge.address or "none",
                 ", ".join(f"{w.name} {w.address}" for w in self.config.cloud.named_workers()) or "none",
                 f"; discovering workers at {discovery.dns} every {discovery.refresh_ms:.0f} ms"
                 if discovery is not None else "")
        return port

    # hot reload ------------------------------------------------------------------------------

    async def _start_watch(self) -> None:
        self._mtime = self._stat()
        self._watch_task = asyncio.create_task(self._watch(), name="gateway-config-watch")

    async def _stop_watch(self) -> None:
        task, self._watch_task = self._watch_task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

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
            config = self._transform(load_gateway_config(self.config_path))
        except ConfigError as exc:
            self.dataplane.metrics.reloads.labels("refused").inc()
            log.error("config reload refused, keeping the running config: %s", exc)
            return str(exc)
        if config.server != self.config.server:
            log.warning("config reload: server settings (ports, limits of the fronts) change only on restart")
        await self.dataplane.apply_config(config)
        self.config = config
        self.dataplane.metrics.reloads.labels("applied").inc()
        log.info("config reloaded from %s (threshold %.0f ms)", self.config_path, config.routing.threshold_ms)
        return None
