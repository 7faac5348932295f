"""The cloud worker pool: load balancing over the workers that are up and not ejected.

Contract: ``pick(exclude)`` returns a worker that is up, not ejected and not in ``exclude``, by
``least_request`` (fewest outstanding calls, random among ties) or ``p2c_latency`` (of two random
candidates, the lower EWMA RTT), or None when none qualifies. ``available()`` says whether any
worker could be picked; ``statistic(name, min_samples)`` is the best candidate's RTT statistic
(what routing expects the cloud to take), None while no candidate has enough samples. Failures and
successes feed the outlier detector. ``set_workers`` replaces the membership (a reload,
discovery): a worker that stays under its name keeps its outlier state, a new one starts healthy.
"""

from __future__ import annotations

import random

from edgecloud.clock import Clock
from gateway.backend import Backend
from gateway.config import CloudPoolSettings
from gateway.latency import LatencyMonitor
from gateway.outlier import OutlierDetector

__all__ = ["CloudPool"]


class CloudPool:
    def __init__(self, settings: CloudPoolSettings, workers: list[Backend], monitor: LatencyMonitor, clock: Clock,
                 rng: random.Random | None = None):
        self.settings = settings
        self.workers = workers
        self.monitor = monitor
        self.detector = OutlierDetector(settings.outlier_detection, clock)
        self.detector.set_hosts([w.name for w in workers])
        self._rng = rng or random.Random()

    def set_workers(self, settings: CloudPoolSettings, workers: list[Backend]) -> None:
        self.settings = settings
        self.workers = workers
        self.detector.settings = settings.outlier_detection
        self.detector.set_hosts([w.name for w in workers])

    def candidates(self, exclude: set[str] = frozenset()) -> list[Backend]:
        return [w for w in self.workers if w.up and w.name not in exclude and not self.detector.is_ejected(w.name)]

    def available(self) -> bool:
        return bool(self.candidates())

    def pick(self, exclude: set[str] = frozenset()) -> Backend | None:
        candidates = self.candidates(exclude)
        if not candidates:
            return None
        if len(candidates) == 1:
            return candidates[0]
        if self.settings.lb_policy == "p2c_latency":
            a, b = self._rng.sample(candidates, 2)
            ea = self.monitor.stats(a.name).ewma_s or 0.0
            eb = self.monitor.stats(b.name).ewma_s or 0.0
            if ea == eb:
                return a if a.outstanding <= b.outstanding else b
            return a if ea < eb else b
        least = min(w.outstanding for w in candidates)
        return self._rng.choice([w for w in candidates if w.outstanding == least])

    def statistic(self, name: str, min_samples: int = 1) -> float | None:
        values = [value for worker in self.candidates()
                  if (value := self.monitor.stats(worker.name).statistic(name, min_samples=min_samples)) is not None]
        return min(values, default=None)

    def on_success(self, worker: Backend) -> None:
        self.detector.on_success(worker.name)

    def on_failure(self, worker: Backend) -> bool:
        return self.detector.on_failure(worker.name)
