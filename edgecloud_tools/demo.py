"""``edgecloud demo``: watch traffic move edge -> cloud -> edge while the edge is slowed down.

With ``--streams`` the traffic is token streams (SmolLM2 chat through the SDK's ``chat()``, greedy):
each outcome's latency is its time to the first token and its backend the side that produced it,
routed by the gateway on the same threshold (first-token hedging moves new streams to the cloud
while every chunk from the edge is held back).

Contract: ``run_demo(options)`` drives an open-loop workload (``rate`` requests/s for
``duration_s``; a ``repeat_ratio`` share of the sentences come from a small popular set, so a
gateway cache hits) through a gateway with the SDK, and makes the edge slow for the middle third
of the run through a fault proxy in front of the edge agent: ``+slow_ms`` on every answer, then a
clean link again. It shows live, on a terminal (a ``rich`` live panel that fits any width), where requests are served
(``served_by``: edge, cloud or cache), the latency per backend against the gateway's threshold,
the gateway's own view of the edge RTT and the cache hit ratio; and it returns a ``DemoResult``
whose ``summary()`` is the closing table: per phase, requests and shares by backend, latency and
failures, and the path the traffic took (e.g. ``edge -> cloud -> edge``).

By default (``start_stack``) it starts its own stack on free ports with ``edgecloud_tools.stack``: an
edge agent, a cloud worker, an ``edgecloud proxy`` process in front of the edge (its own process,
so a busy demo client never delays what the gateway sees of the edge) and a gateway whose edge
address is the proxy (result cache on when the gateway supports one); all are stopped at the end,
children by pid. Against a running stack, give the gateway's address and either the
edge agent's address and a port for the proxy (the gateway's ``edge.address`` must be that
proxy), or the pid of a running ``edgecloud proxy`` (SIGUSR1 slows it, SIGUSR2 restores it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import random
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

__all__ = ["DemoOptions", "DemoResult", "Outcome", "PhaseStats", "add_arguments", "run", "run_demo", "sentences"]

BACKENDS = ("edge", "cloud", "cache")
PHASES = ("edge fast", "edge slowed", "edge recovered")
POPULAR = [
    "How do I reset my password?", "What are your opening hours?", "Where is my order?",
    "Can I change my delivery address?", "How do I cancel my subscription?", "Is there a student discount?",
    "Do you ship internationally?", "How long does a refund take?", "Can I talk to a human?",
    "What payment methods do you accept?", "How do I update my billing details?", "Where can I find my invoice?",
    "Is my data stored in the EU?", "How do I enable two-factor authentication?", "Why was my card declined?",
    "Can I return an opened item?", "How do I track my parcel?", "What is your warranty policy?",
    "Do you have a mobile app?", "How do I delete my account?",
]
_SUBJECTS = ["the invoice", "my parcel", "the new plan", "a refund", "the mobile app", "my account", "the warranty",
             "a discount code", "the delivery slot", "my subscription", "the price", "a gift card"]
_ASKS = ["Can you explain", "I have a question about", "Something is wrong with", "Please help me with",
         "I would like to know more about", "Why did nothing happen with", "How long will it take to sort"]


def sentences(repeat_ratio: float, rng: random.Random) -> Callable[[int], str]:
    """Sentence ``n`` of the workload: from ``POPULAR`` with probability ``repeat_ratio``, else new."""
    def pick(n: int) -> str:
        if rng.random() < repeat_ratio:
            return rng.choice(POPULAR)
        return f"{rng.choice(_ASKS)} {rng.choice(_SUBJECTS)}? (ticket {n})"
    return pick


# what happened ----------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Outcome:
    at: float
    """Seconds from the start of the run when the request was sent."""
    latency_s: float
    served_by: str | None
    """edge | cloud | cache; None when the request failed."""
    phase: int
    """Index into ``PHASES``."""
    error: str | None = None


def _pct(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


def _ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value * 1000:.0f}"


@dataclass(frozen=True)
class PhaseStats:
    name: str
    start_s: float
    end_s: float
    requests: int
    served: dict[str, int]
    failed: int
    latencies_s: tuple[float, ...]

    @property
    def dominant(self) -> str | None:
        """The backend that routed most of this phase's cache misses (edge or cloud)."""
        routed = {b: self.served.get(b, 0) for b in ("edge", "cloud")}
        return max(routed, key=lambda b: routed[b]) if any(routed.values()) else None

    def share(self, backend: str) -> float:
        return self.served.get(backend, 0) / self.requests if self.requests else 0.0


@dataclass
class DemoResult:
    duration_s: float
    phase_bounds: tuple[tuple[float, float], ...]
    outcomes: list[Outcome] = field(default_factory=list)
    threshold_ms: float | None = None
    bucket_s: float = 0.5

    @property
    def failed(self) -> int:
        return sum(1 for o in self.outcomes if o.error is not None)

    def phases(self) -> list[PhaseStats]:
        stats = []
        for index, (name, (start, end)) in enumerate(zip(PHASES, self.phase_bounds, strict=True)):
            mine = [o for o in self.outcomes if o.phase == index]
            served = Counter(o.served_by for o in mine if o.served_by is not None)
            stats.append(PhaseStats(name, start, end, len(mine), dict(served), sum(1 for o in mine if o.error),
                                    tuple(o.latency_s for o in mine if o.error is None)))
        return stats

    def timeline(self) -> list[str | None]:
        """Per ``bucket_s`` of the run: the backend that routed most cache misses sent then (None: none)."""
        buckets: list[Counter[str]] = [Counter() for _ in range(max(1, math.ceil(self.duration_s / self.bucket_s)))]
        for o in self.outcomes:
            if o.served_by in ("edge", "cloud"):
                buckets[min(len(buckets) - 1, int(o.at / self.bucket_s))][o.served_by] += 1
        return [b.most_common(1)[0][0] if b else None for b in buckets]

    def path(self, min_run: int = 2) -> list[str]:
        """Where routed traffic went, in order: runs of at least ``min_run`` buckets, repeats merged."""
        runs: list[list[Any]] = []
        for backend in self.timeline():
            if backend is None:
                continue
            if runs and runs[-1][0] == backend:
                runs[-1][1] += 1
            else:
                runs.append([backend, 1])
        path: list[str] = []
        for backend, length in runs:
            if length >= min_run and (not path or path[-1] != backend):
                path.append(backend)
        return path

    def summary(self) -> str:
        """The closing table; every line fits 80 columns."""
        lines = [f"summary: {self.duration_s:.0f} s, {len(self.outcomes)} requests, {self.failed} failed"
                 + (f", threshold {self.threshold_ms:g} ms" if self.threshold_ms else "") + "; latencies in ms"]
        header = f"{'phase':<15}{'time':>8}{'reqs':>6}{'edge':>6}{'cloud':>6}{'cache':>6}" \
                 f"{'p50':>6}{'p95':>6}{'p99':>6}{'failed':>7}  mostly"
        lines.append(header)
        for p in self.phases():
            lat = list(p.latencies_s)
            lines.append(f"{p.name:<15}{f'{p.start_s:.0f}-{p.end_s:.0f} s':>8}{p.requests:>6}"
                         f"{p.share('edge'):>6.0%}{p.share('cloud'):>6.0%}{p.share('cache'):>6.0%}"
                         f"{_ms(_pct(lat, .5)):>6}{_ms(_pct(lat, .95)):>6}{_ms(_pct(lat, .99)):>6}{p.failed:>7}"
                         f"  {p.dominant or '-'}")
        lines.append("latency p50/p95/p99 by backend:")
        for backend in BACKENDS:
            lat = [o.latency_s for o in self.outcomes if o.served_by == backend]
            if lat:
                lines.append(f"  {backend:<6}{_ms(_pct(lat, .5))}/{_ms(_pct(lat, .95))}/{_ms(_pct(lat, .99))} ms "
                             f"({len(lat)} requests)")
        hits = sum(1 for o in self.outcomes if o.served_by == "cache")
        answered = sum(1 for o in self.outcomes if o.served_by is not None)
        lines.append(f"cache hit ratio: {hits / answered:.0%}" if answered else "cache hit ratio: -")
        lines.append("traffic moved: " + (" -> ".join(self.path()) or "-"))
        return "\n".join(lines)


# live view ---------------------------------------------------------------------------------------

class LiveView:
    """On a terminal: a live panel redrawn in place (``rich``), every line cut to the terminal's
    width (the where-served timeline shows its latest part), so it never scrolls. Elsewhere: one
    plain line per phase change. ``close()`` leaves the last panel on screen."""

    def __init__(self, out: TextIO, live: bool, window_s: float = 2.0, width: int | None = None):
        self.out = out
        self.live = live
        self.window_s = window_s
        self._phase = -1
        self._live = None
        if live:
            from rich.console import Console
            from rich.live import Live

            self._console = Console(file=out, width=width, force_terminal=True, highlight=False)
            self._live = Live(console=self._console, auto_refresh=False, transient=False)
            self._live.start()

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    def draw(self, result: DemoResult, now_s: float, phase: int, slow_ms: float, gateway_edge: str) -> None:
        if not self.live:
            if phase != self._phase:
                self._phase = phase
                extra = f" (+{slow_ms:g} ms on the edge)" if phase == 1 else ""
                print(f"[{now_s:5.1f} s] {PHASES[phase]}{extra}", file=self.out, flush=True)
            return
        from rich.table import Table
        from rich.text import Text

        recent = [o for o in result.outcomes if o.at >= now_s - self.window_s]
        counts = Counter(o.served_by or "failed" for o in recent)
        total = max(1, len(recent))
        shown = result.timeline()[: int(now_s / result.bucket_s)]
        label_width = 16
        room = max(8, self._console.width - label_width - 2)
        marks = "".join({"edge": "E", "cloud": "C", None: "."}[b] for b in shown)[-room:]
        parts = []
        for backend in BACKENDS:
            lat = [o.latency_s for o in recent if o.served_by == backend]
            parts.append(f"{backend} {_ms(_pct(lat, .5))}/{_ms(_pct(lat, .95))} ms")
        latency = "   ".join(parts)
        threshold = f"   threshold {result.threshold_ms:g} ms" if result.threshold_ms else ""
        hits = [o for o in result.outcomes if o.served_by is not None]
        rows = [
            ("edgecloud demo", f"{now_s:5.1f} / {result.duration_s:.0f} s   phase: {PHASES[phase]}"
             + (f" (+{slow_ms:g} ms)" if phase == 1 else "")),
            ("where served", marks or "-"),
            ("", f"E edge, C cloud: most routed requests per {result.bucket_s:.2g} s"),
            (f"last {self.window_s:.0f} s", "   ".join(f"{b} {counts.get(b, 0) / total:4.0%}" for b in BACKENDS)
             + f"   failed {result.failed}"),
            ("latency p50/p95", latency + threshold),
            ("gateway sees", gateway_edge),
            ("cache hits", f"{counts.get('cache', 0) / total:4.0%} last {self.window_s:.0f} s, "
                           f"{sum(1 for o in hits if o.served_by == 'cache') / max(1, len(hits)):4.0%} overall"),
        ]
        grid = Table.grid(padding=(0, 1), expand=True)
        grid.add_column(width=label_width, min_width=label_width, no_wrap=True)
        grid.add_column(no_wrap=True, overflow="ellipsis", ratio=1)
        for label, value in rows:
            grid.add_row(Text(label, style="bold"), Text(value, no_wrap=True, overflow="ellipsis"))
        self._live.update(grid, refresh=True)


class GatewayEdgeView:
    """The gateway's own edge RTTs (``/v2/debug/latency-trace``; ``kind`` ``ttft``: the edge's time
    to first token), as p95 over the last 2 s."""

    def __init__(self, gateway_http: str | None, window_s: float = 2.0, kind: str = "rtt"):
        self.gateway_http = gateway_http
        self.window_s = window_s
        self.kind = kind
        self._label = "edge TTFT" if kind == "ttft" else "edge RTT"
        self.threshold_ms: float | None = None
        self._since = math.inf
        self._samples: list[tuple[float, float]] = []

    async def refresh(self) -> str:
        if self.gateway_http is None:
            return "(no --gateway-http: not shown)"
        from gateway.tuning.record import RecordError, fetch_json, trace_url

        try:
            payload = await asyncio.to_thread(fetch_json, trace_url(self.gateway_http, self._since, self.kind), 2.0)
        except RecordError as exc:
            return f"(latency trace unavailable: {exc})"
        self.threshold_ms = payload.get("threshold_ms", self.threshold_ms)
        now = float(payload["now"])
        if self._since == math.inf:
            self._since = now
        for s in payload["samples"]:
            self._since = max(self._since, s["t"])
            if s["backend"] == "edge":
                self._samples.append((s["t"], s["rtt_ms"]))
        self._samples = [(t, v) for t, v in self._samples if t >= now - self.window_s]
        if not self._samples:
            return f"{self._label}: no samples in the last 2 s"
        p95 = _pct([v for _, v in self._samples], 0.95)
        if self.threshold_ms is None:
            return f"{self._label} p95 {p95:.0f} ms"
        verdict = "over the threshold: the cloud serves" if p95 > self.threshold_ms else "under the threshold"
        return f"{self._label} p95 {p95:.0f} ms vs threshold {self.threshold_ms:g} ms: {verdict}"


# faults ------------------------------------------------------------------------------------------

class EdgeFault:
    """Slows the edge and restores it: an in-process ``FaultProxy`` or a proxy process's signals."""

    def __init__(self, proxy=None, proxy_pid: int | None = None):
        self.proxy = proxy
        self.proxy_pid = proxy_pid

    def slow(self, seconds: float) -> None:
        if self.proxy is not None:
            self.proxy.set_delay(seconds)
        elif self.proxy_pid is not None:
            os.kill(self.proxy_pid, signal.SIGUSR1)

    def restore(self) -> None:
        if self.proxy is not None:
            self.proxy.set_delay(0.0)
        elif self.proxy_pid is not None:
            os.kill(self.proxy_pid, signal.SIGUSR2)


# the stack ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Margins:
    """Load, slowdown and threshold that keep each phase what it says on a busy 2-core box."""
    rate: float
    slow_ms: float
    threshold_ms: float


EMBEDDING_MARGINS = Margins(rate=15.0, slow_ms=500.0, threshold_ms=300.0)
"""The demo's stack and load put the healthy edge's p95 at 185-251 ms there."""
STREAM_MARGINS = Margins(rate=2.0, slow_ms=2500.0, threshold_ms=1000.0)
"""Wider: all five processes share the cores, the edge's own TTFT reaches ~350 ms (on a slower
2-core CPU, a Zen 1-class one: p50 520-570 ms, p95 770 ms) and a loaded cloud's torch generation
0.9-2 s, so a +500 ms edge would race the cloud (winning half its hedges) and a 300 or 500 ms
threshold sit inside the fast edge's noise (at 500 ms the slower CPU's recovered phase stayed
mostly on the cloud). The slowed edge's +2.5 s keeps it well over 1 s on either."""


@dataclass
class DemoOptions:
    duration_s: float = 60.0
    rate: float = EMBEDDING_MARGINS.rate
    slow_ms: float = EMBEDDING_MARGINS.slow_ms
    repeat_ratio: float = 0.5
    start_stack: bool = True
    model_dir: str = "models/all-MiniLM-L6-v2"
    gateway: str | None = None
    gateway_http: str | None = None
    edge: str | None = None
    proxy_port: int | None = None
    proxy_pid: int | None = None
    threshold_ms: float | None = EMBEDDING_MARGINS.threshold_ms
    """``routing.threshold_ms`` of the gateway the demo starts (None: the gateway's default, 200)."""
    live: bool | None = None
    """Redraw in place; None: when the output is a terminal."""
    seed: int = 0
    refresh_s: float = 0.5
    streams: bool = False
    """Token streams (SmolLM2 through ``generate``) instead of embeddings: each outcome's latency
    is the time to the first token and its backend the side that produced it."""
    generative_model_dir: str = "models/smollm2-135m-instruct"
    max_tokens: int = 12


@dataclass
class _Stack:
    gateway: str
    gateway_http: str | None
    fault: EdgeFault
    threshold_ms: float | None = None


def _gateway_supports_cache() -> bool:
    from gateway.config import GatewayConfig

    return "cache" in GatewayConfig.model_fields


@contextlib.asynccontextmanager
async def _own_stack(options: DemoOptions, out: TextIO) -> AsyncIterator[_Stack]:
    from edgecloud_tools.stack import (cloud_config, edge_config, free_port, gateway_config, launch, launch_proxy,
                                 wait_ready)

    model_dir = Path(options.model_dir).resolve()
    if not (model_dir / "model.json").exists():
        print(f"building the INT8 model into {model_dir} (first run only)", file=out, flush=True)
        from edge_agent.build.pipeline import build_model_dir

        await asyncio.to_thread(build_model_dir, model_dir)
    workdir = Path(tempfile.mkdtemp(prefix="edgecloud-demo-"))
    edge_port, cloud_port, grpc_port, http_port, proxy_port = (free_port() for _ in range(5))
    services = []
    try:
        proxy = await asyncio.to_thread(launch_proxy, f"127.0.0.1:{edge_port}", proxy_port, workdir,
                                        delay_ms=options.slow_ms)
        services.append(proxy)
        print(f"starting an edge agent, a cloud worker and a gateway (logs in {workdir}) ...", file=out, flush=True)
        generative = Path(options.generative_model_dir).resolve() if options.streams else None
        if generative is not None and not (generative / "model.json").exists():
            raise ValueError(f"{generative} is missing: run `make model` first")
        edge = launch("edge", edge_config(model_dir, edge_port, threads=1, generative_model_dir=generative),
                      workdir)
        services.append(edge)
        cloud = launch("cloud", cloud_config(cloud_port, threads=1, generative_model_dir=generative), workdir)
        services.append(cloud)
        await asyncio.gather(asyncio.to_thread(wait_ready, edge, 120), asyncio.to_thread(wait_ready, cloud, 180))
        routing = {} if options.threshold_ms is None else {"threshold_ms": options.threshold_ms}
        config = gateway_config(grpc_port, proxy.address, [cloud.address], http_port=http_port,
                                routing=routing)
        if _gateway_supports_cache():
            config["cache"] = {"enabled": True}
        gateway = launch("gateway", config, workdir)
        services.append(gateway)
        await asyncio.to_thread(wait_ready, gateway, 60)
        print(f"  gateway 127.0.0.1:{grpc_port} (http {http_port}) -> edge via fault proxy {proxy.address} "
              f"-> {edge.address}; cloud {cloud.address}", file=out, flush=True)
        yield _Stack(f"127.0.0.1:{grpc_port}", f"127.0.0.1:{http_port}", EdgeFault(proxy_pid=proxy.pid))
    finally:
        for service in reversed(services):
            await asyncio.to_thread(service.stop)


@contextlib.asynccontextmanager
async def _running_stack(options: DemoOptions) -> AsyncIterator[_Stack]:
    if options.gateway is None:
        raise ValueError("without --start-stack, give --gateway HOST:PORT")
    if options.proxy_pid is not None:
        yield _Stack(options.gateway, options.gateway_http, EdgeFault(proxy_pid=options.proxy_pid))
        return
    if options.edge is None or options.proxy_port is None:
        raise ValueError("without --start-stack, give --edge HOST:PORT and --proxy-port N (the gateway's "
                         "edge.address must be 127.0.0.1:N), or --proxy-pid of a running `edgecloud proxy`")
    from edgecloud_tools.fault_proxy import FaultProxy

    host, port = options.edge.rsplit(":", 1)
    proxy = FaultProxy(host, int(port), listen_port=options.proxy_port)
    await proxy.start()
    try:
        yield _Stack(options.gateway, options.gateway_http, EdgeFault(proxy=proxy))
    finally:
        await proxy.stop()


# the run -----------------------------------------------------------------------------------------

GENERATIVE_MODEL = "smollm2-135m-instruct"


async def _first_token(client, prompt: str, max_tokens: int, parameters: dict | None = None) -> tuple[float, str]:
    """One greedy stream read to its end: (seconds to its first token, who produced that token)."""
    start = time.monotonic()
    first_s, served_by = None, "?"
    async for chunk in client.chat(GENERATIVE_MODEL, [{"role": "user", "content": prompt}],
                                   max_tokens=max_tokens, temperature=0, parameters=parameters):
        if chunk.served_by and served_by == "?":
            served_by = chunk.served_by
        if first_s is None and (chunk.text or chunk.final):
            first_s = time.monotonic() - start
    return (first_s if first_s is not None else time.monotonic() - start), served_by


async def _warm_up(client, threshold_ms: float | None, timeout_s: float = 30.0, settle_s: float = 2.5,
                   streams: bool = False) -> None:
    """Pay for connections, metadata and first inferences before the clock starts (one call through
    the cloud warms the cloud), then wait until the edge has answered fast for ``settle_s`` (longer
    than the gateway's statistics window): a cold or just-reachable edge looks slow to the gateway,
    which would start the demo on the cloud."""
    with contextlib.suppress(Exception):
        if streams:
            await _first_token(client, "warm-up", 2, {"no_cache": True, "quality": "cloud"})
        else:
            await client.embed(["edgecloud demo warm-up (cloud)"], parameters={"no_cache": True, "quality": "cloud"})
    fast_s = (threshold_ms or 200.0) / 2000.0
    deadline = time.monotonic() + timeout_s
    settled_since, n = time.monotonic(), 0
    while time.monotonic() < deadline:
        start = time.monotonic()
        if streams:
            took, served_by = await _first_token(client, f"warm-up {n}", 2, {"no_cache": True})
        else:
            served_by = (await client.embed([f"edgecloud demo warm-up {n}"], parameters={"no_cache": True})).served_by
            took = time.monotonic() - start
        if served_by != "edge" or took > fast_s:
            settled_since = time.monotonic()
        elif time.monotonic() - settled_since >= settle_s:
            return
        n += 1
        await asyncio.sleep(0.1)


def _bucket_s(options: DemoOptions) -> float:
    """The timeline's bucket: at least 0.5 s, a sixtieth of the run, and long enough to expect
    three requests (at 3 streams/s a 0.5 s bucket holds one or two, and one stream decides it)."""
    return max(0.5, options.duration_s / 60, 3.0 / options.rate)


async def _drive(options: DemoOptions, stack: _Stack, out: TextIO) -> DemoResult:
    from edgecloud.errors import InferenceError
    from gateway.client import AsyncClient

    third = options.duration_s / 3
    bounds = ((0.0, third), (third, 2 * third), (2 * third, options.duration_s))
    result = DemoResult(options.duration_s, bounds, bucket_s=_bucket_s(options))
    live = out.isatty() if options.live is None else options.live
    view = LiveView(out, live)
    try:
        edge_view = GatewayEdgeView(stack.gateway_http, kind="ttft" if options.streams else "rtt")
        pick = sentences(options.repeat_ratio, random.Random(options.seed))
        async with AsyncClient(stack.gateway, timeout_s=10.0) as client:
            await edge_view.refresh()
            result.threshold_ms = edge_view.threshold_ms or options.threshold_ms
            await _warm_up(client, result.threshold_ms, streams=options.streams)
            t0 = time.monotonic()

            def phase_at(at: float) -> int:
                return 0 if at < bounds[0][1] else 1 if at < bounds[1][1] else 2

            async def one(n: int, at: float) -> None:
                start = time.monotonic()
                try:
                    if options.streams:
                        first_s, served_by = await _first_token(client, pick(n), options.max_tokens)
                        result.outcomes.append(Outcome(at, first_s, served_by, phase_at(at)))
                        return
                    answer = await client.embed([pick(n)])
                    result.outcomes.append(Outcome(at, time.monotonic() - start, answer.served_by or "?", phase_at(at)))
                except InferenceError as exc:
                    result.outcomes.append(Outcome(at, time.monotonic() - start, None, phase_at(at),
                                                   f"{type(exc).__name__}: {exc}"))

            async def faults() -> None:
                await asyncio.sleep(max(0.0, t0 + bounds[1][0] - time.monotonic()))
                stack.fault.slow(options.slow_ms / 1000.0)
                await asyncio.sleep(max(0.0, t0 + bounds[2][0] - time.monotonic()))
                stack.fault.restore()

            async def display() -> None:
                while True:
                    now = time.monotonic() - t0
                    gateway_edge = await edge_view.refresh()
                    view.draw(result, min(now, options.duration_s), phase_at(now), options.slow_ms, gateway_edge)
                    await asyncio.sleep(options.refresh_s)

            fault_task = asyncio.create_task(faults())
            display_task = asyncio.create_task(display())
            requests: list[asyncio.Task] = []
            try:
                n = 0
                while (due := n / options.rate) < options.duration_s:
                    await asyncio.sleep(max(0.0, t0 + due - time.monotonic()))
                    requests.append(asyncio.create_task(one(n, due)))
                    n += 1
                await asyncio.gather(*requests)
                await fault_task
            finally:
                stack.fault.restore()
                for task in (fault_task, display_task, *requests):
                    task.cancel()
                await asyncio.gather(fault_task, display_task, *requests, return_exceptions=True)
        view.draw(result, options.duration_s, 2, options.slow_ms, await edge_view.refresh())
    finally:
        view.close()
    result.outcomes.sort(key=lambda o: o.at)
    return result


async def run_demo(options: DemoOptions, out: TextIO | None = None) -> DemoResult:
    """Run the demo (starting and stopping a stack when ``options.start_stack``)."""
    out = out or sys.stdout
    stack_cm = _own_stack(options, out) if options.start_stack else _running_stack(options)
    async with stack_cm as stack:
        return await _drive(options, stack, out)


# command line ------------------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``edgecloud demo``."""
    parser.add_argument("--duration", type=float, default=60.0, metavar="S",
                        help="seconds of traffic; the edge is slow for the middle third (default 60)")
    parser.add_argument("--rate", type=float, default=None, metavar="RPS",
                        help="requests per second (default 15; with --streams 2)")
    parser.add_argument("--streams", action="store_true",
                        help="token streams (SmolLM2 chat, greedy) instead of embeddings: latency is the time to "
                             "the first token, routed on the same threshold")
    parser.add_argument("--max-tokens", type=int, default=12, help="tokens per stream with --streams (default 12)")
    parser.add_argument("--slow-ms", type=float, default=None,
                        help="delay added to the edge (default 500; with --streams 2500)")
    parser.add_argument("--threshold-ms", type=float, default=None,
                        help="routing threshold of the gateway the demo starts (default 300, with --streams 1000: "
                             "clear of a busy box's noise, well under the slowdown)")
    parser.add_argument("--repeat-ratio", type=float, default=0.5,
                        help="share of requests repeating a popular sentence, so the cache hits (default 0.5)")
    stack = parser.add_mutually_exclusive_group()
    stack.add_argument("--start-stack", dest="start_stack", action="store_true", default=True,
                       help="start an edge agent, a cloud worker, a fault proxy and a gateway (the default)")
    stack.add_argument("--gateway", metavar="HOST:PORT",
                       help="use a running gateway instead (with --edge and --proxy-port, or --proxy-pid)")
    parser.add_argument("--gateway-http", metavar="URL",
                        help="the running gateway's HTTP front, to show its view of the edge RTT")
    parser.add_argument("--edge", metavar="HOST:PORT", help="the edge agent the demo's proxy forwards to")
    parser.add_argument("--proxy-port", type=int, metavar="N",
                        help="where the demo's proxy listens; the gateway's edge.address must be 127.0.0.1:N")
    parser.add_argument("--proxy-pid", type=int, metavar="PID",
                        help="a running `edgecloud proxy` to signal instead (SIGUSR1 slows, SIGUSR2 restores)")
    parser.add_argument("--model-dir", default="models/all-MiniLM-L6-v2", help="edge model (built when missing)")
    parser.add_argument("--no-live", dest="live", action="store_false", default=None,
                        help="no in-place redraw (the default when the output is not a terminal)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sentence mix")


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Run ``edgecloud demo``; 0 when every request was answered, 1 otherwise (2: bad options)."""
    out = out or sys.stdout
    margins = STREAM_MARGINS if args.streams else EMBEDDING_MARGINS
    rate = args.rate if args.rate is not None else margins.rate
    slow_ms = args.slow_ms if args.slow_ms is not None else margins.slow_ms
    threshold_ms = args.threshold_ms if args.threshold_ms is not None else margins.threshold_ms
    options = DemoOptions(duration_s=args.duration, rate=rate, slow_ms=slow_ms, streams=args.streams,
                          max_tokens=args.max_tokens,
                          repeat_ratio=args.repeat_ratio, start_stack=args.gateway is None,
                          model_dir=args.model_dir, gateway=args.gateway, gateway_http=args.gateway_http,
                          edge=args.edge, proxy_port=args.proxy_port, proxy_pid=args.proxy_pid,
                          threshold_ms=threshold_ms, live=args.live, seed=args.seed)
    if options.duration_s < 3 or options.rate <= 0 or not 0 <= options.repeat_ratio <= 1:
        print("edgecloud demo: --duration must be >= 3, --rate > 0, --repeat-ratio in [0, 1]", file=sys.stderr)
        return 2
    try:
        result = asyncio.run(run_demo(options, out))
    except ValueError as exc:
        print(f"edgecloud demo: {exc}", file=sys.stderr)
        return 2
    print("\n" + result.summary(), file=out, flush=True)
    return 0 if result.failed == 0 else 1
