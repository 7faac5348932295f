"""An operator port for Prometheus: ``GET /metrics`` on an HTTP listener of its own.

Contract: ``MetricsServer(exposition, host, port).start()`` listens and returns the bound port
(port 0 picks a free one); ``GET /metrics`` answers ``exposition()`` (``(body, content_type)``);
``stop()`` closes the listener. It installs no signal handlers. Metrics name backends and
internals an API client has no business seeing, so they never share the public fronts' port.
A port already taken fails ``start()`` with ``OSError`` naming the address.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

__all__ = ["MetricsServer"]


class MetricsServer:
    def __init__(self, exposition: Callable[[], tuple[bytes, str]], host: str = "127.0.0.1", port: int = 0):
        self._exposition = exposition
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
        except OSError as exc:
            await runner.cleanup()
            raise OSError(exc.errno, f"metrics port {self._host}:{self._port}: {exc.strerror}") from exc
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        return self.port

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        body, content_type = self._exposition()
        return web.Response(body=body, headers={"Content-Type": content_type})
