"""Running servers until a signal: the one owner of SIGINT/SIGTERM.

Contract: ``run_until_signal(components, grace_s)`` starts each component in order (each has
``async start()`` and ``async stop(grace)``), waits for SIGINT or SIGTERM (or ``stop_event``), then
stops them in reverse order; a failure stopping one is logged and the others still stop.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, Sequence
from typing import Protocol

log = logging.getLogger(__name__)


class Component(Protocol):
    async def start(self) -> object: ...

    async def stop(self, grace: float) -> None: ...


async def stop_all(components: Sequence[Component], grace_s: float) -> None:
    for component in reversed(components):
        try:
            await component.stop(grace_s)
        except Exception:
            log.exception("error while stopping %s", type(component).__name__)


async def run_until_signal(components: Sequence[Component], grace_s: float, *,
                           on_started: Callable[[], None] | None = None,
                           stop_event: asyncio.Event | None = None) -> None:
    stop = stop_event or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    started: list[Component] = []
    try:
        for component in components:
            await component.start()
            started.append(component)
        if on_started is not None:
            on_started()
        await stop.wait()
        log.info("stopping (grace %.1fs)", grace_s)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await stop_all(started, grace_s)


def configure_logging(level: str = "INFO") -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
