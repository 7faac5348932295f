"""``edgecloud serve cloud --config FILE``: run one cloud worker until SIGINT/SIGTERM.

Contract: ``run(config_path)`` loads the config (env prefix ``EDGECLOUD_CLOUD_``; a bad one raises
``ConfigError`` naming the field, for the CLI to print), serves until a signal, stops gracefully
(NOT_SERVING, drain for ``server.grace_s``, close) and returns the exit status. ``serve`` is the
same for a config already loaded; ``edgecloud.lifecycle.run_until_signal`` is the one owner of the
signal handlers. ``ready(worker)`` is called once the worker answers (ports bound). Both apply the
process-wide ``runtime.openmp_wait_policy`` before torch loads.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Callable

from cloud_worker.config import CloudConfig, load_cloud_config
from cloud_worker.worker import CloudWorker
from edgecloud.lifecycle import configure_logging, run_until_signal

log = logging.getLogger(__name__)


def apply_openmp_wait_policy(policy: str) -> None:
    """Export ``OMP_WAIT_POLICY`` for ``runtime.openmp_wait_policy``; OpenMP reads it once, when torch
    loads, so this only takes effect in a process that has not imported torch yet."""
    if policy == "inherit":
        return
    wanted = policy.upper()
    if "torch" in sys.modules:
        if os.environ.get("OMP_WAIT_POLICY", "").upper() != wanted:
            log.warning("runtime.openmp_wait_policy=%s has no effect: torch is already loaded", policy)
        return
    os.environ["OMP_WAIT_POLICY"] = wanted


async def serve(config: CloudConfig, *, ready: Callable[[CloudWorker], None] | None = None,
                stop_event: asyncio.Event | None = None) -> None:
    apply_openmp_wait_policy(config.runtime.openmp_wait_policy)
    worker = CloudWorker(config)
    await run_until_signal(
        [worker],
        config.server.grace_s,
        on_started=(lambda: ready(worker)) if ready is not None else None,
        stop_event=stop_event,
    )


def run(config_path: str | None) -> int:
    configure_logging()
    config = load_cloud_config(config_path)
    asyncio.run(serve(config))
    return 0


__all__ = ["apply_openmp_wait_policy", "run", "serve"]
