"""The stream dispatcher's every path on scripted fake streams and virtual time: TTFT routing,
first-token hedging, failover before the first token, mid-stream failover on failure and on a
stall, deadlines, closing early, and the inter-token limit. No process, no real sleep."""

from __future__ import annotations

import math

import pytest

from edgecloud.errors import DeadlineExceeded, InvalidArgument, Unavailable
from edgecloud.generation import FINAL_PARAMETER, SamplingParams
from gateway.config import RoutingSettings
from gateway.latency import LatencyMonitor
from gateway.routing import Reason, RouteState, RoutingPolicy
from gateway.streams.dispatch import StreamDispatcher
from gateway.streams.requests import parse, response_text
from tests.gateway.fakes import make_dispatcher
from tests.gateway.streams.fake_streams import FakeStreamBackend, generate_request
from tests.support.virtual_clock import VirtualClock

INF = math.inf


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


def make(clock, edge, workers, **routing) -> StreamDispatcher:
    core = make_dispatcher(clock, edge, workers, **routing)
    settings = RoutingSettings(**{"warmup_samples": 0, **{k: v for k, v in routing.items() if k != "pool"}})
    ttft = LatencyMonitor(clock, window_s=settings.window_ms / 1000.0)
    itl = LatencyMonitor(clock, window_s=settings.window_ms / 1000.0)
    policy = RoutingPolicy(settings, ttft.stats("edge"), clock)
    return StreamDispatcher(core, policy=policy, ttft=ttft, itl=itl, settings=settings, clock=clock,
                            sleep=clock.sleep, metrics=core.metrics)


async def collect(clock, dispatcher, *, max_tokens=8, deadline_s=60.0, require_cloud=False, prompt="P:",
                  **sampling):
    """Run one stream in virtual time: (responses, the time of each, the text)."""
    request = generate_request(prompt, max_tokens=max_tokens, **sampling)
    generate = parse(request)
    start = clock.now()
    out, times = [], []

    async def run():
        async for response in dispatcher.stream(request, generate, start + deadline_s, require_cloud=require_cloud):
            out.append(response)
            times.append(clock.now() - start)

    await clock.run(run())
    return out, times, "".join(response_text(r) for r in out)


def counter(metric, *labels) -> float:
    return metric.labels(*labels)._value.get()


# --- routing and where-served ---------------------------------------------------------------------


async def test_the_edge_streams_and_says_so_on_the_first_and_final_chunk(clock):
    e, w = FakeStreamBackend.edge(clock, first_s=0.01, gap_s=0.01), FakeStreamBackend.cloud(clock)
    d = make(clock, e, [w])
    out, times, text = await collect(clock, d, max_tokens=4)
    assert text == "e0 e1 e2 e3 "
    assert [r.parameters.get("served_by") for r in out] == ["edge", None, None, None, "edge"]
    assert out[0].parameters["route_reason"] == Reason.EDGE_FAST
    assert out[-1].parameters[FINAL_PARAMETER] is True and out[-1].parameters["completion_tokens"] == 4
    assert w.calls == 0 and e.outstanding == 0
    assert times[0] == pytest.approx(0.01)
    assert d.ttft.stats("edge").count == 1 and d.ttft.stats("edge").ewma_s == pytest.approx(0.01)
    # the upstream request is a stream of text only, with the sampling in its JSON input
    sent = e.requests[0]
    assert sent.prompt == "P:" and sent.stream and sent.exclude_input_in_output and sent.sampling.max_tokens == 4


async def test_slow_first_tokens_move_streams_to_the_cloud(clock):
    e, w = FakeStreamBackend.edge(clock, first_s=0.5, gap_s=0.01), FakeStreamBackend.cloud(clock, first_s=0.05)
    d = make(clock, e, [w], hedging=False)
    for _ in range(3):
        await collect(clock, d, max_tokens=2)
    assert d.policy.state is RouteState.CLOUD_FALLBACK
    out, _, text = await collect(clock, d, max_tokens=2)
    assert out[0].parameters["served_by"] == "cloud" and text == "c0 c1 "


async def test_require_cloud_never_uses_the_edge(clock):
    e, w = FakeStreamBackend.edge(clock), FakeStreamBackend.cloud(clock)
    d = make(clock, e, [w])
    out, _, _ = await collect(clock, d, require_cloud=True)
    assert out[-1].parameters["served_by"] == "cloud" and e.calls == 0


async def test_no_backend_is_unavailable_at_once(clock):
    e = FakeStreamBackend.edge(clock)
    e.up = False
    d = make(clock, e, [])
    with pytest.raises(Unavailable):
        await collect(clock, d)


# --- first-token hedging --------------------------------------------------------------------------


async def test_a_silent_edge_is_hedged_and_the_cloud_wins_and_the_edge_stops(clock):
    e, w = FakeStreamBackend.edge(clock, first_s=5.0), FakeStreamBackend.cloud(clock, first_s=0.05, gap_s=0.02)
    d = make(clock, e, [w])  # hedge after threshold_ms: 200 ms
    out, times, text = await collect(clock, d, max_tokens=3)
    assert text == "c0 c1 c2 " and times[0] == pytest.approx(0.25)
    assert out[0].parameters["route_reason"] == Reason.HEDGE_WON and out[-1].parameters["served_by"] == "cloud"
    assert e.cancelled == 1 and e.tokens_produced == 0 and e.outstanding == 0
    assert counter(d.metrics.stream_hedges, "started") == 1 and counter(d.metrics.stream_hedges, "won_by_cloud") == 1
    # the loser's wait is a lower bound on the edge's TTFT
    assert d.ttft.stats("edge").ewma_s == pytest.approx(0.25)


async def test_an_edge_that_answers_first_after_the_hedge_wins_and_the_cloud_stops(clock):
    e, w = FakeStreamBackend.edge(clock, first_s=0.3, gap_s=0.01), FakeStreamBackend.cloud(clock, first_s=0.5)
    d = make(clock, e, [w])
    out, times, text = await collect(clock, d, max_tokens=2)
    assert text == "e0 e1 " and times[0] == pytest.approx(0.3)
    assert out[0].parameters["route_reason"] == Reason.EDGE_FAST
    assert w.calls == 1 and w.cancelled == 1 and w.tokens_produced == 0
    assert counter(d.metrics.stream_hedges, "won_by_edge") == 1


async def test_hedge_after_ms_is_its_own_setting(clock):
    e, w = FakeStreamBackend.edge(clock, first_s=5.0), FakeStreamBackend.cloud(clock, first_s=0.05)
    d = make(clock, e, [w], streams={"hedge_after_ms": 50})
    _, times, _ = await collect(clock, d, max_tokens=1)
    assert times[0] == pytest.approx(0.1)


# --- failure before the first token ---------------------------------------------------------------


async def test_an_edge_failing_before_its_first_token_fails_over(clock):
    e = FakeStreamBackend.edge(clock, fail_after=0, error=Unavailable("edge gone"))
    w = FakeStreamBackend.cloud(clock)
    d = make(clock, e, [w], hedging=False)
    out, _, text = await collect(clock, d, max_tokens=2)
    assert text == "c0 c1 " and out[0].parameters["route_reason"] == Reason.FAILOVER


async def test_a_request_error_is_not_failed_over(clock):
    e = FakeStreamBackend.edge(clock, fail_after=0, error=InvalidArgument("prompt too long", field="inputs[text_input]"))
    w = FakeStreamBackend.cloud(clock)
    d = make(clock, e, [w], hedging=False)
    with pytest.raises(InvalidArgument):
        await collect(clock, d)
    assert w.calls == 0


async def test_a_dead_cloud_worker_is_replaced_by_another(clock):
    w0 = FakeStreamBackend.cloud(clock, index=0, fail_after=0, error=Unavailable("gone"))
    w1 = FakeStreamBackend.cloud(clock, index=1)
    d = make(clock, None, [w0, w1], pool={"lb_policy": "least_request"})
    out, _, text = await collect(clock, d, max_tokens=2)
    assert text == "c0 c1 " and w1.calls == 1 and w0.outstanding == w1.outstanding == 0


async def test_a_failover_before_the_hedge_time_starts_no_hedge_on_top(clock):
    e = FakeStreamBackend.edge(clock, first_s=0.05, fail_after=0, error=Unavailable("edge gone"))
    w0 = FakeStreamBackend.cloud(clock, index=0, first_s=1.0)
    w1 = FakeStreamBackend.cloud(clock, index=1, first_s=1.0)
    d = make(clock, e, [w0, w1])  # hedging on, hedge after 200 ms
    out, _, _ = await collect(clock, d, max_tokens=1)
    assert w0.calls + w1.calls == 1  # the failover's worker only, no third leg when the hedge time came
    assert out[0].parameters["route_reason"] == Reason.FAILOVER


async def test_no_first_token_within_the_timeout_fails_over(clock):
    e, w = FakeStreamBackend.edge(clock, first_s=INF), FakeStreamBackend.cloud(clock, first_s=0.05)
    d = make(clock, e, [w], hedging=False, streams={"first_token_timeout_ms": 1000})
    out, times, text = await collect(clock, d, max_tokens=1)
    assert text == "c0 " and times[0] == pytest.approx(1.05) and e.cancelled == 1


# --- mid-stream failover ----------------------------------------------------------------------------


async def test_an_edge_dying_mid_stream_is_continued_on_the_cloud_from_the_text_sent(clock):
    e = FakeStreamBackend.edge(clock, gap_s=0.01, fail_after=3, error=Unavailable("edge died"))
    w = FakeStreamBackend.cloud(clock, gap_s=0.02)
    d = make(clock, e, [w])
    out, _, text = await collect(clock, d, max_tokens=6, prompt="P:")
    assert text == "e0 e1 e2 c0 c1 c2 "  # nothing repeated, nothing lost
    continuation = w.requests[0]
    assert continuation.prompt == "P:e0 e1 e2 " and continuation.sampling.max_tokens == 3
    assert continuation.exclude_input_in_output and continuation.stream
    final = out[-1].parameters
    assert final["served_by"] == "edge+cloud" and final["route_reason"] == Reason.FAILOVER_MIDSTREAM
    assert final["completion_tokens"] == 6
    assert out[0].parameters["served_by"] == "edge"
    assert [r.parameters.get("served_by") for r in out[:5]] == ["edge", None, None, "cloud", None]
    assert out[3].parameters["route_reason"] == Reason.FAILOVER_MIDSTREAM
    assert counter(d.metrics.midstream_failovers, "edge", "cloud") == 1


async def test_a_stalled_edge_is_continued_on_the_cloud_after_stall_ms(clock):
    e = FakeStreamBackend.edge(clock, gap_s=0.01, stall_after=2)
    w = FakeStreamBackend.cloud(clock, first_s=0.05, gap_s=0.01)
    d = make(clock, e, [w], streams={"stall_ms": 500})
    out, times, text = await collect(clock, d, max_tokens=4)
    assert text == "e0 e1 c0 c1 "
    assert times[2] == pytest.approx(0.03 + 0.5 + 0.05)  # e1 at 0.03, silence, the cloud's first token
    assert e.cancelled == 1 and out[-1].parameters["route_reason"] == Reason.FAILOVER_MIDSTREAM


async def test_a_stalled_edge_with_nowhere_to_go_is_waited_for(clock):
    e = FakeStreamBackend.edge(clock, first_s=0.01, gap_s=0.01)
    d = make(clock, e, [], streams={"stall_ms": 500})
    e.gap_s = 2.0  # slow, not dead: with no cloud there is nothing better than waiting
    out, times, text = await collect(clock, d, max_tokens=3)
    assert text == "e0 e1 e2 " and out[-1].parameters["served_by"] == "edge"
    assert times[1] == pytest.approx(2.01)


async def test_a_stall_is_failed_over_only_while_the_other_side_is_up(clock):
    e = FakeStreamBackend.edge(clock, first_s=0.01, gap_s=0.01, stall_after=1)
    w = FakeStreamBackend.cloud(clock)
    w.up = False
    d = make(clock, e, [w], streams={"stall_ms": 500})
    request = generate_request("P:", max_tokens=3)
    with pytest.raises(DeadlineExceeded):
        await clock.run(_drain(d.stream(request, parse(request), clock.now() + 3.0)))
    assert w.calls == 0


async def _drain(responses):
    async for _ in responses:
        pass


async def test_a_cloud_worker_dying_mid_stream_continues_on_the_edge(clock):
    e = FakeStreamBackend.edge(clock, gap_s=0.01)
    w = FakeStreamBackend.cloud(clock, gap_s=0.01, fail_after=2, error=Unavailable("worker died"))
    d = make(clock, e, [w])
    d.policy.fall_back("test")
    out, _, text = await collect(clock, d, max_tokens=4)
    assert text == "c0 c1 e0 e1 " and out[-1].parameters["served_by"] == "cloud+edge"


async def test_tokens_held_back_are_counted_from_the_backend_not_the_chunks(clock):
    # each chunk carries two tokens: the continuation gets what is really left
    e = FakeStreamBackend.edge(clock, gap_s=0.01, tokens_per_chunk=2, fail_after=2, error=Unavailable("x"))
    w = FakeStreamBackend.cloud(clock)
    d = make(clock, e, [w])
    await collect(clock, d, max_tokens=6)
    assert w.requests[0].sampling.max_tokens == 2


async def test_midstream_failover_can_be_turned_off(clock):
    e = FakeStreamBackend.edge(clock, gap_s=0.01, fail_after=2, error=Unavailable("edge died"))
    w = FakeStreamBackend.cloud(clock)
    d = make(clock, e, [w], streams={"midstream_failover": False})
    with pytest.raises(Unavailable):
        await collect(clock, d)
    assert w.calls == 0


async def test_a_request_error_mid_stream_ends_the_stream(clock):
    e = FakeStreamBackend.edge(clock, gap_s=0.01, fail_after=2, error=InvalidArgument("bad"))
    w = FakeStreamBackend.cloud(clock)
    d = make(clock, e, [w])
    with pytest.raises(InvalidArgument):
        await collect(clock, d)
    assert w.calls == 0


# --- deadlines and leaving --------------------------------------------------------------------------


async def test_a_deadline_ends_the_stream_after_the_chunks_sent(clock):
    e = FakeStreamBackend.edge(clock, gap_s=0.1)
    d = make(clock, e, [], hedging=False)
    request = generate_request("P:", max_tokens=50)
    got = []

    async def run():
        async for response in d.stream(request, parse(request), clock.now() + 0.3):
            got.append(response_text(response))

    with pytest.raises(DeadlineExceeded):
        await clock.run(run())
    assert got == ["e0 ", "e1 ", "e2 "] and e.cancelled == 1 and e.outstanding == 0


async def test_closing_the_stream_stops_the_upstream_generation(clock):
    e = FakeStreamBackend.edge(clock, gap_s=0.01)
    d = make(clock, e, [])
    request = generate_request("P:", max_tokens=100)

    async def run():
        responses = d.stream(request, parse(request), clock.now() + 60)
        async for _ in responses:
            if e.tokens_produced == 3:
                break
        await responses.aclose()

    await clock.run(run())
    await clock.advance(1.0)
    assert e.tokens_produced == 3 and e.cancelled == 1 and e.outstanding == 0


async def test_a_client_that_reads_slowly_is_not_taken_for_a_stalled_backend(clock):
    e = FakeStreamBackend.edge(clock, first_s=0.01, gap_s=0.01)
    w = FakeStreamBackend.cloud(clock)
    d = make(clock, e, [w], streams={"stall_ms": 500})
    request = generate_request("P:", max_tokens=3)
    got = []

    async def run():
        async for response in d.stream(request, parse(request), clock.now() + 60):
            got.append(response_text(response))
            await clock.sleep(2.0)  # the client takes its time between chunks

    await clock.run(run())
    assert got == ["e0 ", "e1 ", "e2 ", ""] and w.calls == 0


# --- inter-token latency ------------------------------------------------------------------------------


async def test_an_inter_token_limit_moves_streams_to_the_cloud(clock):
    e, w = FakeStreamBackend.edge(clock, first_s=0.01, gap_s=0.2), FakeStreamBackend.cloud(clock)
    d = make(clock, e, [w], hedging=False, streams={"inter_token_threshold_ms": 100})
    await collect(clock, d, max_tokens=5)
    assert d.policy.state is RouteState.CLOUD_FALLBACK


async def test_without_an_inter_token_limit_slow_tokens_do_not_move_streams(clock):
    e, w = FakeStreamBackend.edge(clock, first_s=0.01, gap_s=0.2), FakeStreamBackend.cloud(clock)
    d = make(clock, e, [w], hedging=False)
    await collect(clock, d, max_tokens=5)
    assert d.policy.state is RouteState.EDGE_PREFERRED


def test_sampling_survives_the_upstream_request():
    request = generate_request("P:", max_tokens=3, temperature=0.5, seed=7, stop=["\n"])
    generate = parse(request)
    assert generate.sampling == SamplingParams(max_tokens=3, temperature=0.5, seed=7, stop=("\n",))
