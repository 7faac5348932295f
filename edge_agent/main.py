"""``edgecloud serve edge --config FILE``: run the edge agent until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio

from edgecloud.lifecycle import configure_logging, run_until_signal
from edge_agent.config import load_edge_config
from edge_agent.server import EdgeServer


def run(config_path: str | None) -> int:
    configure_logging()
    config = load_edge_config(config_path)
    server = EdgeServer(config)
    asyncio.run(run_until_signal([server], config.server.grace_s))
    return 0
