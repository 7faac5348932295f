"""A repeatable live run for the tuning tests: open-loop load through a gateway while a fault proxy
plays a pattern of added edge delays; what each request saw is recorded."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from edgecloud.errors import InferenceError
from edgecloud_tools.fault_proxy import FaultProxy
from gateway.client import AsyncClient, RetryPolicy
from gateway.config import GatewayConfig
from gateway.server import GatewayServer
from gateway.tuning.summary import Summary

Pattern = Sequence[tuple[float, float]]
"""``(added edge delay ms, seconds)`` phases."""


@dataclass(frozen=True)
class LiveOutcome:
    started: float
    latency_s: float
    served_by: str | None
    reason: str | None
    error: str | None


@dataclass(frozen=True)
class LiveRun:
    outcomes: list[LiveOutcome]
    stall_s: float
    """The longest stall of a busy machine while the pattern played: how late this process's
    event loop ran, or how much longer than ``UNDELAYED_NORMAL_S`` the slowest request sent while
    no delay was added took (then any route answers in tens of ms, so a much slower one was held
    by scheduling, in whichever process). Stalls delay every request in flight, which no trace
    can predict."""


UNDELAYED_NORMAL_S = 0.3
"""The most a request sent while no delay is added may take on a busy machine without a stall."""


def live_summary(outcomes: list[LiveOutcome], transitions: int) -> Summary:
    """The same figures the simulator reports, from what the clients saw."""
    return Summary.of(((o.latency_s, o.served_by or "error", o.reason == "hedge_won") for o in outcomes),
                      transitions=transitions)


@contextlib.asynccontextmanager
async def running_gateway(edge: str, cloud: str, routing: dict[str, Any]) -> AsyncIterator[GatewayServer]:
    """An in-process gateway with its gRPC and HTTP fronts on free ports."""
    config = GatewayConfig.model_validate({
        "server": {"port": 0, "metrics_port": None, "http_port": 0, "grace_s": 1},
        "edge": {"address": edge}, "cloud": {"workers": [cloud]}, "routing": routing,
    })
    server = GatewayServer(config)
    await server.start()
    try:
        yield server
    finally:
        await server.stop(0.5)


async def _watch_stalls(lags: list[float], tick_s: float = 0.01) -> None:
    while True:
        before = time.monotonic()
        await asyncio.sleep(tick_s)
        lags.append(time.monotonic() - before - tick_s)


async def play(address: str, proxy: FaultProxy, pattern: Pattern, *, rate: float,
               timeout_s: float = 10.0) -> LiveRun:
    """Send ``rate`` requests/s (open loop: arrivals do not wait for answers) for the pattern's
    length, setting the proxy's delay at each phase; the delay is 0 again at the end."""
    outcomes: list[LiveOutcome] = []
    lags: list[float] = [0.0]
    total = sum(seconds for _, seconds in pattern)
    watcher = asyncio.create_task(_watch_stalls(lags))
    try:
        async with AsyncClient(address, timeout_s=timeout_s, retry=RetryPolicy(max_attempts=1)) as client:

            async def one(n: int, t0: float) -> None:
                start = time.monotonic()
                try:
                    answer = await client.embed([f"tuning request {n}"])
                    outcomes.append(LiveOutcome(start - t0, time.monotonic() - start, answer.served_by,
                                                answer.route_reason, None))
                except InferenceError as exc:
                    outcomes.append(LiveOutcome(start - t0, time.monotonic() - start, None, None,
                                                f"{type(exc).__name__}: {exc}"))

            async def faults(t0: float) -> None:
                at = 0.0
                for delay_ms, seconds in pattern:
                    await asyncio.sleep(max(0.0, t0 + at - time.monotonic()))
                    proxy.set_delay(delay_ms / 1000.0)
                    at += seconds

            t0 = time.monotonic()
            fault_task = asyncio.create_task(faults(t0))
            tasks = []
            n = 0
            while (due := t0 + n / rate) < t0 + total:
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                tasks.append(asyncio.create_task(one(n, t0)))
                n += 1
            await asyncio.gather(*tasks)
            await fault_task
    finally:
        proxy.set_delay(0.0)
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
    return LiveRun(outcomes, max(max(lags), _slowest_undelayed(outcomes, pattern) - UNDELAYED_NORMAL_S))


def _slowest_undelayed(outcomes: list[LiveOutcome], pattern: Pattern, settle_s: float = 0.1) -> float:
    """The longest latency of a request sent during a no-added-delay phase, from ``settle_s``
    after the previous phase's delay (when its held replies are out)."""
    windows, at, previous_delay_s = [], 0.0, 0.0
    for delay_ms, seconds in pattern:
        if delay_ms == 0:
            windows.append((at + previous_delay_s + settle_s, at + seconds))
        previous_delay_s = delay_ms / 1000.0
        at += seconds
    return max((o.latency_s for o in outcomes if any(a <= o.started < b for a, b in windows)), default=0.0)
