"""Recording a trace from the gateway's debug endpoint: polling with ``since``, overlap without
duplicates, failures; and once against the gateway's real HTTP front."""

from __future__ import annotations

import asyncio
import math
import threading
import urllib.parse

import pytest

from edgecloud.clock import FakeClock
from gateway.config import GatewayConfig
from gateway.dataplane import GatewayDataplane
from gateway.server import GatewayServer
from gateway.tuning.record import RecordError, fetch_json, record_trace, trace_url


class FakeGateway:
    """Answers the endpoint from a list of samples; time moves only when the recorder sleeps."""

    def __init__(self):
        self.now = 100.0
        self.samples: list[dict] = []
        self.asked: list[float] = []

    def add(self, t: float, backend: str = "edge", rtt_ms: float = 10.0, probe: bool = False) -> None:
        self.samples.append({"t": t, "backend": backend, "rtt_ms": rtt_ms, "probe": probe})

    def fetch(self, url: str) -> dict:
        since = float(urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)["since"][0])
        self.asked.append(since)
        return {"now": self.now, "threshold_ms": 200, "samples": [s for s in self.samples if s["t"] > since]}

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.add(self.now - 0.01)
        self.add(self.now - 0.01, "cloud", 40.0, True)

    def clock(self) -> float:
        return self.now


def test_polls_since_the_last_sample_and_keeps_each_sample_once():
    gw = FakeGateway()
    gw.add(99.0)  # before the recording: left out
    trace = record_trace("gw:8000", 3.0, poll_s=1.0, fetch=gw.fetch, sleep=gw.sleep, clock=gw.clock)
    assert gw.asked[0] == math.inf  # the first poll only reads the gateway's clock
    assert len(gw.asked) == 4 and gw.asked[1] == pytest.approx(100.0 - 0.5)  # polls overlap by 0.5 s
    assert [s.t for s in trace.samples] == pytest.approx([100.99, 100.99, 101.99, 101.99, 102.99, 102.99])
    assert (trace.start, trace.end, trace.recorded_threshold_ms, trace.source) == (100.0, 103.0, 200.0, "gw:8000")


def test_history_can_be_included():
    gw = FakeGateway()
    gw.add(50.0)
    trace = record_trace("gw:8000", 0.0, fetch=gw.fetch, sleep=gw.sleep, clock=gw.clock, include_history=True)
    assert gw.asked[0] == -math.inf and trace.start == 50.0 and [s.t for s in trace.samples] == [50.0]


def test_an_unusable_endpoint_fails_after_retries():
    calls = []

    def not_a_trace(url):
        calls.append(url)
        return {"hello": 1}

    with pytest.raises(RecordError, match="not a latency trace"):
        record_trace("gw:8000", 1.0, fetch=not_a_trace, sleep=lambda s: None, retries=3)
    assert len(calls) == 3
    with pytest.raises(RecordError, match=r"GET http://127\.0\.0\.1:9/v2/debug/latency-trace"):
        fetch_json(trace_url("127.0.0.1:9", 0.0), timeout_s=2.0)
    assert trace_url("http://gw:8000/", -math.inf) == "http://gw:8000/v2/debug/latency-trace?since=-inf"


async def test_records_from_the_gateways_real_http_front():
    config = GatewayConfig.model_validate({"server": {"port": 0, "metrics_port": None, "http_port": 0},
                                           "edge": {"address": "127.0.0.1:9"}, "cloud": {"workers": []},
                                           "routing": {"warmup_samples": 0}})
    clock = FakeClock(500.0)
    core = GatewayDataplane(config, clock=clock)
    front = GatewayServer(config, dataplane=core)
    await front.start()
    port = front.http_port
    try:
        core.monitor.record("edge", 0.010)  # before the recording starts
        first_poll = threading.Event()

        def fetch(url):
            answer = fetch_json(url)
            first_poll.set()
            return answer

        recorded = threading.Event()
        reads_after_recording = []

        def recording_clock() -> float:
            """Stands still until the samples are in, and ends the recording only from its second
            read after that, so a poll always follows them (however slowly this machine runs)."""
            if recorded.is_set():
                reads_after_recording.append(True)
            return 10.0 if len(reads_after_recording) >= 2 else 0.0

        recording = asyncio.create_task(asyncio.to_thread(
            record_trace, f"127.0.0.1:{port}", 0.6, poll_s=0.05, fetch=fetch, clock=recording_clock))
        await asyncio.to_thread(first_poll.wait, 10)
        clock.advance(1.0)
        core.monitor.record("edge", 0.020, probe=True)
        core.monitor.record("cloud@127.0.0.1:8201", 0.050)
        recorded.set()
        trace = await recording
    finally:
        await front.stop(0)
    assert [(s.t, s.backend, s.rtt_s, s.probe) for s in trace.samples] == [
        (501.0, "edge", 0.020, True), (501.0, "cloud", 0.050, False)]
    assert (trace.start, trace.end, trace.recorded_threshold_ms) == (500.0, 501.0, 200.0)
