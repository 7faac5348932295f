"""The dispatcher's every path on fake backends and virtual time: hedging, failover, retries across
workers, the retry budget, deadlines, pool choice and outlier ejection. No process, no real sleep."""

from __future__ import annotations

import asyncio
import math

import pytest

from edgecloud.errors import DeadlineExceeded, InternalError, InvalidArgument, NotFound, Overloaded, Unavailable
from gateway.retry_budget import RetryBudget
from gateway.routing import Reason, RouteState
from tests.gateway.fakes import edge, make_dispatcher, request, worker
from tests.support.virtual_clock import VirtualClock

INF = math.inf


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


def counter(metric, *labels) -> float:
    return metric.labels(*labels)._value.get()


async def dispatch(clock, dispatcher, *, deadline_s: float = 10.0, require_cloud: bool = False, rid: str = "r"):
    """Dispatch one request in virtual time; returns (served, virtual seconds it took)."""
    start = clock.now()
    served = await clock.run(dispatcher.dispatch(request(rid), start + deadline_s, require_cloud=require_cloud))
    return served, clock.now() - start


def slow_down_the_edge(clock, dispatcher, rtt_s: float = 0.5, samples: int = 5) -> None:
    """Samples over the threshold until routing moves to the cloud."""
    for _ in range(samples):
        dispatcher.monitor.record("edge", rtt_s)
        dispatcher.policy.observe_edge(rtt_s)
    assert dispatcher.policy.state is RouteState.CLOUD_FALLBACK


# --- the edge answers -----------------------------------------------------------------------------


async def test_the_edge_answers(clock):
    e, w = edge(clock, latency_s=0.010), worker(clock)
    d = make_dispatcher(clock, e, [w])
    served, took = await dispatch(clock, d)
    assert (served.served_by, served.reason) == ("edge", Reason.EDGE_FAST)
    assert served.response.parameters["answered_by"] == "edge" and served.response.id == "r"
    assert took == pytest.approx(0.010) and w.calls == 0
    assert e.outstanding == 0 and d.monitor.stats("edge").count == 1
    assert counter(d.metrics.decisions, "edge", Reason.EDGE_FAST) == 1
    assert e.answered_at == clock.now() and w.answered_at == float("-inf")  # the prober skips what traffic measures


@pytest.mark.parametrize("side", ["edge", "cloud"])
async def test_an_answer_is_recorded_on_the_next_loop_turn_off_its_own_latency(clock, side):
    e, w = edge(clock, latency_s=0.010), worker(clock, latency_s=0.030)
    d = make_dispatcher(clock, e, [w], hedging=False)
    backend, rtt = (e, 0.010) if side == "edge" else (w, 0.030)

    async def answered():
        served = await d.dispatch(request(), clock.now() + 10.0, require_cloud=side == "cloud")
        at_answer = (d.monitor.stats(backend.name).count, backend.answered_at, clock.now())
        await asyncio.sleep(0)
        return served, at_answer

    served, (count, answered_at, now) = await clock.run(answered())
    assert served.served_by == side and count == 0 and answered_at == float("-inf")
    stats = d.monitor.stats(backend.name)
    assert stats.count == 1 and stats.ewma_s == pytest.approx(rtt) and backend.answered_at == now


async def test_the_books_of_one_loop_turn_are_kept_in_order_and_one_failure_drops_nothing(clock, caplog):
    d = make_dispatcher(clock, edge(clock), [])
    kept: list[int] = []

    def fail(_):
        raise RuntimeError("boom")

    for index, record in enumerate((kept.append, fail, kept.append, kept.append)):
        d.after_answer(record, index)
    assert kept == []
    await asyncio.sleep(0)
    assert kept == [0, 2, 3] and "recording an answer failed" in caplog.text
    d.after_answer(kept.append, 4)  # a later turn gets a callback of its own
    await asyncio.sleep(0)
    assert kept == [0, 2, 3, 4]


async def test_without_hedging_a_slow_edge_is_waited_for(clock):
    e, w = edge(clock, latency_s=1.0), worker(clock)
    d = make_dispatcher(clock, e, [w], hedging=False)
    served, took = await dispatch(clock, d)
    assert served.served_by == "edge" and took == pytest.approx(1.0) and w.calls == 0


# --- hedging --------------------------------------------------------------------------------------


async def test_slow_edge_hedge_wins_and_the_edge_is_cancelled(clock):
    e, w = edge(clock, latency_s=5.0), worker(clock, latency_s=0.050)
    d = make_dispatcher(clock, e, [w], hedge_after_s=0.2)
    served, took = await dispatch(clock, d)
    assert (served.served_by, served.reason) == ("cloud", Reason.HEDGE_WON)
    assert took == pytest.approx(0.25)
    await clock.advance(0)
    assert e.cancelled == 1 and e.outstanding == 0 and w.outstanding == 0
    assert counter(d.metrics.hedges, "cloud") == 1
    # The loser's time is a lower bound on the edge's RTT, and routing sees it.
    assert d.monitor.stats("edge").count == 1 and d.monitor.stats("edge").ewma_s == pytest.approx(0.25)


async def test_hedge_loses_and_the_cloud_is_cancelled(clock):
    e, w = edge(clock, latency_s=0.3), worker(clock, latency_s=0.5)
    d = make_dispatcher(clock, e, [w], hedge_after_s=0.2)
    served, took = await dispatch(clock, d)
    assert (served.served_by, served.reason) == ("edge", Reason.EDGE_FAST)
    assert took == pytest.approx(0.3)
    await clock.advance(0)
    assert w.calls == 1 and w.cancelled == 1 and w.outstanding == 0
    assert counter(d.metrics.hedges, "edge") == 1


async def test_no_hedge_before_hedge_after(clock):
    e, w = edge(clock, latency_s=0.199), worker(clock)
    d = make_dispatcher(clock, e, [w], hedge_after_s=0.2)
    served, _ = await dispatch(clock, d)
    assert served.served_by == "edge" and w.calls == 0


async def test_hedged_edge_failing_after_the_hedge_started_leaves_the_cloud_to_answer(clock):
    e = edge(clock, latency_s=0.3, error=Unavailable("a backend is unavailable"))
    w = worker(clock, latency_s=0.2)
    d = make_dispatcher(clock, e, [w], hedge_after_s=0.2)
    served, took = await dispatch(clock, d)
    assert (served.served_by, served.reason) == ("cloud", Reason.HEDGE_WON) and took == pytest.approx(0.4)


async def test_both_sides_of_a_hedge_failing_raise_the_request_error_over_the_backend_fault(clock):
    e = edge(clock, latency_s=0.3, error=Unavailable("a backend is unavailable"))
    w = worker(clock, latency_s=0.4, error=InvalidArgument("bad", field="inputs[x]"))
    d = make_dispatcher(clock, e, [w], hedge_after_s=0.2)
    with pytest.raises(InvalidArgument, match="inputs\\[x\\]"):
        await dispatch(clock, d)


# --- failover -------------------------------------------------------------------------------------


async def test_edge_failing_retryably_fails_over_to_the_cloud_paid_from_the_budget(clock):
    e, w = edge(clock, latency_s=0.01, error=Unavailable("a backend is unavailable")), worker(clock)
    budget = RetryBudget(0.2, 5)
    d = make_dispatcher(clock, e, [w], budget=budget)
    served, _ = await dispatch(clock, d)
    assert (served.served_by, served.reason) == ("cloud", Reason.FAILOVER)
    assert budget.spent == 1 and counter(d.metrics.retries, "allowed") == 1


async def test_an_overloaded_edge_fails_over_and_its_hint_survives_when_it_cannot(clock):
    shed = Overloaded("at capacity", retry_after_s=0.5)
    e = edge(clock, error=shed)
    d = make_dispatcher(clock, e, [worker(clock)])
    assert (await dispatch(clock, d))[0].served_by == "cloud"
    alone = make_dispatcher(clock, edge(clock, error=shed), [])
    with pytest.raises(Overloaded) as info:
        await dispatch(clock, alone)
    assert info.value.retry_after_s == 0.5


async def test_an_exhausted_budget_returns_the_edges_error(clock):
    error = Unavailable("a backend is unavailable")
    e, w = edge(clock, error=error), worker(clock)
    budget = RetryBudget(ratio=0.0, burst=0)
    d = make_dispatcher(clock, e, [w], budget=budget)
    with pytest.raises(Unavailable) as info:
        await dispatch(clock, d)
    assert info.value is error and w.calls == 0
    assert budget.refused == 1 and counter(d.metrics.retries, "refused") == 1


@pytest.mark.parametrize("error", [InvalidArgument("wrong", field="inputs[x]"), NotFound("unknown model 'm'")])
async def test_a_non_retryable_error_is_returned_as_is_and_never_retried(clock, error):
    e, w = edge(clock, error=error), worker(clock)
    d = make_dispatcher(clock, e, [w], hedging=False)
    with pytest.raises(type(error)) as info:
        await dispatch(clock, d)
    assert info.value is error and w.calls == 0 and d.budget.spent == 0 and e.up


async def test_all_cloud_workers_failing_fail_over_to_the_edge(clock):
    e = edge(clock)
    workers = [worker(clock, i, error=Unavailable("a backend is unavailable")) for i in range(3)]
    d = make_dispatcher(clock, e, workers)
    slow_down_the_edge(clock, d)
    served, _ = await dispatch(clock, d)
    assert (served.served_by, served.reason) == ("edge", Reason.FAILOVER)
    assert [w.calls for w in workers] == [1, 1, 1]  # each worker once: two retries, then the edge (a third)
    assert d.budget.spent == 3


async def test_a_retryable_cloud_failure_moves_to_another_worker(clock):
    bad, good = worker(clock, 0, error=InternalError("a backend failed")), worker(clock, 1)
    d = make_dispatcher(clock, None, [bad, good])
    for rid in range(4):
        served, _ = await dispatch(clock, d, rid=str(rid))
        assert served.served_by == "cloud" and served.response.parameters["answered_by"] == good.name
    assert good.calls == 4 and bad.calls >= 1 and d.budget.spent == bad.calls


async def test_a_cloud_quality_request_never_goes_to_the_edge(clock):
    e = edge(clock)
    w = worker(clock, error=Unavailable("a backend is unavailable"))
    d = make_dispatcher(clock, e, [w])
    with pytest.raises(Unavailable):
        await dispatch(clock, d, require_cloud=True)
    assert e.calls == 0
    served, _ = await dispatch(clock, make_dispatcher(clock, e, [worker(clock)]), require_cloud=True)
    assert (served.served_by, served.reason) == ("cloud", Reason.QUALITY_CLOUD) and e.calls == 0


async def test_both_sides_down_is_unavailable_at_once(clock):
    e, w = edge(clock), worker(clock)
    e.up = w.up = False
    d = make_dispatcher(clock, e, [w])
    with pytest.raises(Unavailable, match="no backend can serve the request") as info:
        await dispatch(clock, d)
    assert e.calls == w.calls == 0 and "127.0.0.1" not in info.value.message
    assert counter(d.metrics.decisions, "none", Reason.NO_BACKEND) == 1


async def test_a_down_edge_sends_traffic_to_the_cloud(clock):
    e, w = edge(clock), worker(clock)
    e.up = False
    served, _ = await dispatch(clock, make_dispatcher(clock, e, [w]))
    assert (served.served_by, served.reason) == ("cloud", Reason.EDGE_DOWN) and e.calls == 0


async def test_unreachable_backends_are_marked_down_after_consecutive_failures(clock):
    e = edge(clock, error=Unavailable("a backend is unavailable"))
    d = make_dispatcher(clock, e, [worker(clock)], failures_to_down=2)
    await dispatch(clock, d)
    assert e.up
    await dispatch(clock, d)
    assert not e.up  # the next request goes straight to the cloud
    served, _ = await dispatch(clock, d)
    assert served.reason == Reason.EDGE_DOWN and e.calls == 2


# --- deadlines ------------------------------------------------------------------------------------


async def test_a_deadline_already_passed_calls_nobody(clock):
    e, w = edge(clock), worker(clock)
    d = make_dispatcher(clock, e, [w])
    with pytest.raises(DeadlineExceeded):
        await dispatch(clock, d, deadline_s=0.0)
    assert e.calls == w.calls == 0


async def test_the_deadline_bounds_an_unhedged_edge(clock):
    e = edge(clock, latency_s=1.0)
    d = make_dispatcher(clock, e, [worker(clock)], hedging=False)
    with pytest.raises(DeadlineExceeded):
        await dispatch(clock, d, deadline_s=0.1)
    assert e.timeouts == [pytest.approx(0.1)]
    assert clock.now() - 1000.0 == pytest.approx(0.1)


async def test_the_deadline_bounds_both_sides_of_a_hedge(clock):
    e, w = edge(clock, latency_s=INF), worker(clock, latency_s=INF)
    d = make_dispatcher(clock, e, [w], hedge_after_s=0.2)
    with pytest.raises(DeadlineExceeded):
        await dispatch(clock, d, deadline_s=0.3)
    assert e.timeouts == [pytest.approx(0.3)] and w.timeouts == [pytest.approx(0.1)]


async def test_a_hedge_is_not_started_past_the_deadline(clock):
    e, w = edge(clock, latency_s=1.0), worker(clock)
    d = make_dispatcher(clock, e, [w], hedge_after_s=0.5)
    with pytest.raises(DeadlineExceeded):
        await dispatch(clock, d, deadline_s=0.3)
    assert w.calls == 0


async def test_no_failover_once_the_deadline_has_passed(clock):
    e = edge(clock, script=[(0.3, Unavailable("a backend is unavailable"))])
    w = worker(clock)
    d = make_dispatcher(clock, e, [w], hedging=False)
    with pytest.raises(DeadlineExceeded):
        await dispatch(clock, d, deadline_s=0.3)
    assert w.calls == 0 and d.budget.spent == 0


async def test_cloud_attempts_stop_at_the_deadline(clock):
    first, second = worker(clock, 0, latency_s=INF), worker(clock, 1, latency_s=INF)
    d = make_dispatcher(clock, None, [first, second], cloud_attempt_timeout_s=0.5)
    with pytest.raises(DeadlineExceeded):
        await dispatch(clock, d, deadline_s=0.8)
    assert sorted(b.timeouts[0] for b in (first, second)) == [pytest.approx(0.3), pytest.approx(0.5)]
    assert clock.now() - 1000.0 == pytest.approx(0.8)


async def test_a_frozen_worker_is_bypassed_after_the_attempt_timeout(clock):
    frozen, healthy = worker(clock, 0, latency_s=INF), worker(clock, 1, latency_s=0.05)
    d = make_dispatcher(clock, None, [frozen, healthy], cloud_attempt_timeout_s=0.5, seed=1)
    results = [await dispatch(clock, d, rid=str(i)) for i in range(6)]
    assert all(s.response.parameters["answered_by"] == healthy.name for s, _ in results)
    assert max(took for _, took in results) == pytest.approx(0.55)


async def test_the_edge_attempt_timeout_bounds_one_edge_attempt(clock):
    e, w = edge(clock, latency_s=1.0), worker(clock)
    d = make_dispatcher(clock, e, [w], hedging=False, edge_attempt_timeout_s=0.25)
    served, took = await dispatch(clock, d)
    assert (served.served_by, served.reason) == ("cloud", Reason.FAILOVER) and took == pytest.approx(0.26)


# --- pool choice and outlier ejection -------------------------------------------------------------


async def test_least_request_picks_the_worker_with_fewest_calls_in_flight(clock):
    busy, idle = worker(clock, 0, latency_s=1.0), worker(clock, 1, latency_s=1.0)
    d = make_dispatcher(clock, None, [busy, idle])
    busy.outstanding = 3
    tasks = [asyncio.ensure_future(d.dispatch(request(str(i)), clock.now() + 10)) for i in range(3)]
    await clock.run(asyncio.gather(*tasks))
    assert idle.calls == 3 and busy.calls == 0  # 0, 1, 2 in flight on the idle one: still fewer than 3


async def test_p2c_prefers_the_lower_latency_worker(clock):
    slow, fast = worker(clock, 0, latency_s=0.4), worker(clock, 1, latency_s=0.01)
    d = make_dispatcher(clock, None, [slow, fast], pool={"lb_policy": "p2c_latency"})
    for _ in range(3):  # each worker's EWMA gets known
        d.monitor.record(slow.name, 0.4)
        d.monitor.record(fast.name, 0.01)
    for i in range(10):
        await dispatch(clock, d, rid=str(i))
    assert fast.calls == 10 and slow.calls == 0


async def test_a_failing_worker_is_ejected_and_returns_after_the_ejection_time(clock):
    flaky = worker(clock, 0, error=InternalError("a backend failed"))
    steady = worker(clock, 1)
    d = make_dispatcher(clock, None, [flaky, steady], seed=3,
                        pool={"outlier_detection": {"consecutive_5xx": 2, "base_ejection_time_ms": 1000,
                                                    "max_ejection_percent": 50}})
    while flaky.calls < 2:
        assert (await dispatch(clock, d))[0].response.parameters["answered_by"] == steady.name
    assert d.pool.detector.is_ejected(flaky.name) and counter_value(d.metrics.ejections) == 1
    before = flaky.calls
    for _ in range(10):
        await dispatch(clock, d)
    assert flaky.calls == before  # out of rotation
    await clock.advance(1.01)
    flaky.error = None
    for _ in range(20):
        await dispatch(clock, d)
    assert flaky.calls > before  # back in rotation, and answering


def counter_value(metric) -> float:
    return metric._value.get()


# --- routing in fallback --------------------------------------------------------------------------


async def test_in_fallback_a_cloud_slower_than_the_edge_lets_the_edge_serve(clock):
    e, w = edge(clock, latency_s=0.3), worker(clock, latency_s=0.6)
    d = make_dispatcher(clock, e, [w], threshold_ms=200, hedge_after_s=1.0)
    slow_down_the_edge(clock, d, rtt_s=0.3)
    for _ in range(3):
        d.monitor.record(w.name, 0.6)
    served, _ = await dispatch(clock, d)
    assert (served.served_by, served.reason) == ("edge", Reason.CLOUD_SLOWER)


async def test_in_fallback_a_fast_cloud_serves(clock):
    e, w = edge(clock, latency_s=0.3), worker(clock, latency_s=0.05)
    d = make_dispatcher(clock, e, [w], threshold_ms=200)
    slow_down_the_edge(clock, d, rtt_s=0.3)
    for _ in range(3):
        d.monitor.record(w.name, 0.05)
    served, _ = await dispatch(clock, d)
    assert (served.served_by, served.reason) == ("cloud", Reason.EDGE_SLOW) and e.calls == 0


async def test_in_fallback_a_cloud_over_the_threshold_is_hedged_to_the_edge(clock):
    e, w = edge(clock, latency_s=0.1), worker(clock, latency_s=2.0)
    d = make_dispatcher(clock, e, [w], threshold_ms=200, hedge_after_s=0.2)
    slow_down_the_edge(clock, d, rtt_s=2.5)  # the edge looked even slower when routing moved
    for _ in range(3):
        d.monitor.record(w.name, 0.5)
    served, took = await dispatch(clock, d)
    assert (served.served_by, served.reason) == ("edge", Reason.HEDGE_WON) and took == pytest.approx(0.3)


async def test_a_sample_taken_across_a_stall_of_the_gateways_own_loop_is_left_out(clock):
    from edgecloud.loop_lag import LoopLag

    e = edge(clock, latency_s=0.01)
    d = make_dispatcher(clock, e, [worker(clock)])
    d.lag = LoopLag(clock, clock.sleep)
    beat = asyncio.ensure_future(d.lag.run())
    await clock.advance(0.1)
    served, _ = await dispatch(clock, d)
    assert served.served_by == "edge" and d.monitor.stats("edge").count == 1

    async def stalled_backend(request, timeout_s):
        clock._now += 1.5  # the gateway's loop was stuck for 1.5 s while the answer waited
        return await type(e).infer(e, request, timeout_s)

    e.infer = stalled_backend
    served, _ = await dispatch(clock, d)
    assert served.served_by == "edge"
    assert d.monitor.stats("edge").count == 1 and d.metrics.discarded_samples._value.get() == 1
    assert d.policy.state is RouteState.EDGE_PREFERRED  # the edge is not blamed for our stall
    beat.cancel()
    await asyncio.gather(beat, return_exceptions=True)
