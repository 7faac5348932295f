"""Where one token stream goes: routing by time to first token, first-token hedging, mid-stream
failover, stalls and deadlines.

Contract for ``StreamDispatcher.stream(request, generate, deadline, require_cloud=False)``, an
async iterator of the backend's responses (each a chunk of text; the last flagged
``triton_final_response``):
- The stream policy (a ``RoutingPolicy`` over the edge's TTFT samples, ``threshold_ms`` and the
  same hysteresis and probes) picks the side. ``require_cloud``: the cloud or nothing. No backend
  on either side: ``Unavailable`` at once.
- First token: a decision with ``hedge`` starts the same stream on the other side when the first
  has produced no token after ``streams.hedge_after_ms``; the first to produce a token wins
  (``route_reason`` ``hedge_won`` when the hedge did) and the other is closed, which cancels its
  call upstream (its generation stops). A side that fails, or produces nothing within
  ``first_token_timeout_ms``, before any token was sent, is replaced by the other side (or another
  cloud worker), paid from the retry budget (``failover``).
- Mid-stream: when the serving backend fails or stalls (no token for ``stall_ms``), the stream is
  continued on the other side (another cloud worker when the edge cannot serve) from the prompt
  plus the text already sent, with the tokens left, so the client sees nothing repeated and
  nothing lost (``route_reason`` ``failover_midstream``); off with ``midstream_failover: false``,
  and never for a request error.
- Where served: the first chunk carries ``served_by`` (the side that produced it) and
  ``route_reason``, and so does the first chunk of a continuation (the side it continues on,
  ``failover_midstream``); the final chunk carries them again, ``served_by`` naming every side
  that served in order (``edge+cloud``), and usage counted over the whole answer.
- ``deadline`` (on ``clock``) ends the stream with ``DeadlineExceeded`` after the chunks already
  sent. Closing the iterator (a client that left) closes the serving leg: upstream generation
  stops.
- Samples: each side's TTFT (the edge's drives the stream policy; a hedge loser's wait counts as
  a lower bound) and inter-token gaps; with ``inter_token_threshold_ms`` set, an edge whose
  inter-token statistic is over it moves streams to the cloud too. Time comes from ``clock`` and
  waiting from ``sleep``: tests run every path on a fake clock.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from edgecloud.clock import Clock, Sleep
from edgecloud.errors import DeadlineExceeded, ErrorKind, InferenceError, InternalError, Unavailable
from edgecloud.generation import FINAL_PARAMETER, GenerateRequest, text_tensor
from edgecloud.types import InferRequest, InferResponse
from gateway.backend import CLOUD, EDGE, Backend
from gateway.config import RoutingSettings
from gateway.dispatch import Dispatcher
from gateway.latency import LatencyMonitor
from gateway.metrics import GatewayMetrics
from gateway.routing import Decision, Reason, Route, RoutingPolicy
from gateway.where_served import ROUTE_REASON, SERVED_BY
from gateway.streams.requests import response_text, tokens_so_far, upstream_request

__all__ = ["StreamDispatcher"]

log = logging.getLogger(__name__)

_END = object()


async def _next(responses: AsyncIterator[InferResponse]):
    try:
        return await anext(responses)
    except StopAsyncIteration:
        return _END


class _Leg:
    """One backend's stream: its responses, read one at a time."""

    __slots__ = ("side", "backend", "responses", "opened", "last_at", "asked_at", "pending", "closed", "watchdog",
                 "expired")

    def __init__(self, side: str, backend: Backend, responses: AsyncIterator[InferResponse], opened: float):
        self.side = side
        self.backend = backend
        self.responses = responses
        self.opened = opened
        self.last_at = opened
        self.asked_at = opened
        """When the pending read started: a consumer that asks late is not the backend stalling."""
        self.pending: asyncio.Task | None = None
        self.closed = False
        self.watchdog: asyncio.Task | None = None
        self.expired: str | None = None
        """Set by the watchdog when it ended a wait: ``stall`` or ``deadline``."""
        backend.outstanding += 1

    def next(self, now: float | None = None) -> asyncio.Task:
        if self.pending is None:
            self.pending = asyncio.ensure_future(_next(self.responses))
            if now is not None:
                self.asked_at = now
        return self.pending

    def take(self) -> InferResponse:
        """The response the finished ``next()`` read (raises its error; a stream that ended without
        a final response is the backend's fault)."""
        task, self.pending = self.pending, None
        result = task.result()
        if result is _END:
            raise InternalError("a backend ended a stream before its final response")
        return result

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.backend.outstanding -= 1
        if self.watchdog is not None and self.watchdog is not asyncio.current_task():
            self.watchdog.cancel()
        task, self.pending = self.pending, None
        if task is not None:
            if not task.done():
                task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        try:
            await self.responses.aclose()
        except Exception:  # noqa: BLE001 - closing a broken stream: nothing left to learn from it
            log.debug("closing a %s stream failed", self.side, exc_info=True)


@dataclass(slots=True)
class _Answer:
    """What the client has been sent so far."""

    generate: GenerateRequest
    reason: str = ""
    sides: list[str] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    chunks: int = 0
    tokens: int = 0
    """Completion tokens behind the text sent, over every leg."""
    leg_base: int = 0
    """Tokens sent before the current leg started (a continuation counts from zero)."""
    continued: bool = False
    resumed: bool = False
    """The next chunk is the first of a continuation (it says where it was served, too)."""

    def served_by(self) -> str:
        return "+".join(self.sides)


class StreamDispatcher:
    def __init__(self, core: Dispatcher, *, policy: RoutingPolicy, ttft: LatencyMonitor, itl: LatencyMonitor,
                 settings: RoutingSettings, clock: Clock, sleep: Sleep = asyncio.sleep,
                 metrics: GatewayMetrics | None = None):
        self.core = core
        self.policy = policy
        self.ttft = ttft
        self.itl = itl
        self.settings = settings
        self.clock = clock
        self._sleep = sleep
        self.metrics = metrics or core.metrics

    # decisions -------------------------------------------------------------------------------

    def decide(self, require_cloud: bool = False) -> Decision:
        cloud_up = self.core.pool.available()
        if require_cloud:
            decision = Decision(Route.CLOUD, Reason.QUALITY_CLOUD, False) if cloud_up else \
                Decision(Route.NONE, Reason.NO_BACKEND, False)
        else:
            decision = self.policy.decide(self.core.edge_up(), cloud_up)
        self.metrics.count_decision(decision.route.value, decision.reason)
        return decision

    # the stream ------------------------------------------------------------------------------

    async def stream(self, request: InferRequest, generate: GenerateRequest, deadline: float, *,
                     require_cloud: bool = False) -> AsyncIterator[InferResponse]:
        self.core.budget.on_request()
        decision = self.decide(require_cloud)
        if decision.route is Route.NONE:
            if require_cloud:
                raise Unavailable("a cloud-quality answer was requested and no cloud worker is available")
            raise Unavailable("no backend can serve the request: the edge and every cloud worker are unavailable")
        first = EDGE if decision.route is Route.EDGE else CLOUD
        answer = _Answer(generate, reason=decision.reason)
        upstream = upstream_request(request, prompt=generate.prompt, sampling=generate.sampling)
        order = [first] if require_cloud else [first, CLOUD if first == EDGE else EDGE]
        leg, response = await self._first_token(upstream, deadline, order, decision.hedge, answer)
        try:
            while True:
                final = response.parameters.get(FINAL_PARAMETER) is True
                yield self._sent(answer, leg, response, final)
                if final:
                    self._finished(leg)
                    return
                leg, response = await self._next_chunk(leg, request, deadline, answer, require_cloud)
        finally:
            if leg is not None:
                await leg.close()

    # first token -----------------------------------------------------------------------------

    def _open(self, side: str, request: InferRequest, deadline: float, tried: set[str]) -> _Leg | None:
        """A new stream on ``side`` (a cloud worker not in ``tried``), or None when none can serve."""
        core = self.core
        if side == EDGE:
            backend = core.edge if core.edge_up() and EDGE not in tried else None
        else:
            backend = core.pool.pick(tried)
        if backend is None:
            return None
        tried.add(backend.name)
        timeout = max(0.001, core.remaining(deadline))
        return _Leg(side, backend, backend.stream(request, timeout), self.clock.now())

    async def _first_token(self, request: InferRequest, deadline: float, order: list[str], hedge: bool,
                           answer: _Answer) -> tuple[_Leg, InferResponse]:
        """The first leg to produce a token (a chunk with text, or the final one) and that chunk.

        ``order``: the sides to try, first to last; with ``hedge`` the second starts when the first
        has produced nothing after ``hedge_after``; otherwise a side starts when the one before it
        failed (paid from the retry budget). More cloud workers are tried after the last side."""
        streams = self.settings.streams
        tried: set[str] = set()
        live: list[_Leg] = []
        errors: list[InferenceError] = []
        queue = list(order)
        started = 0
        hedge_at = self.clock.now() + self.settings.stream_hedge_after_s if hedge and len(order) > 1 else None
        hedged = False

        def start_next(paid: bool) -> bool:
            nonlocal started
            while queue:
                side = queue[0]
                if started and paid and not self.core.spend_retry():
                    return False
                leg = self._open(side, request, deadline, tried)
                if leg is None:
                    queue.pop(0)
                    continue
                if side == CLOUD and self.core.pool.pick(tried) is not None:
                    pass  # keep CLOUD queued: another worker may take over if this one fails
                else:
                    queue.pop(0)
                started += 1
                live.append(leg)
                return True
            return False

        try:
            if not start_next(paid=False):
                raise Unavailable("no backend can serve the request")
            while True:
                if not live:
                    error = self._worst(errors)
                    if error is not None and not error.retryable:
                        raise error
                    if self.core.remaining(deadline) <= 0:
                        raise DeadlineExceeded("the request's deadline passed before the first token")
                    if not start_next(paid=True):
                        raise error or Unavailable("no backend can serve the request")
                    hedge_at = None  # the other side runs already: no hedge on top of a failover
                    continue
                now = self.clock.now()
                waits = [deadline - now] + [leg.opened + streams.first_token_timeout_ms / 1000.0 - now
                                            for leg in live]
                if hedge_at is not None and not hedged:
                    waits.append(hedge_at - now)
                done = await self._wait_any([leg.next() for leg in live], max(0.0, min(waits)))
                now = self.clock.now()
                if not done:
                    if now >= deadline:
                        raise DeadlineExceeded("the request's deadline passed before the first token")
                    if hedge_at is not None and not hedged and now >= hedge_at:
                        hedged = True
                        if start_next(paid=False):
                            self.metrics.stream_hedges.labels("started").inc()
                    for leg in list(live):
                        if now - leg.opened >= streams.first_token_timeout_ms / 1000.0:
                            live.remove(leg)
                            self._record_ttft(leg, now - leg.opened)
                            await leg.close()
                            errors.append(DeadlineExceeded(f"no first token from the {leg.side} within "
                                                           f"{streams.first_token_timeout_ms:g} ms"))
                    continue
                for leg in list(live):
                    if leg.pending is None or not leg.pending.done():
                        continue
                    try:
                        response = leg.take()
                    except InferenceError as exc:
                        live.remove(leg)
                        self._leg_failed(leg, exc)
                        await leg.close()
                        errors.append(exc)
                        continue
                    if not response_text(response) and response.parameters.get(FINAL_PARAMETER) is not True:
                        continue  # nothing to show yet
                    live.remove(leg)
                    self._record_ttft(leg, now - leg.opened)
                    self.core.note_answered(leg.backend)
                    if errors or leg.side != order[0]:
                        answer.reason = Reason.HEDGE_WON if hedged and not errors else Reason.FAILOVER
                    if hedged:
                        self.metrics.stream_hedges.labels("won_by_" + leg.side).inc()
                    return leg, response
        finally:
            for other in live:
                if hedged and other.side == EDGE:
                    self._record_ttft(other, self.clock.now() - other.opened, lower_bound=True)
                await other.close()

    # mid-stream ------------------------------------------------------------------------------

    async def _next_chunk(self, leg: _Leg, request: InferRequest, deadline: float, answer: _Answer,
                          require_cloud: bool) -> tuple[_Leg | None, InferResponse]:
        """The serving leg's next chunk. A watchdog per leg (not a timer per chunk: a chunk costs
        no more than reading it) ends a wait that passes ``stall_ms`` since the last chunk, or the
        deadline; then the stream is continued elsewhere (a stall) or ends (the deadline)."""
        if leg.watchdog is None:
            leg.watchdog = asyncio.ensure_future(self._watch(leg, deadline, require_cloud))
        task = leg.next(self.clock.now())
        error: InferenceError | None = None
        if not task.done():
            try:
                await task
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if leg.expired is None or (current is not None and current.cancelling()):
                    raise  # our own caller was cancelled (the client left)
            except Exception:  # noqa: BLE001 - read again below, from the finished task
                pass
        now = self.clock.now()
        if leg.expired == "deadline":
            raise DeadlineExceeded(f"the request's deadline passed after {answer.chunks} chunks")
        if leg.expired == "stall":
            error = Unavailable(f"the {leg.side} stalled: no token for {self.settings.streams.stall_ms:g} ms")
            self.itl.record(leg.backend.name, now - max(leg.last_at, leg.asked_at))
        else:
            try:
                response = leg.take()
            except InferenceError as exc:
                error = exc
            else:
                gap = now - leg.last_at
                leg.last_at = now
                self.itl.record(leg.backend.name, gap)
                self.metrics.inter_token.labels(leg.side).observe(gap)
                return leg, response
        self._leg_failed(leg, error)
        await leg.close()
        return await self._continue_elsewhere(error, leg, request, deadline, answer, require_cloud)

    async def _watch(self, leg: _Leg, deadline: float, require_cloud: bool) -> None:
        """Cancel the leg's pending read once no chunk came for ``stall_ms`` and another backend
        could go on with the stream, or at the deadline. A stalled leg that nothing could replace
        is waited for: slow is better than failed."""
        stall_s = self.settings.streams.stall_ms / 1000.0
        while not leg.closed:
            now = self.clock.now()
            due = min(max(leg.last_at, leg.asked_at) + stall_s, deadline)
            if now >= due:
                pending = leg.pending
                waiting = pending is not None and not pending.done()
                if waiting and (now >= deadline or self._replaceable(leg, require_cloud)):
                    leg.expired = "deadline" if now >= deadline else "stall"
                    pending.cancel()
                    return
                due = min(now + stall_s, deadline)  # look again later
            await self._sleep(max(0.0, due - now))

    def _replaceable(self, leg: _Leg, require_cloud: bool) -> bool:
        """Whether a stream on ``leg`` could be continued elsewhere now."""
        if not self.settings.streams.midstream_failover:
            return False
        core = self.core
        if leg.side == EDGE:
            return core.pool.available()
        return (not require_cloud and core.edge_up()) or core.pool.pick({leg.backend.name}) is not None

    async def _continue_elsewhere(self, error: InferenceError, failed: _Leg, request: InferRequest,
                                  deadline: float, answer: _Answer,
                                  require_cloud: bool) -> tuple[_Leg | None, InferResponse]:
        if not self.settings.streams.midstream_failover or not error.retryable:
            raise error
        if self.core.remaining(deadline) <= 0:
            raise DeadlineExceeded(f"the request's deadline passed after {answer.chunks} chunks") from error
        sampling = answer.generate.sampling
        left = sampling.max_tokens - answer.tokens
        if left <= 0:  # every token was sent; only the final flag was lost
            return None, self._synthetic_final(request, answer)
        other = CLOUD if failed.side == EDGE or require_cloud else EDGE
        order = [other] if other == CLOUD else [EDGE, CLOUD]
        if not self.core.spend_retry():
            raise error
        continuation = upstream_request(request, prompt=answer.generate.prompt + "".join(answer.text),
                                        sampling=dataclasses.replace(sampling, max_tokens=left))
        self.metrics.midstream_failovers.labels(failed.side, other).inc()
        log.info("stream %r: the %s failed mid-answer (%s) after %d tokens; continuing on the %s",
                 request.id, failed.side, error.message, answer.tokens, other)
        leg, response = await self._first_token(continuation, deadline, order, False, answer)
        answer.reason = Reason.FAILOVER_MIDSTREAM
        answer.continued = answer.resumed = True
        answer.leg_base = answer.tokens
        return leg, response

    # bookkeeping -----------------------------------------------------------------------------

    def _sent(self, answer: _Answer, leg: _Leg | None, response: InferResponse, final: bool) -> InferResponse:
        """Account for a chunk about to be sent and add where-served information."""
        text = response_text(response)
        answer.chunks += 1
        answer.text.append(text)
        if leg is not None:
            if not answer.sides or answer.sides[-1] != leg.side:
                answer.sides.append(leg.side)
            answer.tokens = answer.leg_base + tokens_so_far(response, answer.tokens - answer.leg_base + 1)
        params = response.parameters
        if answer.resumed and leg is not None:
            answer.resumed = False
            params[SERVED_BY] = leg.side  # where the text goes on from here
            params[ROUTE_REASON] = answer.reason
        if answer.chunks == 1 or final:
            params[SERVED_BY] = answer.served_by()
            params[ROUTE_REASON] = answer.reason
        if final and answer.continued:
            prompt = params.get("prompt_tokens")
            if isinstance(prompt, int):
                params["prompt_tokens"] = max(0, prompt - answer.leg_base)
            params["completion_tokens"] = answer.tokens
        return response

    def _synthetic_final(self, request: InferRequest, answer: _Answer) -> InferResponse:
        return InferResponse(request.model_name, [text_tensor("")], model_version=request.model_version,
                             id=request.id, parameters={FINAL_PARAMETER: True, "finish_reason": "length",
                                                        "completion_tokens": answer.tokens})

    def _record_ttft(self, leg: _Leg, seconds: float, *, lower_bound: bool = False) -> None:
        if not self.core.measured_the_backend(leg.opened):
            return
        self.ttft.record(leg.backend.name, seconds)
        if not lower_bound:
            self.metrics.ttft.labels(leg.side).observe(seconds)
        if leg.side == EDGE:
            self.policy.observe_edge(seconds)

    def _leg_failed(self, leg: _Leg, error: InferenceError) -> None:
        self.core.note_failure(leg.backend, error)
        if leg.side == CLOUD and error.backend_fault and self.core.pool.on_failure(leg.backend):
            self.metrics.ejections.inc()
        if error.kind is ErrorKind.DEADLINE_EXCEEDED and leg.side == EDGE:
            self._record_ttft(leg, self.clock.now() - leg.opened, lower_bound=True)

    def _finished(self, leg: _Leg | None) -> None:
        """A stream ended well: its backend answered; an edge whose inter-token latency is over
        its limit moves streams to the cloud."""
        if leg is None:
            return
        if leg.side == CLOUD:
            self.core.pool.on_success(leg.backend)
            return
        limit_ms = self.settings.streams.inter_token_threshold_ms
        if limit_ms is None:
            return
        settings = self.settings
        stats = self.itl.stats(leg.backend.name)
        since = self.policy.since
        value = stats.statistic(settings.statistic, since=since, min_samples=settings.min_samples)
        if value is not None and value * 1000.0 > limit_ms and \
                stats.count_above(limit_ms / 1000.0, since=since) >= settings.min_slow_samples:
            self.policy.fall_back(Reason.EDGE_SLOW_INTER_TOKEN, value)

    @staticmethod
    def _worst(errors: list[InferenceError]) -> InferenceError | None:
        """The most useful of the errors: a request error over a backend fault, else the last."""
        for error in errors:
            if not error.retryable:
                return error
        return errors[-1] if errors else None

    async def _wait_any(self, tasks: list[asyncio.Task], timeout_s: float) -> bool:
        """Whether any task finished within ``timeout_s`` (waiting on the injected sleep)."""
        if any(task.done() for task in tasks):
            return True
        if timeout_s <= 0:
            return False
        timer = asyncio.ensure_future(self._sleep(timeout_s))
        try:
            await asyncio.wait([*tasks, timer], return_when=asyncio.FIRST_COMPLETED)
        finally:
            timer.cancel()
        return any(task.done() for task in tasks)
