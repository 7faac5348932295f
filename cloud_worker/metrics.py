"""Prometheus metrics of one cloud worker, in a registry of its own.

Contract: ``WorkerMetrics(registry)`` registers the worker's metric families in ``registry`` (a
fresh ``CollectorRegistry`` by default, so several workers or tests in one process never collide);
``for_model(name)`` returns a ``ModelMetrics`` whose children are bound once, keeping label look-ups
out of the per-request path. ``render()`` / ``exposition()`` is the text exposition format the
operator port's ``/metrics`` serves.

What an autoscaler reads, per model and so per pod (sum over ``model``): queue depth
(``edgecloud_cloud_queued_requests``: waiting, not running), in flight
(``edgecloud_cloud_running_requests``: in a batch or a generation slot now;
``edgecloud_cloud_pending_requests`` is both), batch fill (``edgecloud_cloud_batch_fill``: rows
per batch over the batch limit) and throughput (``rate(edgecloud_cloud_requests_total{outcome="ok"})``;
rows: ``rate(edgecloud_cloud_batch_size_sum)``). Tensor models and generative models report the
same families. A model whose batches split (``runtime.instances: auto``) counts them by width
(``edgecloud_cloud_split_batches``: ``wide``, alone on every thread; ``narrow``, beside another):
a worker whose batches are mostly narrow is busy.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 24, 32, 48, 64, 128, 256, 512)
FILL_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0)
SECONDS_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                   2.5, 5.0, 10.0)


class Outcome(enum.Enum):
    """How a request left the batcher."""

    OK = "ok"
    ERROR = "error"
    QUEUE_FULL = "queue_full"
    DEADLINE_EXCEEDED = "deadline_exceeded"
    CANCELLED = "cancelled"
    UNAVAILABLE = "unavailable"


class WorkerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        self.batch_size = Histogram("edgecloud_cloud_batch_size", "Rows (texts) per model call batch.",
                                    ["model"], buckets=BATCH_SIZE_BUCKETS, registry=r)
        self.batch_requests = Histogram("edgecloud_cloud_batch_requests", "Requests merged into one batch.",
                                        ["model"], buckets=BATCH_SIZE_BUCKETS, registry=r)
        self.queue_seconds = Histogram("edgecloud_cloud_queue_seconds",
                                       "Time a request waited in the batch queue before its batch started.",
                                       ["model"], buckets=SECONDS_BUCKETS, registry=r)
        self.compute_seconds = Histogram("edgecloud_cloud_compute_seconds",
                                         "Time one batch spent in the model (tokenization included).",
                                         ["model"], buckets=SECONDS_BUCKETS, registry=r)
        self.pending = Gauge("edgecloud_cloud_pending_requests", "Requests queued or running.", ["model"],
                             registry=r)
        self.queued = Gauge("edgecloud_cloud_queued_requests", "Requests waiting to run (queue depth): in the "
                            "batch queue, or waiting for a generation slot.", ["model"], registry=r)
        self.running = Gauge("edgecloud_cloud_running_requests", "Requests running now: in the batch on the "
                             "model, or holding a generation slot.", ["model"], registry=r)
        self.batch_fill = Histogram("edgecloud_cloud_batch_fill", "Rows per batch over the most one batch "
                                    "takes (1.0: a full batch).", ["model"], buckets=FILL_BUCKETS, registry=r)
        self.requests = Counter("edgecloud_cloud_requests", "Requests that left the batcher, by outcome.",
                                ["model", "outcome"], registry=r)
        self.split_batches = Counter("edgecloud_cloud_split_batches", "Batches of a model whose batches split "
                                     "(runtime.instances: auto), by width: wide (alone, every thread) or narrow "
                                     "(beside another, its share).", ["model", "width"], registry=r)
        self.time_to_first_token = Histogram("edgecloud_cloud_time_to_first_token_seconds",
                                             "Generation: from submission to the first generated token.",
                                             ["model"], buckets=SECONDS_BUCKETS, registry=r)
        self.generated_tokens = Counter("edgecloud_cloud_generated_tokens", "Generation: completion tokens produced.",
                                        ["model"], registry=r)
        self.generation_slots = Gauge("edgecloud_cloud_generation_slots_active",
                                      "Generation: KV-cache slots holding a running generation.", ["model"],
                                      registry=r)
        self.generation_queued = Gauge("edgecloud_cloud_generation_queued",
                                       "Generation: requests waiting for a KV-cache slot.", ["model"], registry=r)

    def for_model(self, model: str) -> ModelMetrics:
        return ModelMetrics(self, model)

    def for_generation(self, model: str, status: Callable[[], tuple[int, int]]) -> GenerationMetrics:
        """Bound children for a generative model; ``status()`` -> (active slots, queued), read at
        scrape time."""
        return GenerationMetrics(self, model, status)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def exposition(self) -> tuple[bytes, str]:
        """What the operator port's ``/metrics`` answers."""
        return self.render(), CONTENT_TYPE_LATEST


class ModelMetrics:
    """One model's bound metric children; what the batcher records."""

    def __init__(self, metrics: WorkerMetrics, model: str):
        self.batch_size = metrics.batch_size.labels(model=model)
        self.batch_requests = metrics.batch_requests.labels(model=model)
        self.queue_seconds = metrics.queue_seconds.labels(model=model)
        self.compute_seconds = metrics.compute_seconds.labels(model=model)
        self.pending = metrics.pending.labels(model=model)
        self.queued = metrics.queued.labels(model=model)
        self.running = metrics.running.labels(model=model)
        self.batch_fill = metrics.batch_fill.labels(model=model)
        self.batch_width = {True: metrics.split_batches.labels(model=model, width="wide"),
                            False: metrics.split_batches.labels(model=model, width="narrow")}
        """By ``wide``: counted only by a batcher that splits."""
        self._outcomes = {outcome: metrics.requests.labels(model=model, outcome=outcome.value) for outcome in Outcome}

    def outcome(self, outcome: Outcome, count: int = 1) -> None:
        self._outcomes[outcome].inc(count)

    def set_load(self, queued: int, running: int) -> None:
        self.queued.set(queued)
        self.running.set(running)
        self.pending.set(queued + running)


class GenerationMetrics:
    """One generative model's bound metric children; what its ``generate`` records."""

    def __init__(self, metrics: WorkerMetrics, model: str, status: Callable[[], tuple[int, int]]):
        self.time_to_first_token = metrics.time_to_first_token.labels(model=model)
        self.generated_tokens = metrics.generated_tokens.labels(model=model)
        metrics.generation_slots.labels(model=model).set_function(lambda: status()[0])
        metrics.generation_queued.labels(model=model).set_function(lambda: status()[1])
        # The families every model reports, read at scrape time like the two above.
        metrics.running.labels(model=model).set_function(lambda: status()[0])
        metrics.queued.labels(model=model).set_function(lambda: status()[1])
        metrics.pending.labels(model=model).set_function(lambda: sum(status()))
        self._outcomes = {outcome: metrics.requests.labels(model=model, outcome=outcome.value) for outcome in Outcome}

    def outcome(self, outcome: Outcome) -> None:
        self._outcomes[outcome].inc()


__all__ = ["GenerationMetrics", "ModelMetrics", "Outcome", "WorkerMetrics"]
