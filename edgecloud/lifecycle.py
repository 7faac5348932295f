"""Starting and stopping a server's parts in order, and running until a signal.

Contract:
- ``Lifecycle`` starts steps in order (``await lifecycle.start(name, start, stop)``); when a start
  fails, the steps already started are stopped in reverse and the failure propagates.
  ``stop(grace)`` stops every started step in reverse order, each one even when an earlier one
  failed, and then raises what failed (one error as itself, several as an ``ExceptionGroup``).
  Each step's ``stop`` takes the grace period in seconds. Stopping twice does nothing.
- ``run_until_signal(components, grace_s)`` starts each component (``async start()`` /
  ``async stop(grace)``), waits for SIGINT or SIGTERM (or ``stop_event``), then stops them in
  reverse: the one owner of the signal handlers, and of process-wide settings
  (``edgecloud.allocator``: ``mmap_threshold_bytes``, the 128 KiB of a message server by default;
  ``edgecloud.collector``: what start-up made frozen out of the garbage collector's scans while
  the components serve).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from edgecloud.allocator import THRESHOLD_BYTES, release_large_buffers
from edgecloud.collector import freeze_startup_objects, thaw

__all__ = ["Component", "Lifecycle", "configure_logging", "raise_collected", "run_until_signal"]

log = logging.getLogger(__name__)

Stop = Callable[[float], Awaitable[None]]


class Component(Protocol):
    async def start(self) -> object: ...

    async def stop(self, grace: float) -> None: ...


def raise_collected(errors: list[Exception], what: str) -> None:
    """Raise what a multi-step shutdown collected: nothing, one error as itself, or several as an
    ``ExceptionGroup`` named ``what``."""
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise ExceptionGroup(what, errors)


class Lifecycle:
    def __init__(self, name: str):
        self.name = name
        self._started: list[tuple[str, Stop]] = []

    @property
    def started(self) -> bool:
        return bool(self._started)

    async def start(self, step: str, start: Callable[[], Awaitable[object]], stop: Stop) -> object:
        """Run ``start``; once it succeeded, ``stop`` belongs to the lifecycle. A failed start
        undoes every step before it (with no grace) and re-raises."""
        try:
            result = await start()
        except BaseException:
            try:
                await self.stop(0.0)
            except Exception:
                log.exception("%s: undoing a failed start of %s failed too", self.name, step)
            raise
        self._started.append((step, stop))
        return result

    def add(self, step: str, stop: Stop) -> None:
        """A step with nothing to start, only something to stop (a flag to lower, ...)."""
        self._started.append((step, stop))

    async def stop(self, grace: float) -> None:
        errors: list[Exception] = []
        while self._started:
            step, stop = self._started.pop()
            try:
                await stop(grace)
            except Exception as exc:
                log.error("%s: stopping %s failed: %s: %s", self.name, step, type(exc).__name__, exc)
                exc.add_note(f"while stopping {self.name}: {step}")
                errors.append(exc)
        raise_collected(errors, f"stopping {self.name}")


async def run_until_signal(components: Sequence[Component], grace_s: float, *,
                           on_started: Callable[[], None] | None = None,
                           stop_event: asyncio.Event | None = None,
                           mmap_threshold_bytes: int = THRESHOLD_BYTES) -> None:
    release_large_buffers(mmap_threshold_bytes)  # large messages' memory goes back to the OS once freed
    stop = stop_event or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    lifecycle = Lifecycle("process")
    try:
        for component in components:
            await lifecycle.start(type(component).__name__, component.start, component.stop)
        freeze_startup_objects()  # collections scan what serving allocates, not the whole process
        if on_started is not None:
            on_started()
        await stop.wait()
        log.info("stopping (grace %.1fs)", grace_s)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        thaw()
        await lifecycle.stop(grace_s)


def configure_logging(level: str = "INFO") -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
