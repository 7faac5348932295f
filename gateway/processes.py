"""``edgecloud serve gateway --processes N``: N gateway processes on one set of ports.

One Python process serves on one core (one event loop; the gRPC C-core adds little parallelism
for a Python servicer). N processes that share nothing but Redis use N cores.

Contract:
- The supervisor (this module's ``Supervisor``) starts N workers, each the ordinary gateway
  (``edgecloud serve gateway --config F --worker-index i``) with ``server.reuse_port`` on, so
  every worker listens on the configured gRPC and HTTP ports and the kernel spreads new
  connections over them. Worker ``i`` serves its own metrics on ``metrics_port + 1 + i``
  (``worker_config``); the supervisor serves all of them on ``metrics_port``, each sample labelled
  ``worker="i"`` (one scrape target, per-worker series: ``sum by`` gives the gateway's totals).
- ``server.port`` and ``server.metrics_port`` must be fixed ports (not 0, not unset): N processes
  cannot agree on a port picked at random, and the metrics need a port to aggregate on.
- SIGTERM/SIGINT: every worker gets SIGTERM and drains (``server.grace_s``); the supervisor exits
  when they have. SIGHUP is passed on: every worker reloads the same file. A worker that exits on
  its own is started again after ``restart_delay_s`` (logged); the others keep serving meanwhile.
  A supervisor that dies without stopping them (SIGKILL) takes its workers with it: each is
  started with a parent-death signal (Linux ``PR_SET_PDEATHSIG``, SIGTERM), so none is orphaned.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from gateway.config import GatewayConfig

__all__ = ["ProcessesError", "Supervisor", "aggregate_metrics", "check_processes", "die_with_supervisor",
           "worker_config"]

log = logging.getLogger(__name__)

class ProcessesError(ValueError):
    """The config cannot run as that many processes (the message names the setting)."""

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?(\s.*)$")

def check_processes(config: GatewayConfig, processes: int) -> None:
    """Raise ``ProcessesError`` when ``config`` cannot run as ``processes`` workers."""
    if processes < 1:
        raise ProcessesError(f"--processes must be at least 1, not {processes}")
    server = config.server
    if processes > 1:
        if not server.port:
            raise ProcessesError("server.port: several processes need a fixed port (0 picks one per process)")
        if server.http_port == 0:
            raise ProcessesError("server.http_port: several processes need a fixed port (0 picks one per process)")
        if not server.metrics_port:
            raise ProcessesError("server.metrics_port: several processes need a fixed metrics port (each worker "
                              "serves on metrics_port + 1 + i; the supervisor aggregates them on metrics_port)")
        if server.metrics_port + processes > 65535:
            raise ProcessesError(f"server.metrics_port: {processes} workers need ports up to metrics_port + {processes}")

def worker_config(config: GatewayConfig, index: int) -> GatewayConfig:
    """Worker ``index``'s config: the shared ports with ``reuse_port``, its own metrics port."""
    server = config.server
    metrics_port = server.metrics_port + 1 + index if server.metrics_port else server.metrics_port
    return config.model_copy(update={"server": server.model_copy(update={"reuse_port": True,
                                                                          "metrics_port": metrics_port})})

def aggregate_metrics(expositions: list[tuple[int, str]]) -> str:
    """Prometheus text expositions of the workers as one, every sample labelled ``worker``; each
    family's ``# HELP``/``# TYPE`` lines appear once, before its samples."""
    families: dict[str, list[str]] = {}
    headers: dict[str, list[str]] = {}
    for worker, text in expositions:
        family = ""
        for line in text.splitlines():
            if line.startswith("# HELP ") or line.startswith("# TYPE "):
                family = line.split()[2]
                if line not in headers.setdefault(family, []):
                    headers[family].append(line)
                families.setdefault(family, [])
                continue
            if not line or line.startswith("#"):
                continue
            match = _SAMPLE.match(line)
            if match is None:
                continue
            name, _, labels, rest = match.groups()
            labelled = f'worker="{worker}",{labels}' if labels else f'worker="{worker}"'
            families.setdefault(family or name, []).append(f"{name}{{{labelled}}}{rest}")
    out: list[str] = []
    for family, samples in families.items():
        out.extend(headers.get(family, []))
        out.extend(samples)
    return "\n".join(out) + "\n"


def die_with_supervisor() -> None:
    """Called by a worker at start: SIGTERM when its supervisor dies (Linux ``PR_SET_PDEATHSIG``;
    elsewhere nothing). A supervisor already gone by then (the worker was re-parented) ends it."""
    parent = os.getppid()
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if parent == 1 or os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGTERM)


class Supervisor:
    def __init__(self, config_path: str, config: GatewayConfig, processes: int, *, restart_delay_s: float = 1.0):
        check_processes(config, processes)
        self.config_path = str(Path(config_path).resolve())
        self.config = config
        self.processes = processes
        self.restart_delay_s = restart_delay_s
        self._workers: dict[int, subprocess.Popen] = {}
        self._stopping = False

    def _spawn(self, index: int) -> subprocess.Popen:
        command = [sys.executable, "-m", "edgecloud_tools", "serve", "gateway", "--config", self.config_path,
                   "--worker-index", str(index)]
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL)
        log.info("gateway worker %d started (pid %d)", index, proc.pid)
        return proc

    def _signal_all(self, sig: int) -> None:
        for proc in self._workers.values():
            if proc.poll() is None:
                proc.send_signal(sig)

    async def _scrape(self, session, index: int) -> tuple[int, str]:
        import aiohttp

        host = self.config.server.host if self.config.server.host not in ("0.0.0.0", "::") else "127.0.0.1"
        url = f"http://{host}:{self.config.server.metrics_port + 1 + index}/metrics"
        try:
            async with session.get(url, timeout=aiohttp.ClientTimeout(total=5)) as response:
                return index, await response.text() if response.status == 200 else ""
        except (aiohttp.ClientError, asyncio.TimeoutError):
            return index, ""  # a worker starting or restarting: no samples from it this scrape

    async def _metrics(self, request):
        from aiohttp import web

        import aiohttp

        async with aiohttp.ClientSession() as session:
            expositions = await asyncio.gather(*(self._scrape(session, i) for i in range(self.processes)))
        return web.Response(text=aggregate_metrics(list(expositions)), content_type="text/plain",
                            charset="utf-8", headers={"X-Edgecloud-Workers": str(self.processes)})

    async def run(self) -> int:
        from aiohttp import web

        loop = asyncio.get_running_loop()
        stop = asyncio.Event()

        def on_stop() -> None:
            self._stopping = True
            stop.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_stop)
        loop.add_signal_handler(signal.SIGHUP, lambda: self._signal_all(signal.SIGHUP))
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.config.server.host, self.config.server.metrics_port)
        await site.start()
        log.info("gateway: %d worker processes on grpc %s:%s%s; aggregated metrics on :%d", self.processes,
                 self.config.server.host, self.config.server.port,
                 f", http :{self.config.server.http_port}" if self.config.server.http_port else "",
                 self.config.server.metrics_port)
        try:
            for index in range(self.processes):
                self._workers[index] = self._spawn(index)
            while not stop.is_set():
                for index, proc in list(self._workers.items()):
                    if proc.poll() is not None and not self._stopping:
                        log.error("gateway worker %d (pid %d) exited with %s; starting it again in %.1f s",
                                  index, proc.pid, proc.returncode, self.restart_delay_s)
                        await asyncio.sleep(self.restart_delay_s)
                        if not self._stopping:
                            self._workers[index] = self._spawn(index)
                try:
                    await asyncio.wait_for(stop.wait(), 0.2)
                except asyncio.TimeoutError:
                    pass
        finally:
            self._stopping = True
            self._signal_all(signal.SIGTERM)
            deadline = loop.time() + self.config.server.grace_s + 10
            for proc in self._workers.values():
                while proc.poll() is None and loop.time() < deadline:
                    await asyncio.sleep(0.05)
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            await runner.cleanup()
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
        failed = [proc.returncode for proc in self._workers.values() if proc.returncode not in (0, -signal.SIGTERM)]
        return 1 if failed else 0
