"""A scripted ``Backend`` on virtual time, and a dispatcher wired from real policies around it.

``FakeBackend`` answers after ``latency_s`` virtual seconds (``math.inf``: never), or fails with
``error``; ``script`` overrides both per call, in order (``(latency_s, error)`` pairs). It honours
``timeout_s`` as a real backend does (``DeadlineExceeded`` once it has passed) and counts
``calls``, ``cancelled`` calls and the ``timeouts`` it was given.
"""

from __future__ import annotations

import math
import random
from collections import deque

import numpy as np

from edgecloud.errors import DeadlineExceeded, InferenceError
from edgecloud.types import InferRequest, InferResponse, ModelMetadata, Tensor, TensorSpec
from gateway.backend import CLOUD, EDGE, Backend
from gateway.config import CloudPoolSettings, RoutingSettings
from gateway.dispatch import Dispatcher, DispatchSettings
from gateway.latency import LatencyMonitor
from gateway.metrics import GatewayMetrics
from gateway.pool import CloudPool
from gateway.retry_budget import RetryBudget
from gateway.routing import RoutingPolicy
from tests.support.virtual_clock import VirtualClock

MODEL = ModelMetadata("m", ("1",), "fake", (TensorSpec("x", "FP32", (-1,)),), (TensorSpec("y", "FP32", (-1,)),))


def request(request_id: str = "r") -> InferRequest:
    data = np.ones(1, np.float32)
    return InferRequest(model_name="m", id=request_id, inputs=[Tensor("x", "FP32", (1,), data)])


class FakeBackend(Backend):
    def __init__(self, name: str, role: str, clock: VirtualClock, *, latency_s: float = 0.010,
                 error: InferenceError | None = None, script: list[tuple[float, InferenceError | None]] | None = None):
        super().__init__(name, role)
        self.clock = clock
        self.latency_s = latency_s
        self.error = error
        self.script = deque(script or ())
        self.calls = 0
        self.cancelled = 0
        self.probes = 0
        self.timeouts: list[float | None] = []
        self.metadata = MODEL

    async def _serve(self, timeout_s: float | None) -> None:
        latency, error = self.script.popleft() if self.script else (self.latency_s, self.error)
        self.timeouts.append(timeout_s)
        try:
            if timeout_s is not None and latency > timeout_s:
                await self.clock.sleep(timeout_s)
                raise DeadlineExceeded("a backend did not answer in time")
            if math.isinf(latency):
                await self.clock.sleep(10**9)
            await self.clock.sleep(latency)
        except BaseException as exc:
            if not isinstance(exc, Exception):
                self.cancelled += 1
            raise
        if error is not None:
            raise error

    async def infer(self, request: InferRequest, timeout_s: float | None) -> InferResponse:
        self.calls += 1
        await self._serve(timeout_s)
        data = np.array([float(self.calls)], np.float32)
        return InferResponse(model_name=request.model_name, id=request.id, parameters={"answered_by": self.name},
                             outputs=[Tensor("y", "FP32", (1,), data)])

    async def probe(self, request: InferRequest, timeout_s: float) -> None:
        self.probes += 1
        await self._serve(timeout_s)

    async def model_metadata(self, name: str, version: str, timeout_s: float) -> ModelMetadata:
        await self._serve(timeout_s)
        return self.metadata


def edge(clock: VirtualClock, **kwargs) -> FakeBackend:
    return FakeBackend(EDGE, EDGE, clock, **kwargs)


def worker(clock: VirtualClock, index: int = 0, **kwargs) -> FakeBackend:
    return FakeBackend(f"cloud@w{index}", CLOUD, clock, **kwargs)


def make_dispatcher(clock: VirtualClock, edge_backend: Backend | None, workers: list[Backend], *,
                    hedge_after_s: float = 0.2, cloud_attempt_timeout_s: float = 2.0,
                    edge_attempt_timeout_s: float | None = None, budget: RetryBudget | None = None,
                    pool: dict | None = None, seed: int = 0, bars: dict | None = None, **routing) -> Dispatcher:
    """A ``Dispatcher`` over the real policy, monitor, pool, outlier detector and budget, all on
    ``clock``; latency warm-up off unless asked for."""
    routing.setdefault("warmup_samples", 0)
    settings = RoutingSettings(**routing)
    monitor = LatencyMonitor(clock, window_s=settings.window_ms / 1000.0, ewma_alpha=settings.ewma_alpha,
                             warmup=settings.warmup_samples)
    cloud_pool = CloudPool(CloudPoolSettings.model_validate({"workers": [w.name for w in workers], **(pool or {})}),
                           workers, monitor, clock, rng=random.Random(seed))
    policy = RoutingPolicy(settings, monitor.stats(EDGE), clock,
                           cloud_statistic=lambda: cloud_pool.statistic(settings.statistic, settings.min_samples))
    return Dispatcher(edge=edge_backend, pool=cloud_pool, policy=policy, monitor=monitor,
                      budget=budget or RetryBudget(0.2, 100),
                      settings=DispatchSettings(hedge_after_s, cloud_attempt_timeout_s, edge_attempt_timeout_s,
                                                confidence_bars=bars or {}),
                      clock=clock, sleep=clock.sleep, metrics=GatewayMetrics())
