"""``Multiplexer``'s bookkeeping over a scripted stream call (pure logic: correlation, expiry,
errors, a stream the backend ends or breaks, confirmation); the real stream to a real edge
server, and its drain, are tested in ``test_multiplexed_integration.py``."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from edgecloud.errors import DeadlineExceeded, ErrorKind, InternalError, InvalidArgument, Unavailable
from edgecloud.generation import FINAL_PARAMETER
from edgecloud.rpc_errors import error_from_rpc
from edgecloud.codec import CANCEL_PARAMETER, MULTIPLEXED_KEY, STREAM_ERROR_KIND_PARAMETER
from gateway.multiplexed import FALLBACK_S, Multiplexer, NotStarted
from protos import inference_pb2 as pb

CONFIRMED = ((MULTIPLEXED_KEY, "1"),)


class ScriptedStream:
    """A ``ModelStreamInfer`` call whose server the test plays: it reads what was written
    (``requests``), answers with ``answer``/``fail_request``, ends with ``end``."""

    def __init__(self, metadata: tuple | None = CONFIRMED):
        self._metadata = metadata
        self._inbox: asyncio.Queue = asyncio.Queue()
        self._code: grpc.StatusCode | None = None
        self.requests: list[pb.ModelInferRequest] = []
        self._written = asyncio.Event()
        self.cancelled = False
        self.write_error: Exception | None = None

    async def initial_metadata(self):
        if self._metadata is None:
            await asyncio.Event().wait()  # never confirms
        return self._metadata

    async def write(self, data: bytes) -> None:
        if self._code is not None:
            raise asyncio.InvalidStateError("done")
        if self.write_error is not None:
            raise self.write_error
        self.requests.append(pb.ModelInferRequest.FromString(data))
        self._written.set()

    async def read(self):
        return await self._inbox.get()

    async def code(self):
        return self._code

    async def details(self):
        return "ended by the script"

    def done(self) -> bool:
        return self._code is not None

    def cancel(self) -> None:
        self.cancelled = True
        self.end(grpc.StatusCode.CANCELLED)

    # the server's side -----------------------------------------------------------------------

    async def received(self, n: int) -> list[pb.ModelInferRequest]:
        while len(self.requests) < n:
            self._written.clear()
            await self._written.wait()
        return self.requests

    def answer(self, key: str, value: float = 1.0, final: bool = True) -> bytes:
        """Answer ``key`` (flagged final as Triton flags stream answers, or not, as an edgecloud
        server answers on a multiplexed stream); returns the answer's bytes."""
        response = pb.ModelInferResponse(model_name="m", id=key)
        if final:
            response.parameters[FINAL_PARAMETER].bool_param = True
        response.outputs.add(name="y", datatype="FP32", shape=[1]).contents.fp32_contents.append(value)
        self._inbox.put_nowait(pb.ModelStreamInferResponse(infer_response=response).SerializeToString())
        return response.SerializeToString()

    def fail_request(self, key: str, kind: ErrorKind, message: str) -> None:
        out = pb.ModelStreamInferResponse(error_message=message)
        out.infer_response.id = key
        out.infer_response.parameters[STREAM_ERROR_KIND_PARAMETER].string_param = kind.value
        self._inbox.put_nowait(out.SerializeToString())

    def end(self, code: grpc.StatusCode) -> None:
        if self._code is None:
            self._code = code
            self._inbox.put_nowait(grpc.aio.EOF)


async def wait_for(condition, turns: int = 1000) -> None:
    for _ in range(turns):
        if condition():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("condition not reached")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Harness:
    def __init__(self, metadata: tuple | None = CONFIRMED, confirm_s: float = 5.0):
        self.clock = Clock()
        self.streams: list[ScriptedStream] = []
        self.metadata = metadata
        self.mux = Multiplexer("edge (test)", self._open, error_from_rpc, clock=self.clock, confirm_s=confirm_s)

    def _open(self) -> ScriptedStream:
        self.streams.append(ScriptedStream(self.metadata))
        return self.streams[-1]

    async def opened(self) -> ScriptedStream:
        self.mux.open_when_due()
        for _ in range(100):
            if self.mux.ready():
                return self.streams[-1]
            await asyncio.sleep(0)
        raise AssertionError("the stream was not confirmed")

    def send(self, request_id: str, timeout_s: float | None = 5.0) -> asyncio.Task:
        wire = pb.ModelInferRequest(model_name="m", id=request_id).SerializeToString()
        return asyncio.ensure_future(self.mux.infer(wire, request_id, timeout_s))


async def test_answers_reach_their_requests_in_any_order_with_their_own_ids_and_no_final_flag():
    harness = Harness()
    stream = await harness.opened()
    first, second = harness.send("client-a"), harness.send("client-a")  # a client's ids need not be unique
    sent = await stream.received(2)
    keys = [r.id for r in sent]
    assert len(set(keys)) == 2 and "client-a" not in keys  # the correlation ids are the multiplexer's
    stream.answer(keys[1], 2.0)
    stream.answer(keys[0], 1.0)
    (a_bytes, a), (_, b) = await first, await second
    assert (a.id, b.id) == ("client-a", "client-a")
    assert (a.outputs[0].contents.fp32_contents[0], b.outputs[0].contents.fp32_contents[0]) == (1.0, 2.0)
    assert FINAL_PARAMETER not in a.parameters and FINAL_PARAMETER not in b.parameters
    assert FINAL_PARAMETER not in pb.ModelInferResponse.FromString(a_bytes).parameters


async def test_an_unflagged_answer_is_handed_on_as_its_bytes_without_re_encoding():
    harness = Harness()
    stream = await harness.opened()
    pending = harness.send("client-b")
    (sent,) = await stream.received(1)
    sent_bytes = stream.answer(sent.id, final=False)
    body, message = await pending
    assert body is not None and body == sent_bytes and message.id == "client-b"


async def test_a_request_not_answered_in_time_fails_deadline_exceeded_and_the_stream_goes_on():
    harness = Harness()
    stream = await harness.opened()
    late = harness.send("slow", timeout_s=0.01)
    (sent,) = await stream.received(1)
    with pytest.raises(DeadlineExceeded):
        await late
    stream.answer(sent.id)  # its answer arrives after all: dropped
    following = harness.send("next")
    nxt = (await stream.received(2))[1]
    stream.answer(nxt.id, 3.0)
    assert (await following)[1].outputs[0].contents.fp32_contents[0] == 3.0
    assert harness.mux.ready() and len(harness.streams) == 1


async def test_an_error_answer_fails_only_its_request_with_its_kind():
    harness = Harness()
    stream = await harness.opened()
    bad, good = harness.send("bad"), harness.send("good")
    sent = await stream.received(2)
    stream.fail_request(sent[0].id, ErrorKind.INVALID_ARGUMENT, "input 'x' has the wrong shape")
    stream.answer(sent[1].id)
    with pytest.raises(InvalidArgument, match="wrong shape"):
        await bad
    assert (await good)[1].id == "good"


async def test_a_stream_answer_that_is_not_final_is_refused():
    harness = Harness()
    stream = await harness.opened()
    pending = harness.send("r")
    (sent,) = await stream.received(1)
    response = pb.ModelInferResponse(model_name="m", id=sent.id)
    response.parameters[FINAL_PARAMETER].bool_param = False
    stream._inbox.put_nowait(pb.ModelStreamInferResponse(infer_response=response).SerializeToString())
    with pytest.raises(InternalError, match="with a stream"):
        await pending


async def test_requests_a_stream_ended_with_ok_left_unanswered_were_not_started_and_go_unary_for_a_while():
    harness = Harness()
    stream = await harness.opened()
    answered, unanswered = harness.send("a"), harness.send("b")
    sent = await stream.received(2)
    stream.answer(sent[0].id)
    stream.end(grpc.StatusCode.OK)  # a server draining for a stop
    assert (await answered)[1].id == "a"
    with pytest.raises(NotStarted):
        await unanswered
    assert not harness.mux.ready()
    harness.mux.open_when_due()
    assert len(harness.streams) == 1  # not again before FALLBACK_S
    harness.clock.now += FALLBACK_S
    assert await harness.opened() is harness.streams[1]


async def test_a_failed_stream_fails_its_requests_with_the_translated_error_then_a_new_one_opens_later():
    harness = Harness()
    stream = await harness.opened()
    waiting = [harness.send(f"r{i}") for i in range(3)]
    await stream.received(3)
    stream.end(grpc.StatusCode.UNAVAILABLE)  # the connection is lost
    for task in waiting:
        with pytest.raises(Unavailable):
            await task
    errors = [task.exception() for task in waiting]
    assert len({id(e) for e in errors}) == 3  # each request its own error object
    assert stream.cancelled is False and not harness.mux.ready()
    harness.clock.now += FALLBACK_S
    again = await harness.opened()
    pending = harness.send("after")
    (sent,) = await again.received(1)
    again.answer(sent.id)
    assert (await pending)[1].id == "after"


async def test_a_write_that_fails_unexpectedly_ends_the_stream_and_its_requests_fail_over_at_once():
    harness = Harness()
    stream = await harness.opened()
    stream.write_error = ValueError("a broken serializer")
    pending = harness.send("lost", timeout_s=60.0)
    with pytest.raises(Unavailable):  # at once, not after its 60 s: the dispatcher fails it over
        await asyncio.wait_for(pending, 1.0)
    assert stream.cancelled and not harness.mux.ready()
    harness.clock.now += FALLBACK_S
    again = await harness.opened()
    assert again is not stream
    following = harness.send("next")
    (sent,) = await again.received(1)
    again.answer(sent.id)
    assert (await following)[1].id == "next"


async def test_cancelling_a_wait_sends_a_cancel_for_it_and_leaves_the_stream_alone():
    harness = Harness()
    stream = await harness.opened()
    loser, other = harness.send("hedge loser"), harness.send("other")
    sent = await stream.received(2)
    loser.cancel()
    with pytest.raises(asyncio.CancelledError):
        await loser
    (cancel,) = (await stream.received(3))[2:]  # the backend is asked to drop its work
    assert cancel.id == sent[0].id and cancel.parameters[CANCEL_PARAMETER].bool_param is True
    assert not cancel.model_name and not cancel.inputs
    stream.answer(sent[0].id)  # had it answered anyway: dropped
    stream.answer(sent[1].id)
    assert (await other)[1].id == "other"
    assert harness.mux.ready() and not stream.cancelled


async def test_a_backend_that_answers_without_confirming_is_not_multiplexed_again():
    harness = Harness((("server", "triton"),))
    harness.mux.open_when_due()
    stream = harness.streams[0]
    await wait_for(lambda: harness.mux.unsupported)
    assert not harness.mux.ready() and stream.cancelled and not stream.requests
    harness.clock.now += 3600
    harness.mux.open_when_due()
    assert len(harness.streams) == 1  # never asked again


async def test_a_silent_backend_is_asked_again_less_and_less_often_and_multiplexed_once_it_confirms():
    harness = Harness(None, confirm_s=0.01)  # says nothing (frozen, or headers only with answers)
    opened_at = []
    for backoff in (2.0, 4.0, 8.0):
        harness.mux.open_when_due()
        opened_at.append(len(harness.streams))
        await wait_for(lambda: harness.streams[-1].cancelled)
        assert not harness.mux.unsupported and not harness.mux.ready() and not harness.streams[-1].requests
        harness.clock.now += backoff - 0.1
        harness.mux.open_when_due()
        assert len(harness.streams) == opened_at[-1]  # not before the backoff
        harness.clock.now += 0.1
    assert opened_at == [1, 2, 3]
    harness.metadata = CONFIRMED  # it thaws
    assert await harness.opened() is harness.streams[3]


async def test_close_fails_the_waiting_requests_unavailable():
    harness = Harness()
    stream = await harness.opened()
    waiting = harness.send("r")
    await stream.received(1)
    await harness.mux.close()
    with pytest.raises(Unavailable):
        await waiting
    assert stream.cancelled
    harness.clock.now += FALLBACK_S
    harness.mux.open_when_due()
    assert len(harness.streams) == 1
