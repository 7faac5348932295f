"""Fixtures of the cloud worker tests: one loaded reference runtime per session, workers on port 0
that are stopped at teardown, and channels to them."""

from __future__ import annotations

import asyncio
import collections
import gc
import threading
import time
from typing import Any

import grpc
import pytest

from cloud_worker.config import CloudConfig
from tests.support.cloud_fakes import KeepLoaded
from cloud_worker.worker import CloudWorker
from protos import inference_pb2_grpc as pb_grpc


def merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


TEST_DEFAULTS: dict[str, Any] = {
    "server": {"port": 0, "metrics_port": 0, "grace_s": 1.0},
    "runtime": {"device": "cpu", "intra_op_threads": 2},
}


def cloud_config(**sections) -> CloudConfig:
    """Test config: ports 0, CPU, 2 threads, with ``sections`` merged in (``batching={...}``)."""
    return CloudConfig.model_validate(merge(TEST_DEFAULTS, sections))


@pytest.fixture(scope="session")
def reference_runtime():
    """The real FP32 reference runtime, loaded once; workers get it through ``KeepLoaded``."""
    from cloud_worker.config import RuntimeSettings
    from cloud_worker.reference import ReferenceRuntime

    runtime = ReferenceRuntime(settings=RuntimeSettings(device="cpu", intra_op_threads=2), max_rows=32)
    runtime.load()
    yield runtime
    runtime.close()


@pytest.fixture
def make_config():
    return cloud_config


@pytest.fixture
async def start_worker():
    """``await start_worker(runtimes=[...], batching={...})`` -> a started ``CloudWorker``; every
    worker is stopped at teardown and leaves no task of its own behind."""
    workers: list[CloudWorker] = []

    async def start(runtimes=None, **sections) -> CloudWorker:
        worker = CloudWorker(cloud_config(**sections), runtimes=runtimes)
        await worker.start()
        workers.append(worker)
        return worker

    yield start
    for worker in reversed(workers):
        await worker.stop(0.5)
    leftovers = [t for t in asyncio.all_tasks() if t.get_name().startswith("batcher-") and not t.done()]
    assert not leftovers, f"batcher tasks left running: {leftovers}"


@pytest.fixture
async def reference_worker(start_worker, reference_runtime):
    """A worker serving the real reference model (batching on, default settings)."""
    return await start_worker(runtimes=[KeepLoaded(reference_runtime)])


@pytest.fixture
async def connect():
    """``connect(worker)`` -> an Open Inference Protocol stub (its channel as ``.channel``);
    channels close at teardown."""
    channels: list[grpc.aio.Channel] = []

    def open_stub(worker: CloudWorker, **options) -> pb_grpc.GRPCInferenceServiceStub:
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{worker.port}", options=list(options.items()))
        channels.append(channel)
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        stub.channel = channel
        return stub

    yield open_stub
    for channel in channels:
        await channel.close()


BLOCKED_LOOP_CPU_S = 0.5
"""CPU time one event-loop callback may take on the loop's thread (inference belongs elsewhere)."""
BLOCKED_LOOP_WALL_S = 3.0
"""Wall time one callback may take (a blocking wait): generous, since a busy machine may stop the
process for a while in any callback; CPU time is what tells blocking work from such a stall."""


@pytest.fixture(autouse=True)
def fail_when_the_loop_blocks(monkeypatch):
    """Any event-loop callback that computes on the loop's thread for ``BLOCKED_LOOP_CPU_S``, or
    holds it for ``BLOCKED_LOOP_WALL_S``, fails the test: blocking work belongs on the model's
    thread. Measured per callback (``asyncio.Handle._run``, which runs every callback and task
    step) in the loop thread's own CPU time, so a machine that deschedules the process is not
    mistaken for a blocked loop; the CPU of garbage collections that ran inside the callback is
    not counted either (late in the suite a full collection of the test process's objects took
    0.67 s inside an innocent task step)."""
    slow: list[str] = []
    run = asyncio.events.Handle._run
    collecting: dict[int, float] = {}
    collected_cpu: collections.defaultdict[int, float] = collections.defaultdict(float)

    def on_collection(phase, info):
        thread = threading.get_ident()
        if phase == "start":
            collecting[thread] = time.thread_time()
        elif thread in collecting:
            collected_cpu[thread] += time.thread_time() - collecting.pop(thread)

    def timed_run(handle):
        thread = threading.get_ident()
        cpu, wall, collections_before = time.thread_time(), time.monotonic(), collected_cpu[thread]
        try:
            return run(handle)
        finally:
            collections_cpu = collected_cpu[thread] - collections_before
            cpu, wall = time.thread_time() - cpu - collections_cpu, time.monotonic() - wall
            if cpu >= BLOCKED_LOOP_CPU_S or wall >= BLOCKED_LOOP_WALL_S:
                slow.append(f"{handle!r}: {cpu:.3f} s CPU (+{collections_cpu:.3f} s collecting garbage), "
                            f"{wall:.3f} s wall")

    monkeypatch.setattr(asyncio.events.Handle, "_run", timed_run)
    gc.callbacks.append(on_collection)
    try:
        yield
    finally:
        gc.callbacks.remove(on_collection)
    assert not slow, f"the event loop was blocked: {slow}"
