"""The gateway's dataplane on fake backends and virtual time: validation before routing, the
``quality`` parameter, where-served parameters, coalesced requests, errors counted by kind."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from edgecloud.errors import InvalidArgument, NotFound, Overloaded
from edgecloud.types import RequestedOutput, Tensor
from gateway.config import GatewayConfig
from gateway.dataplane import GatewayDataplane
from tests.gateway.fakes import edge, request, worker
from tests.support.virtual_clock import VirtualClock


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


async def make_dataplane(clock, edge_backend, workers, **sections) -> GatewayDataplane:
    config = GatewayConfig.model_validate({
        "edge": {"address": "127.0.0.1:9"}, "cloud": {"workers": [w.name for w in workers]},
        "routing": {"warmup_samples": 0, "hedge_after_ms": 200}, **sections})
    dataplane = GatewayDataplane(config, clock=clock, sleep=clock.sleep)
    dataplane.dispatcher.edge = edge_backend
    dataplane.pool.set_workers(config.cloud, workers)
    await dataplane.cache.start()
    dataplane.set_ready(True)
    return dataplane


async def test_the_answer_says_where_it_was_served_and_why(clock):
    dataplane = await make_dataplane(clock, edge(clock), [worker(clock)])
    response = await clock.run(dataplane.infer(request("r1")))
    assert response.parameters["served_by"] == "edge" and response.parameters["route_reason"] == "edge_fast"
    assert response.id == "r1" and response.parameters["answered_by"] == "edge"
    assert dataplane.metrics.served.labels("edge", "edge_fast")._value.get() == 1


async def test_bad_input_is_refused_before_any_backend_sees_it(clock):
    e, w = edge(clock), worker(clock)
    dataplane = await make_dataplane(clock, e, [w])
    wrong = request()
    wrong.inputs[0] = Tensor("x", "INT8", (1,), np.ones(1, np.int8))
    with pytest.raises(InvalidArgument, match=r"^inputs\[x\]\.datatype"):
        await clock.run(dataplane.infer(wrong))
    unknown_output = request()
    unknown_output.outputs = [RequestedOutput("nope")]
    with pytest.raises(InvalidArgument, match=r"outputs\[nope\]"):
        await clock.run(dataplane.infer(unknown_output))
    assert e.calls == w.calls == 0
    assert dataplane.metrics.errors.labels("invalid_argument")._value.get() == 2


@pytest.mark.parametrize("quality", ["best", "Cloud", 1, True])
async def test_an_unknown_quality_is_refused(clock, quality):
    e = edge(clock)
    dataplane = await make_dataplane(clock, e, [worker(clock)])
    asking = request()
    asking.parameters["quality"] = quality
    with pytest.raises(InvalidArgument, match=r"^parameters\[quality\]: must be one of auto, cloud"):
        await clock.run(dataplane.infer(asking))
    assert e.calls == 0


async def test_quality_cloud_and_auto(clock):
    e, w = edge(clock), worker(clock)
    dataplane = await make_dataplane(clock, e, [w])
    cloud, auto = request(), request()
    cloud.parameters["quality"] = "cloud"
    auto.parameters["quality"] = "auto"
    assert (await clock.run(dataplane.infer(cloud))).parameters["served_by"] == "cloud"
    assert (await clock.run(dataplane.infer(auto))).parameters["served_by"] == "edge"


async def test_requests_that_join_a_computation_in_flight_say_coalesced(clock):
    e = edge(clock, latency_s=0.1)
    dataplane = await make_dataplane(clock, e, [worker(clock)], cache={"enabled": True})
    answers = await clock.run(asyncio.gather(*(dataplane.infer(request(str(i))) for i in range(5))))
    reasons = [a.parameters["route_reason"] for a in answers]
    assert reasons[0] == "edge_fast" and reasons[1:] == ["coalesced"] * 4
    assert {a.parameters["served_by"] for a in answers} == {"edge"} and e.calls == 1
    assert [a.id for a in answers] == [str(i) for i in range(5)]
    await dataplane.cache.stop()


async def test_an_unknown_model_is_not_found_without_naming_a_hop(clock):
    e = edge(clock, error=None)
    dataplane = await make_dataplane(clock, e, [])

    async def unknown(name, version, timeout_s):
        raise NotFound("model_name: unknown model 'nope'")

    e.model_metadata = unknown
    with pytest.raises(NotFound) as info:
        await clock.run(dataplane.infer(request()))
    assert info.value.message == "model_name: unknown model 'nope'"


async def test_past_the_admission_limit_requests_are_shed_with_a_hint(clock):
    e = edge(clock, latency_s=1.0)
    dataplane = await make_dataplane(clock, e, [], server={"max_concurrent_requests": 2,
                                                           "overload_retry_after_ms": 300})
    held = [asyncio.ensure_future(dataplane.infer(request(str(i)))) for i in range(2)]
    await clock.advance(0.1)
    with pytest.raises(Overloaded) as info:
        await dataplane.infer(request("shed"))
    assert info.value.retry_after_s == 0.3
    await clock.run(asyncio.gather(*held))
    assert dataplane.metrics.errors.labels("overloaded")._value.get() == 1


async def test_naming_every_output_is_the_same_cache_entry_as_naming_none(clock):
    """What the SDK sends (``outputs=[embedding]``) and what curl sends (no outputs) share an entry."""
    e = edge(clock)
    dataplane = await make_dataplane(clock, e, [worker(clock)], cache={"enabled": True})
    named = request("sdk")
    named.outputs = [RequestedOutput("y")]
    first = await clock.run(dataplane.infer(named))
    await clock.advance(0.1)  # the entry is written in the background
    second = await clock.run(dataplane.infer(request("curl")))
    assert first.parameters["served_by"] == "edge" and second.parameters["served_by"] == "cache"
    assert e.calls == 1
    await dataplane.cache.stop()
