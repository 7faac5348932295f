"""``edgecloud serve gateway --config FILE [--processes N]``: run the gateway until SIGINT/SIGTERM;
SIGHUP reloads. With ``--processes N`` (N > 1) a supervisor runs N gateway processes on the same
ports (``gateway.processes``); ``--worker-index`` is how it starts each of them."""

from __future__ import annotations

import asyncio
import signal
import sys

from edgecloud.lifecycle import configure_logging, run_until_signal
from gateway.config import load_gateway_config
from gateway.server import GatewayServer


def run(config_path: str | None, *, processes: int = 1, worker_index: int | None = None) -> int:
    configure_logging()
    config = load_gateway_config(config_path)
    if processes > 1:
        from gateway.processes import ProcessesError, Supervisor

        if config_path is None:
            print("edgecloud serve gateway: --processes needs --config (every worker reads the file)", file=sys.stderr)
            return 2
        try:
            supervisor = Supervisor(config_path, config, processes)
        except ProcessesError as exc:
            print(f"edgecloud serve gateway: {exc}", file=sys.stderr)
            return 2
        return asyncio.run(supervisor.run())
    transform = None
    if worker_index is not None:
        from gateway.processes import die_with_supervisor, worker_config

        die_with_supervisor()
        transform = lambda loaded: worker_config(loaded, worker_index)  # noqa: E731
        config = transform(config)
    server = GatewayServer(config, config_path, transform=transform)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(server.reload()))
        try:
            await run_until_signal([server], config.server.grace_s)
        finally:
            loop.remove_signal_handler(signal.SIGHUP)

    asyncio.run(main())
    return 0
