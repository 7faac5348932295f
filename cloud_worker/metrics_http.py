"""The Prometheus ``/metrics`` endpoint (aiohttp).

Contract: ``MetricsServer(metrics, host, port).start()`` listens and returns the bound port (port 0
picks a free one); ``GET /metrics`` answers the worker's own registry in the text exposition
format; ``stop()`` closes the listener. It installs no signal handlers.
"""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from cloud_worker.metrics import WorkerMetrics


class MetricsServer:
    def __init__(self, metrics: WorkerMetrics, host: str = "127.0.0.1", port: int = 0):
        self._metrics = metrics
        self._host = host
        self._port = port
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    async def start(self) -> int:
        app = web.Application()
        app.router.add_get("/metrics", self._handle)
        runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self._host, self._port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        return self.port

    async def stop(self, grace: float = 0.0) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        return web.Response(body=self._metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})


__all__ = ["MetricsServer"]
