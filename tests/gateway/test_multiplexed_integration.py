"""The gateway's multiplexed stream to a real edge server on port 0 (real model): requests go over
one confirmed ``ModelStreamInfer`` call, each answer reaches its own request, and a graceful stop
of the edge loses nothing (the stream ends, what it did not start goes unary)."""

from __future__ import annotations

import asyncio
import re

import numpy as np
import pytest

from edgecloud.config import ServerSettings
from edgecloud.errors import InvalidArgument
from edgecloud.limits import RequestLimits
from edgecloud.types import InferRequest, Tensor
from edge_agent.config import EdgeConfig, ModelSettings
from edge_agent.server import EdgeServer
from gateway.backend import EDGE
from gateway.grpc_backend import GrpcBackend
from protos import inference_pb2 as pb
from tests.support.waiting import wait_until

MODEL = "all-MiniLM-L6-v2"


def text_request(text: str, request_id: str = "") -> InferRequest:
    data = np.array([text.encode()], dtype=object)
    return InferRequest(model_name=MODEL, id=request_id, inputs=[Tensor("text", "BYTES", (1,), data)])


class Watched:
    """Which way each request reached the edge's dataplane (``stream``: a multiplexed stream's
    message, which arrives under the multiplexer's correlation id ``m<N>``; ``infer``: a unary
    call, under the client's own id); requests whose text says ``hold`` are held until
    ``release``, ``keep`` until ``release_kept``."""

    def __init__(self, server: EdgeServer, monkeypatch):
        dataplane = server.agent.dataplane
        self.ways: list[tuple[str, str]] = []
        self.release = asyncio.Event()
        self.release_kept = asyncio.Event()
        self.cancelled: list[str] = []
        infer = dataplane.infer

        async def watched_infer(request):
            text = request.inputs[0].data[0].decode()
            self.ways.append(("stream" if re.fullmatch(r"m\d+", request.id) else "infer", text))
            try:
                if "hold" in text:
                    await self.release.wait()
                if "keep" in text:
                    await self.release_kept.wait()
            except asyncio.CancelledError:
                self.cancelled.append(text)
                raise
            return await infer(request)

        monkeypatch.setattr(dataplane, "infer", watched_infer)

    def way(self, text: str) -> str:
        (way,) = [w for w, t in self.ways if t == text]
        return way


@pytest.fixture
async def edge(model_dir):
    # A grace no busy machine runs out of: the drain, not its speed, is under test.
    server = EdgeServer(EdgeConfig(server=ServerSettings(port=0, grace_s=60),
                                   models=[ModelSettings(path=model_dir, intra_op_threads=1)]))
    port = await server.start()
    backend = GrpcBackend(EDGE, EDGE, f"127.0.0.1:{port}", limits=RequestLimits())
    yield server, backend
    await backend.close()
    await server.stop(0.5)


async def confirmed(backend: GrpcBackend) -> None:
    """The first request goes unary while the stream opens; wait for its confirmation."""
    await backend.infer(text_request("opening"), 30)
    await wait_until(lambda: backend._mux.ready())


async def test_requests_ride_one_stream_and_each_answer_reaches_its_own_request(edge, monkeypatch):
    server, backend = edge
    watched = Watched(server, monkeypatch)
    texts = [f"sentence number {i} about a different topic {'x' * i}" for i in range(24)]
    first = (await backend.infer(text_request(texts[0]), 30)).output("embedding").data
    assert watched.ways == [("infer", texts[0])]  # the stream opens meanwhile
    await wait_until(lambda: backend._mux.ready())
    answers = await asyncio.gather(*(backend.infer(text_request(t, request_id=f"id-{i % 2}"), 30)
                                     for i, t in enumerate(texts)))
    assert [way for way, _ in watched.ways[1:]] == ["stream"] * len(texts)
    for i, answer in enumerate(answers):
        assert answer.id == f"id-{i % 2}" and answer.model_name == MODEL
        assert "triton_final_response" not in answer.parameters
        assert answer.output("embedding").data.shape == (1, 384)
    # Each answer is its own text's: the same as that text's answer over a unary call.
    unary_only = GrpcBackend("edge-unary", EDGE, backend.address, limits=RequestLimits(), multiplex=False)
    try:
        for text, answer in zip(texts, answers):
            expected = (await unary_only.infer(text_request(text), 30)).output("embedding").data
            np.testing.assert_allclose(answer.output("embedding").data, expected, atol=1e-5)
    finally:
        await unary_only.close()
    np.testing.assert_allclose(answers[0].output("embedding").data, first, atol=1e-5)


async def test_a_bad_request_on_the_stream_fails_alone_with_its_own_error(edge, monkeypatch):
    _, backend = edge
    await confirmed(backend)
    wrong = InferRequest(model_name=MODEL, inputs=[Tensor("text", "FP32", (1,), np.ones(1, np.float32))])
    unknown = InferRequest(model_name="no-such-model", inputs=text_request("x").inputs)
    results = await asyncio.gather(backend.infer(wrong, 30), backend.infer(unknown, 30),
                                   backend.infer(text_request("fine"), 30), return_exceptions=True)
    assert type(results[0]).__name__ == "InvalidArgument" and "text" in results[0].message
    assert type(results[1]).__name__ == "NotFound"
    assert results[2].output("embedding").data.shape == (1, 384)
    # Bytes the edge cannot decode (2 elements announced, 1 sent): the error still names its request.
    undecodable = pb.ModelInferRequest(model_name=MODEL, raw_input_contents=[b"\x03\x00\x00\x00abc"])
    undecodable.inputs.add(name="text", datatype="BYTES", shape=[2])
    with pytest.raises(InvalidArgument, match="text"):
        await backend._mux.infer(undecodable.SerializeToString(), "mine", 30)
    assert backend._mux.ready()


async def test_an_edge_stopping_answers_what_its_stream_started_and_what_it_did_not_goes_unary(edge, monkeypatch):
    server, backend = edge
    watched = Watched(server, monkeypatch)
    await confirmed(backend)
    calls = server._grpc._calls  # the server's InFlightCalls: when its drain has begun
    started = asyncio.ensure_future(backend.infer(text_request("hold: started on the stream"), 60))
    # A unary call held in flight keeps the drain going whatever the machine's speed.
    unary_only = GrpcBackend("edge-unary", EDGE, backend.address, limits=RequestLimits(), multiplex=False)
    keeps_draining = asyncio.ensure_future(unary_only.infer(text_request("keep: the drain going"), 60))
    await wait_until(lambda: len(watched.ways) >= 3)
    stopping = asyncio.ensure_future(server.stop(60))
    await wait_until(lambda: calls.draining)
    # Sent after the drain began: the stream no longer reads it; the stream ends once what it
    # started has answered, and this request is sent again, as a unary call, and served.
    late = asyncio.ensure_future(backend.infer(text_request("sent while the edge drains"), 60))
    await asyncio.sleep(0.05)
    assert not late.done() and not stopping.done()
    watched.release.set()
    for task in (started, late):
        assert (await task).output("embedding").data.shape == (1, 384)
    assert not keeps_draining.done() and not stopping.done()
    watched.release_kept.set()
    assert (await keeps_draining).output("embedding").data.shape == (1, 384)
    assert watched.way("sent while the edge drains") == "infer"
    assert watched.way("hold: started on the stream") == "stream"
    assert watched.way("keep: the drain going") == "infer"
    await stopping
    await unary_only.close()


async def test_a_large_request_goes_alone_as_a_unary_call_while_the_stream_is_open(edge, monkeypatch):
    server, backend = edge
    await confirmed(backend)
    watched = Watched(server, monkeypatch)
    monkeypatch.setattr("gateway.grpc_backend.MULTIPLEX_MAX_BYTES", 200)
    large, small = "a long sentence " * 20, "short"
    answers = await asyncio.gather(backend.infer(text_request(large), 30), backend.infer(text_request(small), 30))
    assert all(a.output("embedding").data.shape == (1, 384) for a in answers)
    assert (watched.way(large), watched.way(small)) == ("infer", "stream")


async def test_a_request_its_caller_gave_up_on_is_cancelled_on_the_edge_and_the_stream_serves_on(edge, monkeypatch):
    server, backend = edge
    watched = Watched(server, monkeypatch)
    await confirmed(backend)
    loser = asyncio.ensure_future(backend.infer(text_request("hold: a hedge's loser"), 60))
    await wait_until(lambda: ("stream", "hold: a hedge's loser") in watched.ways)
    loser.cancel()  # what the dispatcher does to a hedge's loser, or a client that left
    await wait_until(lambda: watched.cancelled == ["hold: a hedge's loser"])
    answer = await backend.infer(text_request("served after it"), 30)
    assert answer.output("embedding").data.shape == (1, 384) and watched.way("served after it") == "stream"
