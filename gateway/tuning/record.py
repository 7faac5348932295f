"""Recording a latency trace from a running gateway's ``GET /v2/debug/latency-trace``.

Contract: ``record_trace(gateway_http, duration_s)`` asks the endpoint for the gateway's clock
(``since=inf``: no samples), then polls ``since=<last sample seen>`` every ``poll_s`` until
``duration_s`` has passed on the local clock, and once more at the end; it returns a ``Trace``
spanning the first poll's ``now`` to the last poll's ``now`` with every sample exactly once. With
``include_history`` the samples the gateway already holds (its bounded buffer) are included too.
Polls overlap by ``OVERLAP_S`` and drop repeats, so samples recorded with the same timestamp as the
last one seen are not lost. A failed poll raises ``RecordError`` (after ``retries`` tries).
``fetch``, ``sleep`` and ``clock`` are injectable for tests.
"""

from __future__ import annotations

import json
import math
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

from gateway.tuning.trace import Trace, TraceSample

__all__ = ["ENDPOINT", "RecordError", "fetch_json", "record_trace", "trace_url"]

ENDPOINT = "/v2/debug/latency-trace"
OVERLAP_S = 0.5


class RecordError(RuntimeError):
    """The gateway's trace endpoint could not be read."""


def trace_url(gateway_http: str, since: float, kind: str = "rtt") -> str:
    """The endpoint's URL on ``gateway_http`` (``http://host:port`` or ``host:port``); ``kind``
    ``ttft`` asks for streams' time-to-first-token samples instead of round trips."""
    base = gateway_http if "://" in gateway_http else f"http://{gateway_http}"
    query = {"since": repr(since)} if kind == "rtt" else {"since": repr(since), "kind": kind}
    return f"{base.rstrip('/')}{ENDPOINT}?" + urllib.parse.urlencode(query)


def fetch_json(url: str, timeout_s: float = 10.0) -> Any:
    """GET ``url`` and decode its JSON body."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return json.loads(response.read())
    except (urllib.error.URLError, OSError, json.JSONDecodeError) as exc:
        raise RecordError(f"GET {url}: {exc}") from exc


def record_trace(gateway_http: str, duration_s: float, *, poll_s: float = 1.0, include_history: bool = False,
                 retries: int = 3, fetch: Callable[[str], Any] = fetch_json,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic,
                 on_poll: Callable[[int], None] | None = None, kind: str = "rtt") -> Trace:
    """Poll the gateway for ``duration_s`` seconds; ``on_poll(samples so far)`` after each poll."""

    def poll(since: float) -> dict[str, Any]:
        for attempt in range(retries):
            try:
                payload = fetch(trace_url(gateway_http, since, kind))
                if not isinstance(payload, dict) or "now" not in payload or "samples" not in payload:
                    raise RecordError(f"{gateway_http}{ENDPOINT}: not a latency trace: {str(payload)[:200]}")
                return payload
            except RecordError:
                if attempt == retries - 1:
                    raise
                sleep(min(poll_s, 0.5))
        raise AssertionError("unreachable")

    first = poll(-math.inf if include_history else math.inf)
    start = float(first["now"])
    threshold = first.get("threshold_ms")
    seen: dict[tuple, TraceSample] = {}

    def take(payload: dict[str, Any]) -> None:
        for i, raw in enumerate(payload["samples"]):
            sample = TraceSample.from_json(raw, f"samples[{i}]")
            seen.setdefault((sample.t, sample.backend, sample.rtt_s, sample.probe), sample)

    take(first)
    if seen:
        start = min(start, min(s.t for s in seen.values()))
    deadline = clock() + duration_s
    end = start
    while True:
        now = clock()
        if now < deadline:
            sleep(min(poll_s, deadline - now))
        last_t = max((s.t for s in seen.values()), default=start)
        payload = poll(last_t - OVERLAP_S)
        take(payload)
        end = float(payload["now"])
        threshold = payload.get("threshold_ms", threshold)
        if on_poll is not None:
            on_poll(len(seen))
        if clock() >= deadline:
            break
    samples = [s for s in seen.values() if s.t > start or include_history]
    return Trace.build(samples, start=start, end=end, source=gateway_http,
                       recorded_threshold_ms=None if threshold is None else float(threshold), kind=kind)
