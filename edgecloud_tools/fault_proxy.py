"""A small asyncio TCP proxy that injects latency, stalls and connection cuts.

Used by the tests, ``bench/gateway.py`` and ``edgecloud demo`` to slow an edge agent down without
``tc netem``. Contract:
- ``set_delay(s)``: every chunk from the upstream server to the client is held ``s`` seconds
  (order kept), so each request's round trip grows by ``s``.
- ``stall()`` / ``unstall()``: hold all traffic in both directions until released.
- ``cut()``: close every open connection and refuse new ones until ``restore()``.
Only loopback addresses are meant to be proxied.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

log = logging.getLogger(__name__)
CHUNK = 65536


class FaultProxy:
    def __init__(self, target_host: str, target_port: int, *, listen_host: str = "127.0.0.1", listen_port: int = 0):
        self.target = (target_host, target_port)
        self.listen = (listen_host, listen_port)
        self.delay_s = 0.0
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._cut = False
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self.port: int | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, *self.listen)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self, grace: float = 0.0) -> None:
        if self._server is not None:
            self._server.close()
            self._close_all()
            await self._server.wait_closed()
            self._server = None
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # faults ----------------------------------------------------------------------------------

    def set_delay(self, seconds: float) -> None:
        self.delay_s = max(0.0, seconds)

    def stall(self) -> None:
        self._flowing.clear()

    def unstall(self) -> None:
        self._flowing.set()

    def cut(self) -> None:
        self._cut = True
        self._close_all()

    def restore(self) -> None:
        self._cut = False
        self.delay_s = 0.0
        self._flowing.set()

    def _close_all(self) -> None:
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()

    # plumbing --------------------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._cut:
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._writers.update((writer, up_writer))
        tasks = [
            asyncio.create_task(self._pump(reader, up_writer, delayed=False)),
            asyncio.create_task(self._pump(up_reader, writer, delayed=True)),
        ]
        self._tasks.update(tasks)
        try:
            try:
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        except asyncio.CancelledError:
            pass  # the proxy is stopping: end this connection quietly
        finally:
            self._tasks.difference_update(tasks)
            for w in (writer, up_writer):
                self._writers.discard(w)
                w.close()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, delayed: bool) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def forward() -> None:
            while True:
                arrived, data = await queue.get()
                if not data:
                    break
                if delayed and self.delay_s > 0:
                    wait = arrived + self.delay_s - time.monotonic()
                    if wait > 0:
                        await asyncio.sleep(wait)
                await self._flowing.wait()
                writer.write(data)
                await writer.drain()
            with contextlib.suppress(OSError):
                if writer.can_write_eof():
                    writer.write_eof()

        sender = asyncio.create_task(forward())
        try:
            while True:
                data = await reader.read(CHUNK)
                await queue.put((time.monotonic(), data))
                if not data:
                    break
            await sender
        except (ConnectionError, OSError):
            pass
        finally:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)


def main(argv: list[str] | None = None) -> int:
    """``edgecloud proxy --target HOST:PORT --port N --delay-ms D``: a standalone fault proxy.

    SIGUSR1 switches the delay on, SIGUSR2 restores a clean link, SIGTERM/SIGINT stop it.
    """
    import argparse
    import signal

    parser = argparse.ArgumentParser(prog="edgecloud proxy")
    parser.add_argument("--target", required=True, help="host:port to forward to")
    parser.add_argument("--port", type=int, required=True, help="port to listen on (loopback)")
    parser.add_argument("--delay-ms", type=float, default=300.0, help="added round-trip delay on SIGUSR1")
    args = parser.parse_args(argv)
    host, port = args.target.rsplit(":", 1)

    async def run() -> None:
        proxy = FaultProxy(host, int(port), listen_port=args.port)
        await proxy.start()
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGUSR1, lambda: proxy.set_delay(args.delay_ms / 1000.0))
        loop.add_signal_handler(signal.SIGUSR2, proxy.restore)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        print(f"fault proxy 127.0.0.1:{proxy.port} -> {args.target}", flush=True)
        await stop.wait()
        await proxy.stop()

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
