"""The shared lifecycle: ordered start, undo of a failed start, reverse stop that runs every step
and raises what failed; and ``InferenceServer``'s stop order on a real gRPC front."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from edgecloud.config import ServerSettings
from edgecloud.dataplane import Dataplane
from edgecloud.lifecycle import Lifecycle
from edgecloud.limits import RequestLimits
from edgecloud.model import ModelRepository
from edgecloud.server import InferenceServer, Resource
from edgecloud.types import ServerMetadata

REPO_ROOT = Path(__file__).resolve().parents[2]


class Recorder:
    def __init__(self):
        self.events: list[str] = []

    def step(self, name: str, *, fail_start: bool = False, fail_stop: bool = False):
        async def start():
            self.events.append(f"start {name}")
            if fail_start:
                raise RuntimeError(f"{name} would not start")

        async def stop(grace: float):
            self.events.append(f"stop {name} ({grace:g})")
            if fail_stop:
                raise OSError(f"{name} would not stop")

        return name, start, stop


async def test_steps_start_in_order_and_stop_in_reverse_with_the_grace():
    rec, life = Recorder(), Lifecycle("test")
    for name in "abc":
        await life.start(*rec.step(name))
    await life.stop(2.5)
    await life.stop(2.5)  # twice: nothing left to stop
    assert rec.events == ["start a", "start b", "start c", "stop c (2.5)", "stop b (2.5)", "stop a (2.5)"]


async def test_a_failed_start_undoes_what_started_and_propagates():
    rec, life = Recorder(), Lifecycle("test")
    await life.start(*rec.step("a"))
    await life.start(*rec.step("b"))
    with pytest.raises(RuntimeError, match="c would not start"):
        await life.start(*rec.step("c", fail_start=True))
    assert rec.events == ["start a", "start b", "start c", "stop b (0)", "stop a (0)"]
    assert not life.started


async def test_every_step_stops_even_when_some_fail_and_all_failures_are_raised():
    rec, life = Recorder(), Lifecycle("test")
    for name, fails in (("a", True), ("b", False), ("c", True)):
        await life.start(*rec.step(name, fail_stop=fails))
    with pytest.raises(ExceptionGroup) as info:
        await life.stop(1)
    assert rec.events[-3:] == ["stop c (1)", "stop b (1)", "stop a (1)"]
    assert [str(e) for e in info.value.exceptions] == ["c would not stop", "a would not stop"]
    assert "while stopping test: c" in info.value.exceptions[0].__notes__


async def test_one_failed_stop_is_raised_as_itself():
    rec, life = Recorder(), Lifecycle("test")
    await life.start(*rec.step("a", fail_stop=True))
    await life.start(*rec.step("b"))
    with pytest.raises(OSError, match="a would not stop"):
        await life.stop(0)


async def test_the_server_reports_not_serving_before_it_drains_and_stops_resources_last():
    events: list[str] = []
    dataplane = Dataplane(ModelRepository(), ServerMetadata("test", "0"), RequestLimits())
    health_at_stop: list[int] = []

    async def open_resource():
        events.append("resource started")

    async def close_resource():
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            try:
                answer = await stub.Check(health_pb2.HealthCheckRequest(), timeout=2)
                health_at_stop.append(answer.status)
            except grpc.aio.AioRpcError:
                health_at_stop.append(-1)  # not accepting any more
        events.append(f"resource stopped (ready={dataplane.ready()})")

    server = InferenceServer("test", dataplane, ServerSettings(port=0), resources=[
        Resource("resource", open_resource, close_resource)])
    port = await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        answer = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert answer.status == health_pb2.HealthCheckResponse.SERVING and dataplane.ready()
    await server.stop(0.1)
    assert events == ["resource started", "resource stopped (ready=False)"]
    assert health_at_stop == [-1]  # the fronts had stopped accepting before the resource closed
    assert not server.running


def test_large_buffers_go_back_to_the_os_on_glibc():
    import platform

    from edgecloud.allocator import release_large_buffers

    applied = release_large_buffers()
    assert applied == (platform.libc_ver()[0] == "glibc")


FROZEN_WHILE_SERVING = """
import asyncio, gc, json
from edgecloud.lifecycle import run_until_signal

seen = {}
stop = asyncio.Event()

class Component:
    async def start(self):
        seen["starting"] = gc.get_freeze_count()

    async def stop(self, grace):
        seen["stopping"] = gc.get_freeze_count()

def on_started():
    seen["serving"] = gc.get_freeze_count()
    stop.set()

asyncio.run(run_until_signal([Component()], 0.1, on_started=on_started, stop_event=stop))
seen["after"] = gc.get_freeze_count()
print(json.dumps(seen))
"""


def test_a_process_serves_with_its_start_up_objects_frozen_out_of_the_collector():
    # In a process of its own: run_until_signal also sets the process' malloc threshold for good.
    out = subprocess.run([sys.executable, "-c", FROZEN_WHILE_SERVING], capture_output=True, text=True,
                         timeout=60, cwd=REPO_ROOT, check=True).stdout
    seen = json.loads(out)
    assert seen["starting"] == 0
    assert seen["serving"] > 10_000  # every module, class and function loaded so far
    assert seen["stopping"] == 0  # thawed before the components stop
    assert seen["after"] == 0
