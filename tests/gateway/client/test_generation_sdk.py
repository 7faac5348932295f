"""The SDK's token streams against a real gateway (real edge and cloud processes serving SmolLM2):
``Client.generate`` / ``Client.chat`` (blocking) and ``AsyncClient.generate`` / ``chat`` (asyncio),
where-served information on the chunks, typed errors, and leaving early."""

from __future__ import annotations

import asyncio

import pytest

from edgecloud.generation import chat_template_of
from gateway.client import AsyncClient, Client, InvalidArgument, NotFound
from edgecloud.chat_template import render

MODEL = "smollm2-135m-instruct"
MESSAGES = [{"role": "user", "content": "Name a fruit."}]


@pytest.fixture
async def gateway_address(generation_edge, generation_cloud, stream_gateway):
    gw = await stream_gateway(generation_edge.address, generation_cloud.address)
    return f"127.0.0.1:{gw.grpc_port}"


async def test_blocking_generate_and_chat(gateway_address, generative_model_dir):
    def run():
        with Client(gateway_address) as client:
            chunks = list(client.generate(MODEL, "The sky is", max_tokens=8, temperature=0))
            chat = list(client.chat(MODEL, MESSAGES, max_tokens=8, temperature=0))
            rendered = render(chat_template_of(generative_model_dir / "cloud"), MESSAGES)
            same = list(client.generate(MODEL, rendered, max_tokens=8, temperature=0))
            return chunks, chat, same

    chunks, chat, same = await asyncio.to_thread(run)
    assert len(chunks) > 2 and chunks[-1].final and not any(c.final for c in chunks[:-1])
    assert chunks[0].served_by == "edge" and chunks[-1].served_by == "edge"
    assert chunks[-1].completion_tokens <= 8 and chunks[-1].finish_reason in ("stop", "length")
    assert "".join(c.text for c in chat) == "".join(c.text for c in same) != ""


async def test_async_generate_chat_errors_and_leaving_early(gateway_address):
    async with AsyncClient(gateway_address) as client:
        text = "".join([c.text async for c in client.chat(MODEL, MESSAGES, max_tokens=6, temperature=0,
                                                           parameters={"quality": "cloud"})])
        assert text
        last = [c async for c in client.generate(MODEL, "Hi", max_tokens=3, temperature=0,
                                                 parameters={"quality": "cloud"})][-1]
        assert last.served_by == "cloud" and last.route_reason == "quality_cloud"
        with pytest.raises(InvalidArgument) as caught:
            [c async for c in client.generate(MODEL, "Hi", temperature=7)]
        assert "temperature" in caught.value.message
        with pytest.raises(NotFound):
            [c async for c in client.generate("no-such-model", "Hi")]
        stream = client.generate(MODEL, "Count to one hundred:", max_tokens=200, temperature=0)
        async for chunk in stream:
            break
        await stream.aclose()
        again = [c async for c in client.generate(MODEL, "Hi", max_tokens=2, temperature=0)]
        assert again[-1].final


async def _run_example(*args: str) -> tuple[int, str, str]:
    from pathlib import Path
    import sys

    examples = Path(__file__).resolve().parents[3] / "examples"
    proc = await asyncio.create_subprocess_exec(sys.executable, str(examples / args[0]), *args[1:],
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                                                cwd=examples.parent)
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    return proc.returncode, out.decode(), err.decode()


async def test_the_streaming_examples_run_against_the_gateway(generation_edge, generation_cloud, stream_gateway):
    gw = await stream_gateway(generation_edge.address, generation_cloud.address)
    code, out, err = await _run_example("chat_stream.py", "--address", f"127.0.0.1:{gw.grpc_port}",
                                        "--max-tokens", "8")
    assert code == 0, err[-3000:]
    assert "served by edge (edge_fast)" in out and "first token after" in out
    code, out, err = await _run_example("openai_chat.py", "--base-url", f"http://127.0.0.1:{gw.http_port}/v1",
                                        "--max-tokens", "8")
    assert code == 0, err[-3000:]
    assert "served by edge (edge_fast)" in out
