"""The edge agent's server streams the generative model: the unmodified tritonclient over gRPC
(ModelStreamInfer, ModelInfer) and plain HTTP server-sent events, with bad input refused by field
and clients that walk away stopping their generation."""

from __future__ import annotations

import asyncio
import time

import pytest
import pytest_asyncio

from edgecloud.config import ServerSettings
from edge_agent.config import EdgeConfig, ModelSettings
from edge_agent.generation import GenAIModel
from edge_agent.server import EdgeServer
from tests.support.generation_checks import (
    check_http_generate,
    check_tritonclient_streams,
    disconnect_mid_stream,
)

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

MODEL = "smollm2-135m-instruct"
PROMPT = "<|im_start|>user\nName three colours.<|im_end|>\n<|im_start|>assistant\n"
MAX_TOKENS = 12


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def edge(generative_model_dir):
    server = EdgeServer(EdgeConfig(server=ServerSettings(port=0, http_port=0, grace_s=1),
                                   models=[ModelSettings(path=generative_model_dir, intra_op_threads=2)]))
    await server.start()
    yield server
    await server.stop(0.5)


def _model(server: EdgeServer) -> GenAIModel:
    (model,) = server.agent.models
    assert isinstance(model, GenAIModel)
    return model


async def _expected(server: EdgeServer) -> str:
    chunks = [c.text async for c in server.agent.agenerate(PROMPT, max_tokens=MAX_TOKENS, temperature=0)]
    return "".join(chunks)


async def test_tritonclient_streams_from_the_edge(edge, tritonclient_stream_check):
    expected = await _expected(edge)
    assert expected
    seen = await asyncio.to_thread(tritonclient_stream_check, f"127.0.0.1:{edge.port}", MODEL, PROMPT,
                                   "--max-tokens", str(MAX_TOKENS))
    check_tritonclient_streams(seen, prompt=PROMPT, expected=expected, max_tokens=MAX_TOKENS, variant="int4")


async def test_http_generate_and_server_sent_events(edge):
    await check_http_generate(f"http://127.0.0.1:{edge.http_port}", MODEL, prompt=PROMPT,
                              expected=await _expected(edge), max_tokens=MAX_TOKENS)


async def test_clients_that_leave_mid_stream_stop_their_generation(edge):
    base = f"http://127.0.0.1:{edge.http_port}"
    await disconnect_mid_stream(base, MODEL, PROMPT, times=20)
    model = _model(edge)
    give_up = time.monotonic() + 30
    while model.running and time.monotonic() < give_up:
        await asyncio.sleep(0.01)
    assert model.running == 0, "a generation went on after its client left"
    assert await _expected(edge)  # and the model still serves
