"""The unmodified ``openai`` package (sync and async, streaming and not) against a real gateway in
front of real edge and cloud processes serving SmolLM2: chat and text completions, where-served
information, models, and OpenAI-shaped errors."""

from __future__ import annotations

import asyncio

import openai
import pytest

from edgecloud.generation import chat_template_of
from gateway.backend import CLOUD
from gateway.grpc_backend import GrpcBackend
from edgecloud.limits import RequestLimits
from edgecloud.chat_template import render
from gateway.streams.requests import response_text
from tests.gateway.streams.fake_streams import generate_request

MODEL = "smollm2-135m-instruct"
MESSAGES = [{"role": "user", "content": "Name a colour."}]


async def _direct(address: str, prompt: str, max_tokens: int) -> str:
    """The greedy text a backend produces itself for ``prompt``."""
    client = GrpcBackend("reference", CLOUD, address, limits=RequestLimits())
    request = generate_request(prompt, max_tokens=max_tokens, temperature=0)
    request.model_name = MODEL
    try:
        return "".join([response_text(r) async for r in client.stream(request, 60.0)])
    finally:
        await client.close()


@pytest.fixture
async def gateway_url(generation_edge, generation_cloud, stream_gateway):
    gw = await stream_gateway(generation_edge.address, generation_cloud.address)
    return f"http://127.0.0.1:{gw.http_port}/v1"


@pytest.fixture
async def chat_prompt(generative_model_dir):
    return render(chat_template_of(generative_model_dir / "cloud"), MESSAGES)


async def test_sync_chat_completion_with_where_served(gateway_url, generation_edge, chat_prompt):
    expected = await _direct(generation_edge.address, chat_prompt, 12)

    def call():
        client = openai.OpenAI(base_url=gateway_url, api_key="unused", max_retries=0)
        raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=MESSAGES, max_tokens=12,
                                                               temperature=0)
        return raw.headers, raw.parse()

    headers, completion = await asyncio.to_thread(call)
    assert completion.choices[0].message.content == expected
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].finish_reason in ("stop", "length")
    assert completion.usage.completion_tokens <= 12 and completion.usage.prompt_tokens > 0
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens
    assert headers["x-edgecloud-served-by"] == "edge"
    assert completion.model_extra["edgecloud"]["served_by"] == "edge"
    assert completion.id.startswith("chatcmpl-") and completion.model == MODEL


async def test_sync_streaming_chat_ends_with_done_and_says_where_served(gateway_url, generation_cloud, chat_prompt):
    expected = await _direct(generation_cloud.address, chat_prompt, 12)

    def call():
        client = openai.OpenAI(base_url=gateway_url, api_key="unused", max_retries=0)
        stream = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=12, temperature=0,
                                                stream=True, stream_options={"include_usage": True},
                                                extra_body={"quality": "cloud"})
        return list(stream)

    chunks = await asyncio.to_thread(call)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == expected
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finals) == 1 and finals[0].model_extra["edgecloud"]["served_by"] == "cloud"
    assert finals[0].model_extra["edgecloud"]["route_reason"] == "quality_cloud"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens <= 12
    assert len(chunks) > 3  # token by token, not one lump


async def test_async_completions_streaming_and_not(gateway_url, generation_edge):
    prompt = "The capital of France is"
    expected = await _direct(generation_edge.address, prompt, 8)
    client = openai.AsyncOpenAI(base_url=gateway_url, api_key="unused", max_retries=0)
    try:
        whole = await client.completions.create(model=MODEL, prompt=prompt, max_tokens=8, temperature=0)
        assert whole.choices[0].text == expected and whole.object == "text_completion"
        stream = await client.completions.create(model=MODEL, prompt=prompt, max_tokens=8, temperature=0,
                                                 stream=True)
        parts = [chunk async for chunk in stream]
        assert "".join(c.choices[0].text for c in parts) == expected
        assert parts[-1].choices[0].finish_reason in ("stop", "length")
        assert parts[-1].model_extra["edgecloud"]["served_by"] == "edge"
    finally:
        await client.close()


async def test_async_streaming_chat(gateway_url, generation_edge, chat_prompt):
    expected = await _direct(generation_edge.address, chat_prompt, 10)
    client = openai.AsyncOpenAI(base_url=gateway_url, api_key="unused", max_retries=0)
    try:
        stream = await client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=10, temperature=0,
                                                      stream=True)
        text = "".join([c.choices[0].delta.content or "" async for c in stream])
        assert text == expected
    finally:
        await client.close()


async def test_models_are_listed_and_retrieved(gateway_url):
    client = openai.AsyncOpenAI(base_url=gateway_url, api_key="unused", max_retries=0)
    try:
        models = await client.models.list()
        assert [m.id for m in models.data] == [MODEL]
        assert (await client.models.retrieve(MODEL)).id == MODEL
        with pytest.raises(openai.NotFoundError):
            await client.models.retrieve("no-such-model")
    finally:
        await client.close()


async def test_errors_are_openai_shaped_and_name_the_parameter(gateway_url):
    client = openai.AsyncOpenAI(base_url=gateway_url, api_key="unused", max_retries=0)
    try:
        with pytest.raises(openai.BadRequestError) as caught:
            await client.chat.completions.create(model=MODEL, messages=MESSAGES, temperature=5)
        assert caught.value.param == "temperature" and caught.value.type == "invalid_request_error"
        with pytest.raises(openai.NotFoundError):
            await client.chat.completions.create(model="no-such-model", messages=MESSAGES)
        with pytest.raises(openai.BadRequestError) as caught:
            await client.chat.completions.create(model=MODEL, messages=[{"role": "robot", "content": "x"}])
        assert caught.value.param == "messages[0].role"
        with pytest.raises(openai.BadRequestError) as caught:
            await client.chat.completions.create(model=MODEL, messages=MESSAGES, n=2)
        assert caught.value.param == "n"
        with pytest.raises(openai.BadRequestError) as caught:  # over the edge's context: the backend says so
            await client.completions.create(model=MODEL, prompt="word " * 9000, max_tokens=4)
        assert "context" in caught.value.message
        # and it keeps serving
        ok = await client.completions.create(model=MODEL, prompt="Hi", max_tokens=2, temperature=0)
        assert ok.choices[0].text
    finally:
        await client.close()


async def test_a_refused_api_key_is_an_openai_authentication_error(generation_edge, generation_cloud):
    from gateway.config import GatewayConfig
    from gateway.server import GatewayServer

    config = GatewayConfig.model_validate({
        "server": {"port": 0, "http_port": 0, "metrics_port": None, "grace_s": 1},
        "edge": {"address": generation_edge.address}, "cloud": {"workers": [generation_cloud.address]},
        "auth": {"enabled": True, "keys": [{"tenant": "team-a", "key": "a-key-of-sixteen-chars"}]}})
    server = GatewayServer(config)
    await server.start()
    base = f"http://127.0.0.1:{server.http_port}/v1"
    try:
        wrong = openai.AsyncOpenAI(base_url=base, api_key="not-the-right-key", max_retries=0)
        with pytest.raises(openai.AuthenticationError) as caught:
            await wrong.models.list()
        assert caught.value.type == "authentication_error"
        await wrong.close()
        right = openai.AsyncOpenAI(base_url=base, api_key="a-key-of-sixteen-chars", max_retries=0)
        answer = await right.completions.create(model=MODEL, prompt="Hi", max_tokens=2, temperature=0)
        assert answer.choices[0].text
        with pytest.raises(openai.NotFoundError):
            await right.get("/no-such-route", cast_to=dict)
        await right.close()
    finally:
        await server.stop(0.5)


@pytest.mark.parametrize("body, headers, status, param", [
    (b"{not json", {"Content-Type": "application/json"}, 400, "body"),
    (b'{"model": "m", "prompt": "\xff"}', {"Content-Type": "application/json"}, 400, "body"),
    (b'{"model": "x", "prompt": "hi"}', {"Content-Type": "text/plain"}, 415, "Content-Type"),
    (b"[1, 2]", {"Content-Type": "application/json"}, 400, "body"),
    (b'{"model": "' + MODEL.encode() + b'", "prompt": "hi", "max_tokens": "many"}',
     {"Content-Type": "application/json"}, 400, "max_tokens"),
    (b'{"model": "' + MODEL.encode() + b'", "prompt": "hi", "stop": [""]}',
     {"Content-Type": "application/json"}, 400, "stop"),
])
async def test_malformed_bodies_are_refused_by_field_and_the_gateway_keeps_serving(gateway_url, body, headers,
                                                                                    status, param):
    import aiohttp

    async with aiohttp.ClientSession() as session:
        async with session.post(f"{gateway_url}/completions", data=body, headers=headers) as response:
            doc = await response.json()
            assert response.status == status, doc
    assert doc["error"]["param"] == param and doc["error"]["message"]
    client = openai.AsyncOpenAI(base_url=gateway_url, api_key="unused", max_retries=0)
    try:
        ok = await client.completions.create(model=MODEL, prompt="Hi", max_tokens=1, temperature=0)
        assert ok.choices[0].finish_reason in ("stop", "length")
    finally:
        await client.close()
