"""The generation contract's pure logic: sampling parameters, request decoding, incremental text
with stop strings, and how a ``GenerativeModel`` answers unary and streamed calls (on a fake)."""

from __future__ import annotations

import asyncio
import contextlib
import json

import numpy as np
import pytest

from edgecloud.errors import InvalidArgument
from edgecloud.generate_json import generate_request_from_json, generate_response_to_json, sse_error, sse_event
from edgecloud.generation import (
    Chunk,
    GenerateRequest,
    GenerationLimits,
    GenerativeModel,
    SamplingParams,
    TextStream,
    Usage,
    parse_generate_request,
    parse_sampling,
)
from edgecloud.limits import RequestLimits
from edgecloud.types import InferRequest, Tensor
from edgecloud.validation import validate_request

LIMITS = GenerationLimits(context_length=64, max_tokens=32, default_max_tokens=8)


def _bytes(name: str, value: bytes) -> Tensor:
    data = np.empty(1, dtype=object)
    data[0] = value
    return Tensor(name, "BYTES", (1,), data)


def _bool(name: str, value: bool) -> Tensor:
    return Tensor(name, "BOOL", (1,), np.array([value]))


def _request(prompt: bytes = b"hi", sampling: bytes | None = None, stream: bool | None = None, **parameters):
    inputs = [_bytes("text_input", prompt)]
    if sampling is not None:
        inputs.append(_bytes("sampling_parameters", sampling))
    if stream is not None:
        inputs.append(_bool("stream", stream))
    return InferRequest("m", inputs, id="r1", parameters=parameters)


# sampling parameters ---------------------------------------------------------------------------


def test_sampling_defaults_follow_the_limits():
    assert parse_sampling({}, LIMITS, "s") == SamplingParams(max_tokens=8)
    assert SamplingParams(temperature=0.0).greedy and SamplingParams(top_k=1).greedy
    assert not SamplingParams().greedy


def test_sampling_accepts_numbers_sent_as_strings():
    params = parse_sampling({"temperature": "0.5", "top_p": "0.9", "max_tokens": "4", "seed": 7.0}, LIMITS, "s")
    assert params == SamplingParams(max_tokens=4, temperature=0.5, top_p=0.9, seed=7)


@pytest.mark.parametrize(
    "raw, field",
    [
        ({"temprature": 1}, "s.temprature"),
        ({"max_tokens": 0}, "s.max_tokens"),
        ({"max_tokens": 33}, "s.max_tokens"),
        ({"max_tokens": 2.5}, "s.max_tokens"),
        ({"max_tokens": True}, "s.max_tokens"),
        ({"temperature": "hot"}, "s.temperature"),
        ({"temperature": 3}, "s.temperature"),
        ({"top_p": 0}, "s.top_p"),
        ({"top_k": -1}, "s.top_k"),
        ({"seed": -1}, "s.seed"),
        ({"stop": ""}, "s.stop"),
        ({"stop": [1]}, "s.stop"),
        ({"stop": ["x"] * 9}, "s.stop"),
    ],
)
def test_bad_sampling_parameters_name_their_key(raw, field):
    with pytest.raises(InvalidArgument) as caught:
        parse_sampling(raw, LIMITS, "s")
    assert caught.value.field == field


# request decoding ------------------------------------------------------------------------------


def test_decoding_reads_inputs_and_request_parameters():
    request = _request(b"hello", b'{"max_tokens": 3, "stop": "."}', stream=True, temperature=0.0,
                       triton_enable_empty_final_response=True)
    decoded = parse_generate_request(request, LIMITS)
    assert decoded.prompt == "hello" and decoded.stream and decoded.empty_final_response
    assert decoded.sampling == SamplingParams(max_tokens=3, temperature=0.0, stop=(".",))
    assert decoded.id == "r1"


@pytest.mark.parametrize(
    "request_, field",
    [
        (_request(b""), "inputs[text_input]"),
        (_request(b"\xff\xfe"), "inputs[text_input]"),
        (_request(b"hi", b"{not json"), "inputs[sampling_parameters]"),
        (_request(b"hi", b"[1, 2]"), "inputs[sampling_parameters]"),
        (_request(b"hi", b'{"a": 1}'), "inputs[sampling_parameters].a"),
        (_request(b"hi", b"\xc3"), "inputs[sampling_parameters]"),
        (_request(b"hi", triton_enable_empty_final_response="yes"), "parameters.triton_enable_empty_final_response"),
    ],
)
def test_bad_generation_requests_name_the_field(request_, field):
    with pytest.raises(InvalidArgument) as caught:
        parse_generate_request(request_, LIMITS)
    assert caught.value.field == field


def test_optional_inputs_may_be_left_out_but_the_prompt_may_not():
    meta = GenerativeModel.describe("m", "1")
    validate_request(_request(), meta, RequestLimits())
    with pytest.raises(InvalidArgument, match="text_input"):
        validate_request(InferRequest("m", [_bool("stream", True)]), meta, RequestLimits())


# incremental text ------------------------------------------------------------------------------

VOCAB = {1: "Hel", 2: "lo", 3: " wor", 4: "ld", 5: "!", 6: "\xe9", 7: "END", 8: "E", 9: "ND"}


def _decode(ids) -> str:
    return "".join(VOCAB[i] for i in ids)


def _utf8_decode(ids) -> str:
    # token 10 and 11 are the two bytes of "é" in UTF-8: alone, the first decodes to U+FFFD
    raw = b"".join({10: b"\xc3", 11: b"\xa9", 1: b"a"}[i] for i in ids)
    return raw.decode("utf-8", errors="replace")


def test_text_stream_emits_deltas():
    text = TextStream(_decode)
    assert [text.push(t) for t in (1, 2, 3, 4)] == ["Hel", "lo", " wor", "ld"]
    assert text.finish() == "" and text.text == "Hello world"


def test_text_stream_holds_back_an_incomplete_character():
    text = TextStream(_utf8_decode)
    assert [text.push(t) for t in (1, 10, 11)] == ["a", "", "\xe9"]


def test_stop_string_ends_the_text_before_it_even_across_tokens():
    text = TextStream(_decode, stop=("END",))
    assert text.push(1) == "Hel"
    assert text.push(8) == ""  # "E" may start "END": held back
    assert text.push(9) == "" and text.stopped
    assert text.text == "Hel"


def test_held_back_text_is_released_when_it_turns_out_not_to_stop():
    text = TextStream(_decode, stop=("Ex",))
    assert text.push(8) == ""
    assert text.push(2) == "Elo"
    text = TextStream(_decode, stop=("lo!",))
    assert text.push(1) == "He"  # "l" may start "lo!"
    assert text.push(2) == "l"  # "Hello": only "lo" may start "lo!"
    assert text.finish() == "lo" and text.text == "Hello"


# a generative model's answers ------------------------------------------------------------------


class FakeGenerator(GenerativeModel):
    """Yields the prompt's words back, one chunk each, then an empty final chunk."""

    limits = LIMITS
    variant = "fake"

    def __init__(self):
        self.metadata = GenerativeModel.describe("m", "1")
        self.closed = 0

    async def generate(self, request: GenerateRequest):
        words = request.prompt.split(" ")
        try:
            for word in words:
                yield Chunk(word + " ")
            yield Chunk("", Usage(len(words), len(words), "length"))
        finally:
            self.closed += 1


def _texts(responses) -> list[str]:
    return [bytes(r.output("text_output").data[0]).decode() for r in responses]


async def _all(iterator):
    return [item async for item in iterator]


async def test_unary_answers_the_whole_text_after_the_prompt():
    model = FakeGenerator()
    response = await model.infer(_request(b"a b"))
    assert _texts([response]) == ["a ba b "]
    assert response.parameters == {"variant": "fake", "triton_final_response": True, "prompt_tokens": 2,
                                   "completion_tokens": 2, "finish_reason": "length"}
    request = _request(b"a b")
    request.inputs.append(_bool("exclude_input_in_output", True))
    assert _texts([await model.infer(request)]) == ["a b "]


async def test_unary_refuses_a_stream_request():
    with pytest.raises(InvalidArgument, match="ModelStreamInfer") as caught:
        await FakeGenerator().infer(_request(b"a", stream=True))
    assert caught.value.field == "inputs[stream]"


async def test_stream_flags_only_the_last_response_final():
    responses = await _all(FakeGenerator().stream(_request(b"a b", stream=True)))
    assert _texts(responses) == ["a ", "b ", ""]
    assert [r.parameters["triton_final_response"] for r in responses] == [False, False, True]
    assert responses[-1].parameters["finish_reason"] == "length"


async def test_empty_final_response_comes_on_its_own():
    model = FakeGenerator()
    model_responses = await _all(model.stream(_request(b"a", stream=True, triton_enable_empty_final_response=True)))
    assert _texts(model_responses) == ["a ", ""]
    assert [r.parameters["triton_final_response"] for r in model_responses] == [False, True]


async def test_stream_false_over_a_stream_is_one_whole_response():
    (response,) = await _all(FakeGenerator().stream(_request(b"a b", stream=False)))
    assert _texts([response]) == ["a ba b "] and response.parameters["triton_final_response"]


async def test_leaving_a_stream_early_closes_the_generation():
    model = FakeGenerator()
    responses = model.stream(_request(b"a b c d", stream=True))
    await anext(responses)
    await responses.aclose()
    assert model.closed == 1


async def test_a_cancelled_consumer_closes_the_generation():
    model = FakeGenerator()
    started = asyncio.Event()

    async def consume():  # as the fronts consume: the iterator closed when the task ends
        async with contextlib.aclosing(model.stream(_request(b"a b c", stream=True))) as responses:
            async for _ in responses:
                started.set()
                await asyncio.Event().wait()  # a client that stops reading

    task = asyncio.create_task(consume())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert model.closed == 1


# the generate extension's JSON -----------------------------------------------------------------


def test_generate_json_maps_keys_to_inputs():
    request = generate_request_from_json(
        b'{"id": "7", "text_input": "hi", "stream": true, "sampling_parameters": {"max_tokens": 2},'
        b' "parameters": {"temperature": 0}}', RequestLimits(), model_name="m")
    by_name = {t.name: t for t in request.inputs}
    assert bytes(by_name["text_input"].data[0]) == b"hi"
    assert by_name["stream"].datatype == "BOOL" and bool(by_name["stream"].data[0])
    assert json.loads(bytes(by_name["sampling_parameters"].data[0])) == {"max_tokens": 2}
    assert request.parameters == {"temperature": 0} and request.id == "7"


@pytest.mark.parametrize("body", [b"[]", b'{"text_input": null}', b'{"a": 1, "a": 2}', b"\xff"])
def test_bad_generate_bodies_are_refused(body):
    with pytest.raises(InvalidArgument):
        generate_request_from_json(body, RequestLimits(), model_name="m")


async def test_generate_json_and_events_carry_text_and_parameters():
    (response,) = await _all(FakeGenerator().stream(_request(b"a", stream=False)))
    doc = json.loads(generate_response_to_json(response))
    assert doc["text_output"] == "aa " and doc["finish_reason"] == "length" and doc["model_name"] == "m"
    assert sse_event(response).startswith(b"data: {") and sse_event(response).endswith(b"\n\n")
    assert json.loads(sse_error("boom")[len(b"data: "):]) == {"error": "boom"}
