"""The stream service on a scripted dispatcher and the real in-process cache: deterministic
streams are cached and replayed chunk by chunk, identical live streams share one generation,
failed or cancelled generations are never stored, and tenants never share entries."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry

from edgecloud.errors import Unavailable
from edgecloud.generation import FINAL_PARAMETER, text_tensor
from edgecloud.types import InferResponse
from gateway.cache.cache import GatewayCache
from gateway.cache.settings import CacheSettings
from gateway.metrics import CacheMetrics, GatewayMetrics
from gateway.streams.requests import parse, response_text
from gateway.streams.service import StreamService
from gateway.streams.shared import SharedGeneration
from tests.gateway.streams.fake_streams import generate_request


class ScriptedDispatcher:
    """Answers every stream with ``chunks`` (the last final), one per loop turn; ``gate`` holds the
    stream after its first chunk until set; ``fail`` raises instead of the final chunk."""

    def __init__(self, chunks=("a", "b", "c"), served_by="edge"):
        self.chunks = chunks
        self.served_by = served_by
        self.calls = 0
        self.closed = 0
        self.gate: asyncio.Event | None = None
        self.fail = False

    async def stream(self, request, generate, deadline, *, require_cloud=False):
        self.calls += 1
        try:
            for index, text in enumerate(self.chunks):
                final = index == len(self.chunks) - 1
                if final and self.fail:
                    raise Unavailable("the backend died")
                params = {FINAL_PARAMETER: final, "completion_tokens": index + 1}
                if index == 0 or final:
                    params.update(served_by=self.served_by, route_reason="edge_fast")
                if final:
                    params.update(finish_reason="stop", prompt_tokens=5, variant="int4")
                yield InferResponse(request.model_name, [text_tensor(text)], id=request.id, parameters=params)
                if index == 0 and self.gate is not None:
                    await self.gate.wait()
                await asyncio.sleep(0)
        finally:
            self.closed += 1


@pytest.fixture
async def service():
    cache = GatewayCache(CacheSettings(enabled=True), CacheMetrics(CollectorRegistry()))
    await cache.start()
    dispatcher = ScriptedDispatcher()
    yield StreamService(dispatcher, cache, GatewayMetrics())
    await cache.stop()


async def run(service, *, tenant="default", request_id="r", deadline=1e12, **sampling):
    request = generate_request("P:", request_id=request_id, **{"max_tokens": 3, **sampling})
    request.tenant = tenant
    out = [r async for r in service.stream(request, parse(request), model_version="1", deadline=deadline,
                                           require_cloud=False, bypass_cache=False)]
    return out


async def stored(service) -> None:
    for _ in range(100):  # writes happen in the background
        await asyncio.sleep(0)


async def test_a_greedy_stream_is_replayed_chunk_by_chunk_from_the_cache(service):
    first = await run(service, temperature=0)
    await stored(service)
    again = await run(service, temperature=0, request_id="r2")
    assert service.dispatcher.calls == 1
    assert [response_text(r) for r in again] == [response_text(r) for r in first] == ["a", "b", "c"]
    assert again[0].parameters["served_by"] == "cache" and again[0].parameters["route_reason"] == "cache_hit"
    final = again[-1].parameters
    assert final[FINAL_PARAMETER] is True and final["cache_source"] == "edge"
    assert final["completion_tokens"] == 3 and final["finish_reason"] == "stop" and final["variant"] == "int4"
    assert all(r.id == "r2" for r in again)
    assert [r.parameters[FINAL_PARAMETER] for r in again] == [False, False, True]


async def test_a_fixed_seed_is_cached_and_sampling_without_one_is_not(service):
    await run(service, temperature=0.8, seed=4)
    await stored(service)
    await run(service, temperature=0.8, seed=4)
    assert service.dispatcher.calls == 1
    await run(service, temperature=0.8)
    await run(service, temperature=0.8)
    assert service.dispatcher.calls == 3


async def test_every_sampling_parameter_and_the_tenant_are_in_the_key(service):
    await run(service, temperature=0)
    await stored(service)
    await run(service, temperature=0, max_tokens=4)
    await run(service, temperature=0, stop=["x"])
    await run(service, temperature=0, tenant="other")
    assert service.dispatcher.calls == 4


async def test_a_failed_generation_is_never_cached(service):
    service.dispatcher.fail = True
    with pytest.raises(Unavailable):
        await run(service, temperature=0)
    await stored(service)
    service.dispatcher.fail = False
    out = await run(service, temperature=0)
    assert service.dispatcher.calls == 2 and out[0].parameters["served_by"] == "edge"


async def test_identical_live_streams_share_one_generation(service):
    dispatcher = service.dispatcher
    dispatcher.gate = asyncio.Event()
    leader = asyncio.ensure_future(run(service, temperature=0, request_id="lead"))
    while dispatcher.calls == 0:
        await asyncio.sleep(0)
    follower = asyncio.ensure_future(run(service, temperature=0, request_id="follow"))
    for _ in range(5):
        await asyncio.sleep(0)
    dispatcher.gate.set()
    lead, follow = await leader, await follower
    assert dispatcher.calls == 1
    assert [response_text(r) for r in follow] == ["a", "b", "c"]
    assert follow[0].parameters["route_reason"] == "coalesced" and lead[0].parameters["route_reason"] == "edge_fast"
    assert all(r.id == "follow" for r in follow) and all(r.id == "lead" for r in lead)


async def test_a_generation_everyone_left_is_stopped_and_not_cached(service):
    dispatcher = service.dispatcher
    dispatcher.gate = asyncio.Event()
    request = generate_request("P:", max_tokens=3, temperature=0)
    responses = service.stream(request, parse(request), model_version="1", deadline=1e12, require_cloud=False,
                               bypass_cache=False)
    assert response_text(await anext(responses)) == "a"
    await responses.aclose()
    for _ in range(10):
        await asyncio.sleep(0)
    assert dispatcher.closed == 1
    dispatcher.gate = None
    await run(service, temperature=0)
    assert dispatcher.calls == 2  # nothing was stored from the abandoned one


async def test_a_late_joiner_gets_what_was_produced_then_the_rest():
    gate = asyncio.Event()

    async def source():
        yield InferResponse("m", [text_tensor("x")], parameters={})
        await gate.wait()
        yield InferResponse("m", [text_tensor("y")], parameters={FINAL_PARAMETER: True})

    ended = []
    shared = SharedGeneration(source(), ended.append)
    first = shared.follow()
    assert response_text(await anext(first)) == "x"
    late = shared.follow()
    assert response_text(await anext(late)) == "x"  # at once, from what was kept
    gate.set()
    assert response_text(await anext(late)) == "y" and response_text(await anext(first)) == "y"
    await asyncio.sleep(0)
    assert shared.completed and ended == [shared]
