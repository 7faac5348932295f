"""``edgecloud serve gateway --config FILE``: run the gateway until SIGINT/SIGTERM; SIGHUP reloads."""

from __future__ import annotations

import asyncio
import signal

from edgecloud.lifecycle import configure_logging, run_until_signal
from gateway.config import load_gateway_config
from gateway.server import GatewayServer


def run(config_path: str | None) -> int:
    configure_logging()
    config = load_gateway_config(config_path)
    server = GatewayServer(config, config_path)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(server.reload()))
        try:
            await run_until_signal([server], config.server.grace_s)
        finally:
            loop.remove_signal_handler(signal.SIGHUP)

    asyncio.run(main())
    return 0
