"""Large REST bodies parsed in a helper process: the same answers as parsing in place (requests
and typed errors alike), the loop's thread spared the parse, a dead helper or a cancelled request
losing nothing. Real helper processes throughout."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import struct
import time

import numpy as np
import pytest

from edgecloud import json_codec
from edgecloud.body_decoder import BodyDecoder
from edgecloud.codec import NO_DATA, serialize_bytes
from edgecloud.errors import InferenceError, InvalidArgument
from edgecloud.limits import RequestLimits
from edgecloud.types import InferRequest

LIMITS = RequestLimits()


def _body(*inputs: dict, **top) -> bytes:
    return json.dumps({"inputs": list(inputs), **top}).encode()


def _binary(header: dict, *blobs: bytes) -> tuple[bytes, int]:
    text = json.dumps(header).encode()
    return text + b"".join(blobs), len(text)


BODIES: dict[str, tuple[bytes, int | None]] = {
    "numbers, nested, with parameters": (_body(
        {"name": "x", "datatype": "FP32", "shape": [2, 2], "data": [[1.5, -2], [3, 4.25]],
         "parameters": {"note": "é", "n": 3}},
        {"name": "y", "datatype": "INT64", "shape": [3], "data": [-(2**63), 0, 2**63 - 1]},
        id="r-1", parameters={"quality": "cloud", "binary_data_output": True, "f": 0.5},
        outputs=[{"name": "out", "parameters": {"classification": 2}}]), None),
    "text, half precision, booleans": (_body(
        {"name": "text", "datatype": "BYTES", "shape": [3], "data": ["a", "", "ünï"]},
        {"name": "h", "datatype": "FP16", "shape": [2], "data": [0.5, 65504]},
        {"name": "b", "datatype": "BF16", "shape": [2], "data": [1.0, -3.140625]},
        {"name": "ok", "datatype": "BOOL", "shape": [2], "data": [True, False]}), None),
    "binary tensor data": _binary(
        {"inputs": [{"name": "x", "datatype": "FP32", "shape": [3], "parameters": {"binary_data_size": 12}},
                    {"name": "t", "datatype": "BYTES", "shape": [2],
                     "parameters": {"binary_data_size": len(serialize_bytes([b"\xff\x00", b"z"]))}}]},
        struct.pack("<3f", 1, 2, 3), serialize_bytes([b"\xff\x00", b"z"])),
}

BAD_BODIES: dict[str, tuple[bytes, int | None]] = {
    "not JSON": (b"{\"inputs\": [", None),
    "invalid UTF-8": (b"{\"inputs\": \"\xff\"}", None),
    "repeated key": (b'{"inputs": [], "inputs": []}', None),
    "a string among numbers": (_body({"name": "x", "datatype": "FP32", "shape": [2], "data": [1, "2"]}), None),
    "elements short of the shape": (_body({"name": "x", "datatype": "INT32", "shape": [3], "data": [1, 2]}), None),
    "an element over the limit": (_body({"name": "t", "datatype": "BYTES", "shape": [1],
                                         "data": ["x" * (LIMITS.max_bytes_element + 1)]}), None),
    "binary size past the end": _binary(
        {"inputs": [{"name": "x", "datatype": "FP32", "shape": [3], "parameters": {"binary_data_size": 16}}]},
        b"\0" * 12),
}


def _same(left: InferRequest, right: InferRequest) -> None:
    assert (left.model_name, left.model_version, left.id) == (right.model_name, right.model_version, right.id)
    assert left.parameters == right.parameters
    assert left.outputs == right.outputs
    assert len(left.inputs) == len(right.inputs)
    for a, b in zip(left.inputs, right.inputs):
        assert (a.name, a.datatype, a.shape, a.parameters) == (b.name, b.datatype, b.shape, b.parameters)
        assert a.data.dtype == b.data.dtype and a.data.shape == b.data.shape
        assert a.data.tolist() == b.data.tolist()


@pytest.fixture
async def decoder():
    decoder = BodyDecoder(threshold_bytes=1)  # every body goes to a helper
    yield decoder
    await decoder.close()


async def test_a_helper_decodes_every_form_as_parsing_in_place_would(decoder):
    for name, (body, header_length) in BODIES.items():
        in_place = json_codec.request_from_json(body, header_length, LIMITS, model_name="m", model_version="2")
        helped = await decoder.decode(body, header_length, LIMITS, model_name="m", model_version="2")
        _same(helped, in_place)
    assert decoder.offloaded == len(BODIES)


async def test_a_helper_refuses_what_parsing_in_place_refuses_naming_the_same_field(decoder):
    for name, (body, header_length) in BAD_BODIES.items():
        with pytest.raises(InferenceError) as in_place:
            json_codec.request_from_json(body, header_length, LIMITS, model_name="m")
        with pytest.raises(InferenceError) as helped:
            await decoder.decode(body, header_length, LIMITS, model_name="m")
        assert type(helped.value) is type(in_place.value), name
        assert (helped.value.message, helped.value.field) == (in_place.value.message, in_place.value.field), name


async def test_the_precheck_sees_the_header_before_any_data_and_can_refuse(decoder):
    seen = []

    def precheck(request: InferRequest) -> None:
        seen.append([(t.name, t.shape, t.data is NO_DATA) for t in request.inputs])
        raise InvalidArgument("batch of 2 exceeds the limit of 1", field="inputs[x].shape")

    body, _ = BODIES["numbers, nested, with parameters"]
    for header_length, use in ((None, decoder), (None, None)):
        with pytest.raises(InvalidArgument, match="limit of 1"):
            if use is None:
                json_codec.request_from_json(body, header_length, LIMITS, model_name="m", precheck=precheck)
            else:
                await use.decode(body, header_length, LIMITS, model_name="m", precheck=precheck)
    assert seen == [[("x", (2, 2), True), ("y", (3,), True)]] * 2


async def test_small_bodies_stay_in_place_and_large_ones_spare_the_loops_thread():
    """The measure is the CPU time of the thread that runs the loop (a descheduled process is not
    a stalled loop): a helper's parse of a million numbers must cost that thread a fraction of
    what parsing in place costs it, measured side by side."""
    decoder = BodyDecoder(threshold_bytes=64 * 1024)
    try:
        small, _ = BODIES["numbers, nested, with parameters"]
        await decoder.decode(small, None, LIMITS, model_name="m")
        assert decoder.offloaded == 0
        values = np.random.default_rng(5).random(1_000_000, dtype=np.float32)
        big = _body({"name": "x", "datatype": "FP32", "shape": [len(values)], "data": values.tolist()})
        await decoder.decode(big, None, LIMITS, model_name="m")  # the helper is started and warm
        started = time.thread_time()
        in_place = json_codec.request_from_json(big, None, LIMITS, model_name="m")
        in_place_cpu = time.thread_time() - started
        started = time.thread_time()
        helped = await decoder.decode(big, None, LIMITS, model_name="m")
        helped_cpu = time.thread_time() - started
        assert decoder.offloaded == 2
        _same(helped, in_place)
        assert helped_cpu < 0.25 * in_place_cpu, (helped_cpu, in_place_cpu)
    finally:
        await decoder.close()


async def test_a_helper_killed_mid_body_loses_nothing_and_is_replaced(decoder):
    body, _ = BODIES["text, half precision, booleans"]
    await decoder.decode(body, None, LIMITS, model_name="m")
    (helper,) = decoder._idle
    os.kill(helper.process.pid, signal.SIGKILL)
    await asyncio.to_thread(helper.process.wait)
    expected = json_codec.request_from_json(body, None, LIMITS, model_name="m")
    _same(await decoder.decode(body, None, LIMITS, model_name="m"), expected)  # a new helper
    (replacement,) = decoder._idle
    assert replacement.process.pid != helper.process.pid
    os.kill(replacement.process.pid, signal.SIGSTOP)  # killed while it holds the next body
    try:
        answer = asyncio.ensure_future(decoder.decode(body, None, LIMITS, model_name="m"))
        await asyncio.sleep(0.2)
        assert not answer.done()
        os.kill(replacement.process.pid, signal.SIGKILL)
        _same(await asyncio.wait_for(answer, 30), expected)  # decoded in place
    finally:
        os.kill(replacement.process.pid, signal.SIGKILL) if replacement.process.returncode is None else None


async def test_a_request_cancelled_while_its_body_is_in_a_helper_leaves_the_pipe_in_step(decoder):
    values = list(range(300_000))
    big = _body({"name": "x", "datatype": "INT64", "shape": [len(values)], "data": values})
    body, _ = BODIES["numbers, nested, with parameters"]
    await decoder.decode(body, None, LIMITS, model_name="m")
    cancelled = asyncio.ensure_future(decoder.decode(big, None, LIMITS, model_name="m"))
    await asyncio.sleep(0.01)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    # The next body gets its own answer, not the cancelled one's.
    _same(await decoder.decode(body, None, LIMITS, model_name="m"),
          json_codec.request_from_json(body, None, LIMITS, model_name="m"))


async def test_bodies_wait_for_a_free_helper_and_close_ends_every_helper():
    decoder = BodyDecoder(threshold_bytes=1, processes=2)
    body, _ = BODIES["text, half precision, booleans"]
    answers = await asyncio.gather(*(decoder.decode(body, None, LIMITS, model_name="m") for _ in range(6)))
    assert len(answers) == 6 and decoder.offloaded == 6
    helpers = list(decoder._idle)
    assert 1 <= len(helpers) <= 2
    await decoder.close()
    assert all(helper.process.returncode is not None for helper in helpers)
    # After close, bodies are decoded in place.
    _same(await decoder.decode(body, None, LIMITS, model_name="m"),
          json_codec.request_from_json(body, None, LIMITS, model_name="m"))


async def test_a_helper_that_stops_answering_is_killed_and_the_body_decoded_in_place():
    decoder = BodyDecoder(threshold_bytes=1, timeout_s=0.5)
    try:
        body, _ = BODIES["text, half precision, booleans"]
        expected = json_codec.request_from_json(body, None, LIMITS, model_name="m")
        await decoder.decode(body, None, LIMITS, model_name="m")
        (helper,) = decoder._idle
        os.kill(helper.process.pid, signal.SIGSTOP)  # alive, but never answers
        _same(await asyncio.wait_for(decoder.decode(body, None, LIMITS, model_name="m"), 30), expected)
        assert helper.process.poll() is not None  # killed, not left behind
        _same(await decoder.decode(body, None, LIMITS, model_name="m"), expected)  # a new helper
        assert decoder._idle and decoder._idle[0].process.pid != helper.process.pid
    finally:
        await decoder.close()


async def test_a_garbled_answer_is_decoded_in_place(monkeypatch):
    from edgecloud import body_decoder

    decoder = BodyDecoder(threshold_bytes=1)
    try:
        body, _ = BODIES["numbers, nested, with parameters"]
        monkeypatch.setattr(body_decoder._Helper, "_roundtrip", lambda self, meta, body: (0, bytearray(b"\xff" * 7)))
        _same(await decoder.decode(body, None, LIMITS, model_name="m"),
              json_codec.request_from_json(body, None, LIMITS, model_name="m"))
        monkeypatch.setattr(body_decoder._Helper, "_roundtrip", lambda self, meta, body: (1, bytearray(b"{")))
        _same(await decoder.decode(body, None, LIMITS, model_name="m"),
              json_codec.request_from_json(body, None, LIMITS, model_name="m"))
        assert decoder.offloaded == 0
    finally:
        await decoder.close()
