"""``InFlightCalls``: what a graceful stop of the gRPC front waits for before grpc closes the
connections (a connection closed while its client still acknowledges an answer loses that answer).
The real server's drain is tested in ``tests/edge_agent/test_server.py``. And the multiplexed
stream's cancel bookkeeping, on a fake dataplane and context (the real stream to a real edge is
tested in ``tests/gateway/test_multiplexed_integration.py``)."""

from __future__ import annotations

import asyncio
import time

from edgecloud import codec
from edgecloud.grpc_server import InferenceServicer, InFlightCalls
from edgecloud.limits import RequestLimits
from edgecloud.types import InferResponse
from protos import inference_pb2 as pb


async def test_a_drain_waits_for_the_calls_in_flight_and_those_arriving_meanwhile_then_for_quiet():
    calls = InFlightCalls()
    calls.enter()
    drain = asyncio.ensure_future(calls.drain(60, quiet_s=0.05))
    await asyncio.sleep(0.01)
    calls.enter()  # arrives while stopping: served, and waited for
    calls.leave()
    await asyncio.sleep(0.01)
    assert not drain.done()
    calls.leave()
    answered = time.monotonic()
    left = await drain
    assert time.monotonic() - answered >= 0.05  # the connections stayed open after the last answer
    assert 0 < left < 60


async def test_a_drain_with_nothing_in_flight_waits_only_out_what_is_left_of_the_quiet():
    calls = InFlightCalls()
    started = time.monotonic()
    assert await calls.drain(60, quiet_s=5) > 59  # nothing ever answered: no wait
    assert time.monotonic() - started < 5
    calls.enter()
    calls.leave()
    answered = time.monotonic()
    await calls.drain(60, quiet_s=0.05)
    assert time.monotonic() - answered >= 0.05


async def test_a_drain_stops_waiting_when_only_the_reserve_is_left_and_returns_it():
    calls = InFlightCalls()
    calls.enter()
    started = time.monotonic()
    left = await calls.drain(0.3, quiet_s=1, reserve_s=0.1)
    assert calls.count == 1 and time.monotonic() - started >= 0.2
    assert 0 < left <= 0.1
    # The reserve is at most half the grace.
    left = await calls.drain(0.1, quiet_s=1, reserve_s=30)
    assert 0 < left <= 0.05


async def test_steady_traffic_does_not_keep_a_drain_past_the_grace():
    calls = InFlightCalls()

    async def traffic():
        while True:
            calls.enter()
            await asyncio.sleep(0.005)
            calls.leave()
            await asyncio.sleep(0.005)

    load = asyncio.ensure_future(traffic())
    await asyncio.sleep(0.02)  # the traffic is flowing
    started = time.monotonic()
    try:
        left = await calls.drain(0.4, quiet_s=0.1, reserve_s=0.1)
    finally:
        load.cancel()
    assert 0.3 <= time.monotonic() - started < 5
    assert 0 < left <= 0.1


class CountingDataplane:
    """Answers every request at once, recording which ids it served."""

    limits = RequestLimits()

    def __init__(self):
        self.served: list[str] = []

    def precheck(self, request) -> None:
        pass

    async def infer(self, request):
        self.served.append(request.id)
        return InferResponse(model_name=request.model_name, outputs=[], id=request.id)


class MultiplexedContext:
    def invocation_metadata(self):
        return ((codec.MULTIPLEXED_KEY, "1"),)

    def time_remaining(self):
        return None

    async def send_initial_metadata(self, metadata) -> None:
        pass


async def _messages(*raws: bytes):
    for raw in raws:  # all readable at once: none of the requests' tasks has run before the last is read
        yield raw


def _request(ident: str) -> bytes:
    request = pb.ModelInferRequest(model_name="m", id=ident)
    request.inputs.add(name="text", datatype="BYTES", shape=[1]).contents.bytes_contents.append(b"x")
    return request.SerializeToString()


async def test_a_cancel_read_before_its_request_started_drops_that_request_and_no_other():
    dataplane = CountingDataplane()
    servicer = InferenceServicer(dataplane)
    stream = servicer.ModelStreamInfer(_messages(_request("m1"), _request("m2"), codec.cancel_wire("m1"),
                                                 codec.cancel_wire("m9")), MultiplexedContext())
    answers = [pb.ModelStreamInferResponse.FromString(raw) async for raw in stream]
    assert dataplane.served == ["m2"]  # m1 was never run; a cancel for an unknown id drops nothing
    assert [a.infer_response.id for a in answers] == ["m2"] and not any(a.error_message for a in answers)
