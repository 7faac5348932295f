"""Active probes: every backend answers a small real inference every ``probe_interval_ms``.

Contract: ``Prober.run()`` loops until cancelled; each round starts one probe per backend that has
none in flight (a slow backend never delays the others' probes), except, with
``probe_only_when_idle``, a backend up that answered a real request within the interval (its
traffic measures it; the edge is probed regardless while routing prefers the cloud), and then
calls ``on_round`` (gauges); ``measured_by_traffic`` is that rule, shared with the tuning
simulator. A probe that answers, even with a request error (the probe model is missing there),
marks its backend up and records its RTT (``probe=True``); a backend fault (unreachable, timed out
after ``probe_timeout_ms``, failed) counts against its ``up``. A backend that comes back up starts
its latency warm-up again. Edge probes drive the routing policy's recovery. ``probing(backend)``
says whether a probe of that very backend is in flight (a backend leaving the pool is closed only
after it ends); probes of backends no longer listed are forgotten once they end. A probe taken across
a stall of this process's event loop (``lag``) records no RTT. Time comes from the injected clock
and sleep.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from edgecloud.clock import Clock, Sleep
from edgecloud.codec import bytes_array, request_to_wire
from edgecloud.errors import InferenceError
from edgecloud.loop_lag import LoopLag
from edgecloud.types import InferRequest, Tensor
from gateway.backend import EDGE, Backend
from gateway.config import RoutingSettings
from gateway.latency import LatencyMonitor
from gateway.routing import RouteState, RoutingPolicy

__all__ = ["Prober", "measured_by_traffic", "probe_request"]

log = logging.getLogger(__name__)


def probe_request(settings: RoutingSettings) -> InferRequest:
    """The probe: ``probe_text`` as the BYTES [1] input ``probe_input`` of ``probe_model``."""
    data = bytes_array([settings.probe_text])
    request = InferRequest(model_name=settings.probe_model, id="probe",
                           inputs=[Tensor(settings.probe_input, "BYTES", data.shape, data)])
    request.wire = request_to_wire(request)  # encoded once, sent as is by every gRPC probe
    return request


def measured_by_traffic(settings: RoutingSettings, *, up: bool, edge: bool, state: RouteState,
                        answered_at: float, now: float) -> bool:
    """Whether real requests a backend answered make its probe redundant (``probe_only_when_idle``):
    one answered within the last ``probe_interval_ms``, unless the backend is down, or is the edge
    while routing prefers the cloud (its probes drive the recovery)."""
    if not settings.probe_only_when_idle or not up:
        return False
    if edge and state is not RouteState.EDGE_PREFERRED:
        return False
    return now - answered_at < settings.probe_interval_ms / 1000.0


class Prober:
    def __init__(self, backends: Callable[[], list[Backend]], monitor: LatencyMonitor, policy: RoutingPolicy,
                 settings: RoutingSettings, *, clock: Clock, sleep: Sleep = asyncio.sleep,
                 on_round: Callable[[], None] | None = None, lag: LoopLag | None = None):
        self._backends = backends
        self.monitor = monitor
        self.policy = policy
        self.settings = settings
        self.request = probe_request(settings)
        self._clock = clock
        self._sleep = sleep
        self._on_round = on_round
        self._lag = lag
        self._running: dict[str, asyncio.Task] = {}
        self._probed: dict[str, Backend] = {}
        """The backend each task in ``_running`` probes (a name may pass to a new backend)."""

    def reconfigure(self, settings: RoutingSettings) -> None:
        self.settings = settings
        self.request = probe_request(settings)

    async def run(self) -> None:
        try:
            while True:
                backends = self._backends()
                for backend in backends:
                    task = self._running.get(backend.name)
                    if (task is None or task.done()) and not measured_by_traffic(
                            self.settings, up=backend.up, edge=backend.name == EDGE, state=self.policy.state,
                            answered_at=backend.answered_at, now=self._clock.now()):
                        self._running[backend.name] = asyncio.ensure_future(self.probe(backend))
                        self._probed[backend.name] = backend
                if len(self._running) > len(backends):
                    self._forget_gone({backend.name for backend in backends})
                if self._on_round is not None:
                    self._on_round()
                await self._sleep(self.settings.probe_interval_ms / 1000.0)
        finally:
            tasks = list(self._running.values())
            self._running.clear()
            self._probed.clear()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def probing(self, backend: Backend) -> bool:
        """Whether a probe of ``backend`` (this object, not another of its name) is in flight."""
        task = self._running.get(backend.name)
        return task is not None and not task.done() and self._probed.get(backend.name) is backend

    def _forget_gone(self, listed: set[str]) -> None:
        for name in [name for name, task in self._running.items() if name not in listed and task.done()]:
            del self._running[name]
            del self._probed[name]

    async def probe(self, backend: Backend) -> float | None:
        """Probe ``backend`` once; its RTT in seconds, or None when it failed."""
        start = self._clock.now()
        rtt: float | None
        try:
            await backend.probe(self.request, self.settings.probe_timeout_ms / 1000.0)
        except InferenceError as exc:
            rtt = None if exc.backend_fault else self._clock.now() - start
        except Exception:
            log.exception("probe of %s failed unexpectedly", backend.name)
            rtt = None
        else:
            rtt = self._clock.now() - start
        if rtt is None:
            if backend.mark_failure():
                log.warning("%s is down: it failed %d probes or requests in a row", backend.name,
                            backend.failures_to_down)
        elif backend.mark_success():
            log.warning("%s is up again", backend.name)
            self.monitor.stats(backend.name).restart_warmup()
        if rtt is not None and self._lag is not None and self._lag.stalled_since(start):
            return rtt  # this process stalled meanwhile: the time is partly ours, not the backend's
        if rtt is not None:
            self.monitor.record(backend.name, rtt, probe=True)
        if backend.name == EDGE:
            self.policy.observe_probe(rtt)
        return rtt
