"""The hostile-input corpus against every server: the gateway (gRPC and HTTP), the edge agent (gRPC,
and the shared REST front over its dataplane), and the cloud worker (gRPC).

Edge, cloud and gateway run as real processes (``python -m edgecloud_tools serve``) with the corpus's
limits, so their memory and logs are their own; the REST front over the edge dataplane runs in this
process on a background loop. For every case and every target that speaks its transport:

- the answer has the case's status (gRPC code or HTTP status) and arrives within ``case.max_s``;
- the message names the field, stays short, and leaks nothing internal (paths, source files,
  tracebacks, addresses, Redis keys, Python object reprs); HTTP errors are ``{"error": message}``;
- no server logs an unexpected exception for it, and a good request succeeds right after it.

After the corpus: every server is alive, and its resident memory grew by less than
``RSS_GROWTH_BOUND`` (peak by less than ``PEAK_GROWTH_BOUND``). The summary (requests, share with the
right status, crashes, leaks, p50/p99 answer time per target) is printed at the end of the session.
"""

from __future__ import annotations

import contextlib

import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from edgecloud_tools.stack import ServiceProcess, cloud_config, edge_config, free_port, gateway_config, launch, wait_ready
from tests.hostile import summary
from tests.hostile.corpus import BODY_TIMEOUT_MS, CASES, INFER_PATH, LIMITS, MAX_MESSAGE, Case, Flood, Http, RawHttp
from tests.hostile.servers import (
    InProcessEdgeRest,
    LogWatch,
    chunk_flood,
    good_grpc_request,
    good_http_body,
    grpc_call,
    http_exchange,
    http_request_bytes,
    leaks_in,
    memory,
    wait_until,
)

RSS_GROWTH_BOUND = 64 * 1024 * 1024
PEAK_GROWTH_BOUND = 100 * 1024 * 1024
MAX_ERROR_MESSAGE = 1024
"""Characters an error message may have: enough to name the field and say why, not to echo input."""
FAILED_GRPC = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}


# ---------------------------------------------------------------------------------------------
# targets


@dataclass
class Answer:
    status: grpc.StatusCode | int
    message: str
    elapsed_s: float
    problems: list[str] = field(default_factory=list)
    """Transport-level faults of the answer itself (an HTTP error that is not ``{"error": ...}``)."""


class GrpcTarget:
    transport = "grpc"

    def __init__(self, name: str, address: str):
        self.name = name
        self.channel = grpc.insecure_channel(address)

    def send(self, payload, case: Case) -> Answer:
        started = time.perf_counter()
        answer = grpc_call(self.channel, payload, timeout=max(10.0, 5 * case.max_s))
        return Answer(answer.code, answer.details, time.perf_counter() - started)

    def good(self) -> str | None:
        answer = grpc_call(self.channel, good_grpc_request(), timeout=30)
        if answer.code != grpc.StatusCode.OK:
            return f"{answer.code.name}: {answer.details}"
        if list(answer.response.outputs[0].shape) != [1, 384]:
            return f"embedding shape {list(answer.response.outputs[0].shape)}"
        return None

    def close(self) -> None:
        self.channel.close()


class HttpTarget:
    transport = "http"

    def __init__(self, name: str, port: int):
        self.name = name
        self.port = port

    def send(self, payload, case: Case) -> Answer:
        started = time.perf_counter()
        if isinstance(payload, Http):
            reply = http_exchange(self.port, http_request_bytes("POST", payload.path, payload.body, payload.headers))
        elif isinstance(payload, Flood):
            reply = chunk_flood(self.port, payload.path, payload.headers, payload.chunks, payload.chunk,
                                payload.terminate, timeout=max(10.0, 5 * case.max_s))
        elif isinstance(payload, RawHttp):
            reply = http_exchange(self.port, payload.data, then=payload.then)
        else:  # pragma: no cover - the corpus only holds the three kinds
            raise TypeError(type(payload).__name__)
        elapsed = time.perf_counter() - started
        problems = []
        message = reply.body.decode("utf-8", "replace")
        if case.json_error and reply.status >= 400:
            try:
                document = reply.json()
                message = document["error"]
                if set(document) != {"error"} or not isinstance(message, str):
                    problems.append(f"error body is not {{'error': message}}: {reply.body[:200]!r}")
            except (ValueError, KeyError, TypeError):
                problems.append(f"error body is not JSON: {reply.body[:200]!r}")
            if not reply.headers.get("content-type", "").startswith("application/json"):
                problems.append(f"error Content-Type is {reply.headers.get('content-type')!r}")
        return Answer(reply.status, message, elapsed, problems)

    def good(self) -> str | None:
        reply = http_exchange(self.port, http_request_bytes("POST", INFER_PATH, good_http_body(),
                                                            {"Content-Type": "application/json"}), timeout=30)
        if reply.status != 200:
            return f"{reply.status}: {reply.body[:300]!r}"
        shape = reply.json()["outputs"][0]["shape"]
        return None if shape == [1, 384] else f"embedding shape {shape}"

    def close(self) -> None:
        pass


@dataclass
class Stack:
    targets: dict[str, GrpcTarget | HttpTarget]
    services: dict[str, ServiceProcess]
    rest: InProcessEdgeRest
    logs: dict[str, LogWatch]
    baseline: dict[str, dict[str, int]]

    def pids(self) -> dict[str, int | str]:
        return {**{name: service.pid for name, service in self.services.items()}, "this process (edge REST)": "self"}

    def unexpected(self) -> list[str]:
        """Unexpected-exception log lines from any server since the previous call."""
        lines = [f"{name}: {line}" for name, watch in self.logs.items() for line in watch.new_unexpected()]
        lines += [f"edge REST: {record}" for record in self.rest.errors
                  if "Error handling request" not in record]
        self.rest.errors.clear()
        return lines


def _server_section(config: dict) -> dict:
    config["server"]["max_message_bytes"] = MAX_MESSAGE
    config["server"]["body_read_timeout_ms"] = BODY_TIMEOUT_MS
    config["limits"] = dict(LIMITS)
    return config


@contextlib.contextmanager
def running_stack(model_dir: Path, workdir: Path):
    """The stack under test (edge, cloud and gateway processes, the in-process edge REST front),
    warmed up, with the memory baseline taken; stopped on exit."""
    services: dict[str, ServiceProcess] = {}
    rest = InProcessEdgeRest(model_dir, LIMITS, MAX_MESSAGE)
    targets: dict[str, GrpcTarget | HttpTarget] = {}
    try:
        services["edge"] = launch("edge", _server_section(edge_config(model_dir, free_port())), workdir)
        services["cloud"] = launch("cloud", _server_section(cloud_config(free_port())), workdir)
        http_port = free_port()
        services["gateway"] = launch("gateway", _server_section(gateway_config(
            free_port(), services["edge"].address, [services["cloud"].address], http_port=http_port,
            routing={"probe_interval_ms": 1000})), workdir)
        rest.start()  # loads its own edge model while the processes start
        for name, timeout in (("edge", 120), ("cloud", 180), ("gateway", 60)):
            wait_ready(services[name], timeout)
        targets = {
            "gateway-grpc": GrpcTarget("gateway-grpc", services["gateway"].address),
            "edge-grpc": GrpcTarget("edge-grpc", services["edge"].address),
            "cloud-grpc": GrpcTarget("cloud-grpc", services["cloud"].address),
            "gateway-http": HttpTarget("gateway-http", http_port),
            "edge-http": HttpTarget("edge-http", rest.port),
        }
        for target in targets.values():  # warm: the first answers pay for connections and lazy set-up
            assert wait_until(lambda: target.good() is None, 60, 0.2), f"{target.name}: {target.good()}"
        logs = {name: LogWatch(service.log_path) for name, service in services.items()}
        built = Stack(targets, services, rest, logs, {})
        built.baseline = {name: memory(pid) for name, pid in built.pids().items()}
        built.unexpected()
        yield built
    finally:
        for target in targets.values():
            target.close()
        rest.stop()
        for service in services.values():
            service.stop()


@pytest.fixture(scope="module")
def stack(model_dir: Path, tmp_path_factory) -> Stack:
    with running_stack(model_dir, tmp_path_factory.mktemp("hostile-stack")) as built:
        yield built


# ---------------------------------------------------------------------------------------------
# the corpus


def _params():
    for case in CASES:
        for target in case.targets():
            reason = case.xfail_reason(target)
            marks = [pytest.mark.xfail(strict=True, reason=reason, raises=AssertionError)] if reason else []
            yield pytest.param(target, case, id=f"{target}::{case.name}", marks=marks)


def _show(status: grpc.StatusCode | int) -> str:
    return status.name if isinstance(status, grpc.StatusCode) else str(status)


@pytest.mark.parametrize("target_name, case", list(_params()))
def test_hostile_request_gets_the_right_answer_and_the_server_keeps_serving(stack, target_name, case):
    """One malformed request: right status, fast, field named, nothing leaked, no crash, still serving."""
    target = stack.targets[target_name]
    answer = target.send(case.build(), case)
    leaks = leaks_in(answer.message)
    still = target.good()
    unexpected = stack.unexpected()  # after the good request: aiohttp logs some failures only once the answer is out
    crash = bool(unexpected) or answer.status in FAILED_GRPC or (isinstance(answer.status, int)
                                                                 and answer.status >= 500)
    summary.OUTCOMES.append(summary.Outcome(
        target_name, case.name, _show(case.status), f"{_show(answer.status)} {answer.message[:120]!r}",
        answer.status == case.status, case.field is None or case.field in answer.message, answer.elapsed_s, crash,
        leaks, still is None, case.xfail_reason(target_name) is not None))

    said = f"{_show(answer.status)}: {answer.message[:300]!r}"
    assert answer.status == case.status, f"expected {_show(case.status)}, got {said}"
    elapsed = answer.elapsed_s
    if elapsed >= case.max_s:  # a busy machine may stall one answer; a server that hangs is slow twice
        elapsed = min(elapsed, target.send(case.build(), case).elapsed_s)
    assert elapsed < case.max_s, f"answered in {answer.elapsed_s:.3f} s, then {elapsed:.3f} s"
    if case.field is not None:
        assert case.field in answer.message, f"the message does not name {case.field!r}: {said}"
    assert len(answer.message) <= MAX_ERROR_MESSAGE, f"a {len(answer.message)}-character message: {said}"
    assert not leaks, f"the message leaks {leaks}: {said}"
    assert not answer.problems, answer.problems
    assert not unexpected, f"unexpected exceptions logged: {unexpected}"
    assert still is None, f"a good request failed right after: {still}"


# ---------------------------------------------------------------------------------------------
# after the corpus


def test_every_server_survived_the_corpus(stack):
    """Every server process is alive, and every target still answers a good request."""
    dead = {name: service.log_tail(2000) for name, service in stack.services.items() if not service.alive()}
    assert not dead, f"servers died: {dead}"
    for target in stack.targets.values():
        assert target.good() is None, target.name


@pytest.mark.parametrize("process", ["gateway", "edge", "cloud", "this process (edge REST)"])
def test_memory_stays_bounded(stack, process):
    """Resident memory after the corpus is within ``RSS_GROWTH_BOUND`` of before it, and the peak
    within ``PEAK_GROWTH_BOUND`` (the peak of this test process says nothing: other tests share it)."""
    before = stack.baseline[process]
    after = memory(stack.pids()[process])
    summary.MEMORY[process] = {"rss_before": before["VmRSS"], "rss_after": after["VmRSS"],
                               "hwm_before": before["VmHWM"], "hwm_after": after["VmHWM"]}
    grown = after["VmRSS"] - before["VmRSS"]
    assert grown < RSS_GROWTH_BOUND, f"RSS grew {grown / 2**20:.0f} MiB"
    if process in stack.services:
        peak = after["VmHWM"] - before["VmHWM"]
        assert peak < PEAK_GROWTH_BOUND, f"peak RSS grew {peak / 2**20:.0f} MiB"


# ---------------------------------------------------------------------------------------------
# hostile headers that change routing, not status


def test_an_absurd_timeout_header_does_not_push_the_request_off_the_edge(stack):
    """``X-Request-Timeout-Ms: 1e13`` (317 years) is a deadline grpc cannot represent; the gateway
    must not turn it into an instant edge DEADLINE_EXCEEDED and a failover to the cloud (which would
    let any client steer traffic to the expensive side and drain the shared retry budget). The REST
    front caps the header at a day (``edgecloud.http_front._deadline``)."""
    target = stack.targets["gateway-http"]

    def route_reason(headers: dict[str, str]) -> tuple[int, str | None]:
        reply = http_exchange(target.port, http_request_bytes(
            "POST", INFER_PATH, good_http_body("absurd deadline"), {"Content-Type": "application/json", **headers}))
        return reply.status, reply.headers.get("x-edgecloud-route-reason")

    for _ in range(3):
        status, control = route_reason({})
        assert status == 200
        status, absurd = route_reason({"X-Request-Timeout-Ms": "1e13"})
        assert status == 200
        assert absurd != "failover", f"the absurd deadline failed over (control request: {control})"


def test_the_corpus_covers_both_transports_at_size():
    """At least 60 distinct malformed requests, both transports well represented."""
    by_transport = {transport: [case.name for case in CASES if case.transport == transport]
                    for transport in ("grpc", "http")}
    assert len(CASES) >= 60 and all(len(names) >= 30 for names in by_transport.values()), by_transport
    assert all(case.status in (400, 404, 408, 413, 415) or case.transport == "grpc" for case in CASES)
