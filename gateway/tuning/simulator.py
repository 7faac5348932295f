"""An offline discrete-event replay of a workload through the gateway's real routing policy.

Contract: ``simulate(workload, settings)`` builds the gateway's own ``RoutingPolicy`` on a
``LatencyStats`` and a ``FakeClock`` (nothing of the policy is re-implemented here) and replays,
in time order, what the gateway's dispatcher and prober do (``gateway.dispatch``, ``gateway.probes``):

- each arrival asks ``policy.decide(edge_up, cloud_up=True)``;
- an edge attempt started at ``t`` takes ``e = workload.edge.at(t)``. With ``decision.hedge`` and
  ``e > hedge_after``, a cloud attempt starts at ``t + hedge_after`` taking
  ``c = workload.cloud.at(t + hedge_after)``; if ``hedge_after + c < e`` the cloud wins (served by
  cloud, reason ``hedge_won``, latency ``hedge_after + c``) and the cancelled edge attempt is
  recorded then as a passive sample of ``hedge_after + c`` (the censored elapsed time); otherwise
  the edge's ``e`` is recorded when it answers. Every passive sample is followed by
  ``policy.observe_edge(rtt)``, as in ``Dispatcher._record_edge``;
- a cloud route takes ``workload.cloud.at(t)`` (cloud samples never reach the policy);
- edge probes start every ``probe_interval_ms`` from the workload's start unless one is still in
  flight, or its answered requests make it redundant (``gateway.probes.measured_by_traffic``, the
  prober's own rule); one answering within ``probe_timeout_ms`` is recorded as a probe sample and
  passed to ``policy.observe_probe(rtt)``; a slower one is a failure (``observe_probe(None)``), and
  ``failures_to_down`` consecutive failures mark the edge down until an edge call succeeds, as
  ``Backend.mark_failure`` / ``mark_success`` do.

Assumed, not simulated: the cloud is always up; backend RTTs do not depend on the load the
settings being tried put on them; request deadlines and ``edge.attempt_timeout_ms`` never bind;
gateway overhead is not in the latency (``overhead_ms`` adds a constant).
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

from edgecloud.clock import FakeClock
from gateway.config import RoutingSettings
from gateway.latency import LatencyStats
from gateway.probes import measured_by_traffic
from gateway.routing import Reason, Route, RoutingPolicy
from gateway.tuning.summary import Summary
from gateway.tuning.workload import Workload

__all__ = ["SimRequest", "SimResult", "simulate"]


@dataclass(frozen=True, slots=True)
class SimRequest:
    arrival: float
    """When the request arrived (workload clock)."""
    latency_s: float
    served_by: str
    """``edge`` or ``cloud``."""
    reason: str
    """The ``route_reason`` the gateway would report."""
    hedged: bool
    """A hedge to the cloud was sent for it."""


@dataclass(frozen=True)
class SimResult:
    settings: RoutingSettings
    requests: tuple[SimRequest, ...]
    transitions: int
    """``policy.transitions`` at the end of the replay."""
    states: tuple[tuple[float, str], ...]
    """``(t, RouteState value)`` at the start and at every change of the policy's state."""
    statistic: tuple[tuple[float, float | None], ...] = field(default=())
    """``(t, edge statistic in seconds)`` at every arrival, when asked for (plots)."""

    @property
    def summary(self) -> Summary:
        return Summary.of(((r.latency_s, r.served_by, r.hedged) for r in self.requests), transitions=self.transitions)


class _Replay:
    """One replay; the policy and the stats are the gateway's own classes."""

    def __init__(self, workload: Workload, settings: RoutingSettings, overhead_s: float, keep_statistic: bool):
        self.workload = workload
        self.settings = settings
        self.overhead_s = overhead_s
        self.keep_statistic = keep_statistic
        self.clock = FakeClock(workload.start)
        self.stats = LatencyStats(self.clock, window_s=settings.window_ms / 1000.0, ewma_alpha=settings.ewma_alpha)
        self.policy = RoutingPolicy(settings, self.stats, self.clock)
        self.edge_up = True
        self._failures = 0
        self._probe_in_flight = False
        self._answered_at = float("-inf")
        self._events: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self.requests: list[SimRequest] = []
        self.states: list[tuple[float, str]] = [(workload.start, self.policy.state.value)]
        self._state = self.policy.state
        self.statistic: list[tuple[float, float | None]] = []

    def at(self, t: float, action: Callable[[], None]) -> None:
        heapq.heappush(self._events, (t, next(self._seq), action))

    def run(self) -> SimResult:
        for arrival in self.workload.arrivals:
            self.at(arrival, self._arrive)
        self.at(self.workload.start, self._probe_tick)
        while self._events:
            t, _, action = heapq.heappop(self._events)
            self.clock.advance(t - self.clock.now())
            action()
            if self.policy.state is not self._state:
                self._state = self.policy.state
                self.states.append((t, self._state.value))
        return SimResult(self.settings, tuple(self.requests), self.policy.transitions, tuple(self.states),
                         tuple(self.statistic))

    # backend health, as ``Backend.mark_success`` / ``mark_failure`` -----------------------------

    def _edge_success(self) -> None:
        self._failures = 0
        self.edge_up = True

    def _edge_failure(self) -> None:
        self._failures += 1
        if self._failures >= self.settings.failures_to_down:
            self.edge_up = False

    # requests, as ``Dispatcher.dispatch`` / ``_hedged`` -------------------------------------------

    def _arrive(self) -> None:
        now = self.clock.now()
        if self.keep_statistic:
            self.statistic.append((now, self.policy.edge_statistic()))
        decision = self.policy.decide(self.edge_up, True)
        if decision.route is Route.CLOUD:
            self._served(now, self.workload.cloud.at(now), "cloud", decision.reason, False)
            return
        assert decision.route is Route.EDGE  # the cloud is assumed up, so never Route.NONE
        edge_s = self.workload.edge.at(now)
        hedge_after = self.settings.hedge_after_s
        if decision.hedge and edge_s > hedge_after:
            cloud_done = hedge_after + self.workload.cloud.at(now + hedge_after)
            if cloud_done < edge_s:
                self._served(now, cloud_done, "cloud", Reason.HEDGE_WON, True)
                self.at(now + cloud_done, lambda: self._edge_sample(cloud_done, answered=False))
                return
            self._served(now, edge_s, "edge", decision.reason, True)
        else:
            self._served(now, edge_s, "edge", decision.reason, False)
        self.at(now + edge_s, lambda: self._edge_sample(edge_s, answered=True))

    def _served(self, arrival: float, latency_s: float, served_by: str, reason: str, hedged: bool) -> None:
        self.requests.append(SimRequest(arrival, latency_s + self.overhead_s, served_by, reason, hedged))

    def _edge_sample(self, rtt_s: float, *, answered: bool) -> None:
        """``Dispatcher._record_edge``: a passive sample (censored when ``answered`` is False)."""
        if answered:
            self._edge_success()
            self._answered_at = self.clock.now()
        self.stats.record(rtt_s)
        self.policy.observe_edge(rtt_s)

    # probes, as ``Prober.run`` / ``probe`` ------------------------------------------

    def _probe_tick(self) -> None:
        now = self.clock.now()
        if not self._probe_in_flight and not measured_by_traffic(
                self.settings, up=self.edge_up, edge=True, state=self.policy.state,
                answered_at=self._answered_at, now=now):
            self._probe_in_flight = True
            rtt_s = self.workload.edge.at(now)
            timeout_s = self.settings.probe_timeout_ms / 1000.0
            if rtt_s > timeout_s:
                self.at(now + timeout_s, lambda: self._probe_done(None))
            else:
                self.at(now + rtt_s, lambda: self._probe_done(rtt_s))
        following = now + self.settings.probe_interval_ms / 1000.0
        if following <= self.workload.end:
            self.at(following, self._probe_tick)

    def _probe_done(self, rtt_s: float | None) -> None:
        self._probe_in_flight = False
        if rtt_s is None:
            self._edge_failure()
        else:
            self._edge_success()
            self.stats.record(rtt_s, probe=True)
        self.policy.observe_probe(rtt_s)


def simulate(workload: Workload, settings: RoutingSettings, *, overhead_ms: float = 0.0,
             keep_statistic: bool = False) -> SimResult:
    """Replay ``workload`` under ``settings``; ``overhead_ms`` is added to every latency."""
    return _Replay(workload, settings, overhead_ms / 1000.0, keep_statistic).run()
