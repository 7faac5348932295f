"""The worker's autoscaling signals: queue depth, in flight, batch fill and throughput, the same
families for tensor models (dynamic batcher) and generative ones (continuous batching), and the
families the Kubernetes autoscaling manifests name (tests/deploy) are the ones registered here."""

from __future__ import annotations

import asyncio

import pytest

from cloud_worker.batcher import DynamicBatcher
from cloud_worker.metrics import WorkerMetrics
from tests.support.virtual_clock import ManualClock

AUTOSCALING_FAMILIES = ("edgecloud_cloud_queued_requests", "edgecloud_cloud_running_requests",
                        "edgecloud_cloud_pending_requests", "edgecloud_cloud_batch_fill",
                        "edgecloud_cloud_requests")


class HeldModel:
    def __init__(self):
        self.gate = asyncio.Event()
        self.started = asyncio.Event()

    async def __call__(self, items):
        self.started.set()
        await self.gate.wait()
        return [item.upper() for item in items]


async def until(predicate, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0)


def test_the_autoscaling_families_are_registered():
    names = {metric.name for metric in WorkerMetrics().registry.collect()}
    assert set(AUTOSCALING_FAMILIES) <= names


async def test_the_batcher_reports_queue_depth_in_flight_and_batch_fill():
    metrics = WorkerMetrics()
    model = HeldModel()
    batcher = DynamicBatcher(model, max_batch_size=8, max_queue_delay_s=0.0, clock=ManualClock(),
                             metrics=metrics.for_model("m"))
    await batcher.start()
    sample = metrics.registry.get_sample_value
    try:
        first = asyncio.ensure_future(batcher.submit("a", rows=2))
        await model.started.wait()
        rest = [asyncio.ensure_future(batcher.submit(t, rows=3)) for t in "bc"]
        await until(lambda: batcher.queued == 2)
        assert sample("edgecloud_cloud_queued_requests", {"model": "m"}) == 2
        assert sample("edgecloud_cloud_running_requests", {"model": "m"}) == 1
        assert sample("edgecloud_cloud_pending_requests", {"model": "m"}) == 3
        model.gate.set()
        await asyncio.gather(first, *rest)
    finally:
        await batcher.stop()
    for family in ("queued", "running", "pending"):
        assert sample(f"edgecloud_cloud_{family}_requests", {"model": "m"}) == 0
    # Batches of 2 and 6 rows of at most 8: fills 0.25 and 0.75.
    assert sample("edgecloud_cloud_batch_fill_count", {"model": "m"}) == 2
    assert sample("edgecloud_cloud_batch_fill_sum", {"model": "m"}) == pytest.approx(1.0)
    assert sample("edgecloud_cloud_batch_fill_bucket", {"model": "m", "le": "0.25"}) == 1
    assert sample("edgecloud_cloud_requests_total", {"model": "m", "outcome": "ok"}) == 3  # rate(): throughput


async def test_a_lone_request_bigger_than_a_batch_counts_as_a_full_batch():
    metrics = WorkerMetrics()
    model = HeldModel()
    model.gate.set()
    async with DynamicBatcher(model, max_batch_size=4, clock=ManualClock(), metrics=metrics.for_model("m")) as batcher:
        await batcher.submit("big", rows=10)
    assert metrics.registry.get_sample_value("edgecloud_cloud_batch_fill_sum", {"model": "m"}) == 1.0


def test_generative_models_report_the_same_families_at_scrape_time():
    metrics = WorkerMetrics()
    status = [3, 5]  # active slots, queued
    metrics.for_generation("g", lambda: tuple(status))
    sample = metrics.registry.get_sample_value
    assert sample("edgecloud_cloud_running_requests", {"model": "g"}) == 3
    assert sample("edgecloud_cloud_queued_requests", {"model": "g"}) == 5
    assert sample("edgecloud_cloud_pending_requests", {"model": "g"}) == 8
    status[:] = [0, 0]
    assert sample("edgecloud_cloud_pending_requests", {"model": "g"}) == 0
    assert sample("edgecloud_cloud_generation_slots_active", {"model": "g"}) == 0
