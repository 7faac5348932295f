"""The dispatcher: where one routed request goes, with hedging, failover, retries and deadlines.

Contract for ``Dispatcher.dispatch(request, deadline, require_cloud=False) -> Served``:
- The routing policy decides (``require_cloud``: the cloud or nothing). Every decision is counted.
  No backend available on either side: ``Unavailable`` at once.
- A decision with ``hedge`` starts the first side's attempt; if it has not answered after
  ``hedge_after_s`` (bounded by the deadline), the other side starts too. The first answer wins
  (``route_reason`` ``hedge_won`` when the hedge did) and the loser is cancelled, which cancels its
  RPC upstream. When both fail, the most useful error is raised (a request error over a backend
  fault).
- A retryable failure (``ErrorKind.retryable``) of the first side moves the request to the other
  side, paid from the retry budget (``route_reason`` ``failover``); when the budget is spent, the
  other side is down or the deadline passed, the first side's error is raised. Non-retryable
  errors (INVALID_ARGUMENT and the like) are raised as they are, never retried.
- Cloud attempts go to the worker the pool picks; a retryable failure moves to another worker,
  each further attempt paid from the budget. A backend fault counts against the worker (outlier
  ejection); an unreachable backend (UNAVAILABLE) against its ``up``.
- ``deadline`` (on ``clock``) bounds every attempt: each gets what is left of it (and at most the
  per-side attempt timeouts). Nothing starts once it has passed (``DeadlineExceeded``).
- Edge RTTs are recorded for routing (a hedge loser's time too, as a lower bound), as are cloud
  RTTs — except a sample taken across a stall of this process's own event loop (``lag``), which
  measured the gateway, not the backend. An answer's bookkeeping (its RTT, the backend's health)
  is taken when it arrives and recorded on the loop's next turn (``after_answer``), off the
  request's own latency. Time comes from ``clock`` and waiting from ``sleep``: tests run every path
  on a fake clock.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from edgecloud.clock import Clock, Sleep
from edgecloud.loop_lag import LoopLag
from edgecloud.errors import DeadlineExceeded, ErrorKind, InferenceError, Unavailable
from edgecloud.types import InferRequest, InferResponse
from gateway.backend import CLOUD, EDGE, Backend
from gateway.cache.api import Served
from gateway.config import GatewayConfig
from gateway.escalation import ConfidenceBar, widen
from gateway.latency import LatencyMonitor
from gateway.metrics import GatewayMetrics
from gateway.pool import CloudPool
from gateway.retry_budget import RetryBudget
from gateway.routing import Decision, Reason, Route, RoutingPolicy

__all__ = ["ESCALATION_PARAMETER", "DispatchSettings", "Dispatcher"]

log = logging.getLogger(__name__)

ESCALATION_PARAMETER = "escalation"
"""Response parameter on an unsure edge answer returned as it is: ``kept: <why the cloud did not answer>``."""


@dataclass(frozen=True, slots=True)
class DispatchSettings:
    hedge_after_s: float
    """When a hedged request starts on the other side too."""
    cloud_attempt_timeout_s: float
    """The longest one cloud attempt may take before another worker is tried."""
    edge_attempt_timeout_s: float | None = None
    """The longest one edge attempt may take; None: only the deadline bounds it."""
    confidence_bars: Mapping[str, ConfidenceBar] = field(default_factory=dict)
    """Confidence escalation by model name."""

    @classmethod
    def from_config(cls, config: GatewayConfig) -> DispatchSettings:
        edge_timeout = config.edge.attempt_timeout_ms
        bars = {name: ConfidenceBar(rule.output, rule.min_confidence, rule.min_margin, rule.reserve_ms / 1000.0)
                for name, rule in config.routing.escalation.items()}
        return cls(hedge_after_s=config.routing.hedge_after_s,
                   cloud_attempt_timeout_s=config.cloud.attempt_timeout_ms / 1000.0,
                   edge_attempt_timeout_s=None if edge_timeout is None else edge_timeout / 1000.0,
                   confidence_bars=bars)


class Dispatcher:
    def __init__(self, *, edge: Backend | None, pool: CloudPool, policy: RoutingPolicy, monitor: LatencyMonitor,
                 budget: RetryBudget, settings: DispatchSettings, clock: Clock, sleep: Sleep = asyncio.sleep,
                 metrics: GatewayMetrics | None = None, lag: LoopLag | None = None):
        self.edge = edge
        self.pool = pool
        self.policy = policy
        self.monitor = monitor
        self.budget = budget
        self.settings = settings
        self.clock = clock
        self._sleep = sleep
        self.metrics = metrics or GatewayMetrics()
        self.lag = lag
        self._bookkeeping: list[tuple[Callable[..., None], tuple]] = []
        """What answers left to record on the loop's next turn (``after_answer``)."""

    # the request's path ----------------------------------------------------------------------

    def decide(self, require_cloud: bool = False) -> Decision:
        cloud_up = self.pool.available()
        if require_cloud:
            decision = Decision(Route.CLOUD, Reason.QUALITY_CLOUD, False) if cloud_up else \
                Decision(Route.NONE, Reason.NO_BACKEND, False)
        else:
            decision = self.policy.decide(self.edge_up(), cloud_up)
        self.metrics.count_decision(decision.route.value, decision.reason)
        return decision

    async def dispatch(self, request: InferRequest, deadline: float, *, require_cloud: bool = False) -> Served:
        bar = None if require_cloud else self.settings.confidence_bars.get(request.model_name)
        if bar is None:
            return await self._dispatch(request, deadline, require_cloud, None)
        upstream, restore = widen(request, bar)
        served = await self._dispatch(upstream, deadline, False, bar)
        if restore is not None:
            served.response = restore(served.response)
        return served

    async def _dispatch(self, request: InferRequest, deadline: float, require_cloud: bool,
                        bar: ConfidenceBar | None) -> Served:
        self.budget.on_request()
        decision = self.decide(require_cloud)
        if decision.route is Route.NONE:
            if require_cloud:
                raise Unavailable("a cloud-quality answer was requested and no cloud worker is available")
            raise Unavailable("no backend can serve the request: the edge and every cloud worker are unavailable")
        first, second = (EDGE, CLOUD) if decision.route is Route.EDGE else (CLOUD, EDGE)
        if decision.hedge:
            return await self._hedged(request, deadline, decision, first, second, bar)
        try:
            response = await self._attempt(first, request, deadline)
        except InferenceError as exc:
            if require_cloud:
                raise
            served = await self._fail_over(exc, second, request, deadline)
            return self._kept_if_unsure(served, bar)
        return await self._checked(Served(response, first, decision.reason), request, deadline, bar)

    async def _hedged(self, request: InferRequest, deadline: float, decision: Decision, first: str,
                      second: str, bar: ConfidenceBar | None = None) -> Served:
        primary = asyncio.ensure_future(self._attempt(first, request, deadline))
        tasks = [primary]
        try:
            hedge_after = min(self.settings.hedge_after_s, self.remaining(deadline))
            if not await self._done_within(primary, hedge_after) and self.available(second):
                backup = asyncio.ensure_future(self._attempt(second, request, deadline))
                tasks.append(backup)
                winner = await self._first_success(primary, backup)
                won_by = second if winner is backup else first
                self.metrics.hedges.labels(won_by).inc()
                served = Served(winner.result(), won_by, Reason.HEDGE_WON if winner is backup else decision.reason)
                other = primary if winner is backup else backup
                return await self._checked(served, request, deadline, bar, pending_cloud=other)
            try:
                response = await primary
            except InferenceError as exc:
                return self._kept_if_unsure(await self._fail_over(exc, second, request, deadline), bar)
            return await self._checked(Served(response, first, decision.reason), request, deadline, bar)
        finally:
            for task in tasks:
                if not task.done():
                    task.cancel()

    async def _done_within(self, task: asyncio.Future, timeout_s: float) -> bool:
        if timeout_s > 0 and not task.done():
            timer = asyncio.ensure_future(self._sleep(timeout_s))
            try:
                await asyncio.wait((task, timer), return_when=asyncio.FIRST_COMPLETED)
            finally:
                timer.cancel()
        return task.done()

    @staticmethod
    async def _first_success(*tasks: asyncio.Future) -> asyncio.Future:
        """The first task to succeed; when all fail, the most useful failure is raised."""
        pending = set(tasks)
        failed: list[asyncio.Future] = []
        while pending:
            _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in tasks:  # in the callers' order, so ties resolve the same way every time
                if task.done() and task not in failed:
                    if task.exception() is None:
                        return task
                    failed.append(task)
        errors = [task.exception() for task in failed]
        for error in errors:
            if isinstance(error, InferenceError) and not error.retryable:
                raise error
        raise errors[-1]

    # confidence escalation --------------------------------------------------------------------

    async def _checked(self, served: Served, request: InferRequest, deadline: float, bar: ConfidenceBar | None,
                       pending_cloud: asyncio.Future | None = None) -> Served:
        """``served`` as it is, unless it is an unsure edge answer: then the cloud's answer (a running
        hedge's when there is one), or the edge's marked ``low_confidence_kept`` when the cloud cannot
        answer before the deadline (less the bar's reserve)."""
        if bar is None or served.served_by != EDGE or not bar.unsure(served.response):
            return served
        limit = deadline - bar.reserve_s
        outcome = "escalated"
        try:
            if pending_cloud is not None:
                outcome = "hedge"
                if not await self._done_within(pending_cloud, limit - self.clock.now()):
                    raise DeadlineExceeded("the cloud did not answer before the deadline")
                response = pending_cloud.result()  # the hedge's own error, when it failed
            elif self.pool.available() and limit > self.clock.now():
                response = await self._cloud_attempts(request, limit)
            else:
                raise Unavailable("no cloud worker is available")
        except InferenceError as exc:
            self.metrics.escalations.labels("kept").inc()
            return self._kept(served, exc)
        self.metrics.escalations.labels(outcome).inc()
        return Served(response, CLOUD, Reason.LOW_CONFIDENCE)

    def _kept_if_unsure(self, served: Served, bar: ConfidenceBar | None) -> Served:
        """A failover's edge answer: the cloud has just failed, so an unsure one is kept, marked."""
        if bar is None or served.served_by != EDGE or not bar.unsure(served.response):
            return served
        self.metrics.escalations.labels("kept").inc()
        return self._kept(served, Unavailable("the cloud failed this request"))

    @staticmethod
    def _kept(served: Served, error: InferenceError) -> Served:
        served.response.parameters[ESCALATION_PARAMETER] = f"kept: {error.kind.value}"
        return Served(served.response, EDGE, Reason.LOW_CONFIDENCE_KEPT, cacheable=False)

    async def _fail_over(self, error: InferenceError, side: str, request: InferRequest, deadline: float) -> Served:
        """After ``error`` on one side: the other side, when it may and can be tried."""
        if not error.retryable:
            raise error
        if self.remaining(deadline) <= 0:
            raise DeadlineExceeded("the request's deadline passed") from error
        if not self.available(side) or not self.spend_retry():
            raise error
        response = await self._attempt(side, request, deadline)
        return Served(response, side, Reason.FAILOVER)

    # attempts --------------------------------------------------------------------------------

    def _attempt(self, side: str, request: InferRequest, deadline: float) -> Awaitable[InferResponse]:
        return self._edge_attempt(request, deadline) if side == EDGE else self._cloud_attempts(request, deadline)

    async def _edge_attempt(self, request: InferRequest, deadline: float) -> InferResponse:
        edge = self.edge
        if edge is None:
            raise Unavailable("no edge is configured")
        timeout = self.remaining(deadline)
        if self.settings.edge_attempt_timeout_s is not None:
            timeout = min(timeout, self.settings.edge_attempt_timeout_s)
        if timeout <= 0:
            raise DeadlineExceeded("the request's deadline passed")
        start = self.clock.now()
        edge.outstanding += 1
        try:
            response = await edge.infer(request, timeout)
        except asyncio.CancelledError:
            elapsed = self.clock.now() - start
            if elapsed >= self.settings.hedge_after_s:  # lost to a hedge: the edge took at least this long
                self._record_edge(edge, start)
            raise
        except InferenceError as exc:
            if exc.kind is ErrorKind.DEADLINE_EXCEEDED:
                self._record_edge(edge, start)
            self.note_failure(edge, exc)
            raise
        finally:
            edge.outstanding -= 1
        self.after_answer(self._edge_answered, edge, start, self.clock.now())
        return response

    async def _cloud_attempts(self, request: InferRequest, deadline: float) -> InferResponse:
        """Cloud workers until one answers; every attempt after the first is paid from the budget."""
        tried: set[str] = set()
        last: InferenceError | None = None
        while True:
            worker = self.pool.pick(tried)
            if worker is None:
                break
            remaining = self.remaining(deadline)
            if remaining <= 0:
                raise DeadlineExceeded("the request's deadline passed") from last
            if tried and not self.spend_retry():
                break
            tried.add(worker.name)
            start = self.clock.now()
            worker.outstanding += 1
            try:
                response = await worker.infer(request, min(self.settings.cloud_attempt_timeout_s, remaining))
            except InferenceError as exc:
                self.note_failure(worker, exc)
                if exc.backend_fault and self.pool.on_failure(worker):
                    self.metrics.ejections.inc()
                if not exc.retryable:
                    raise
                last = exc
                continue
            finally:
                worker.outstanding -= 1
            self.after_answer(self._cloud_answered, worker, start, self.clock.now())
            return response
        if last is not None:
            raise last
        raise Unavailable("no cloud worker is available")

    # bookkeeping -----------------------------------------------------------------------------

    def remaining(self, deadline: float) -> float:
        return deadline - self.clock.now()

    def edge_up(self) -> bool:
        return self.edge is not None and self.edge.up

    def available(self, side: str) -> bool:
        return self.edge_up() if side == EDGE else self.pool.available()

    def spend_retry(self) -> bool:
        allowed = self.budget.try_spend()
        self.metrics.retries.labels("allowed" if allowed else "refused").inc()
        return allowed

    def measured_the_backend(self, start: float) -> bool:
        """False when this process's loop stalled since ``start``: the time is partly our own."""
        if self.lag is not None and self.lag.stalled_since(start):
            self.metrics.discarded_samples.inc()
            return False
        return True

    def after_answer(self, bookkeeping: Callable[..., None], *args) -> None:
        """Run ``bookkeeping(*args)`` on the loop's next turn, once the answer it is about has gone on
        its way (the caller returns it now): the latency of a request never includes recording it.
        What the answers of one turn leave is run in one callback, in the order it was left, so
        samples keep their order, and before anything that awaits those answers resumes."""
        pending = self._bookkeeping
        pending.append((bookkeeping, args))
        if len(pending) == 1:
            asyncio.get_running_loop().call_soon(self._keep_books)

    def _keep_books(self) -> None:
        pending, self._bookkeeping = self._bookkeeping, []
        for bookkeeping, args in pending:
            try:
                bookkeeping(*args)
            except Exception:  # one failed record must not drop the others'
                log.exception("recording an answer failed")

    def _edge_answered(self, edge: Backend, start: float, end: float) -> None:
        self.note_answered(edge, end)
        self._record_edge(edge, start, end)

    def _cloud_answered(self, worker: Backend, start: float, end: float) -> None:
        self.note_answered(worker, end)
        if self.measured_the_backend(start):
            self.monitor.record(worker.name, end - start)
        self.pool.on_success(worker)

    def _record_edge(self, edge: Backend, start: float, end: float | None = None) -> None:
        if self.measured_the_backend(start):
            rtt_s = (self.clock.now() if end is None else end) - start
            self.monitor.record(edge.name, rtt_s)
            self.policy.observe_edge(rtt_s)

    def note_answered(self, backend: Backend, at: float | None = None) -> None:
        backend.answered_at = self.clock.now() if at is None else at
        if backend.mark_success():
            self.monitor.stats(backend.name).restart_warmup()

    @staticmethod
    def note_failure(backend: Backend, error: InferenceError) -> None:
        if error.kind is ErrorKind.UNAVAILABLE:
            backend.mark_failure()
