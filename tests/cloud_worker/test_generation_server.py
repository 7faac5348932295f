"""The cloud worker streams the generative model with continuous batching: the unmodified
tritonclient over gRPC (ModelStreamInfer, ModelInfer), plain HTTP server-sent events, bad input
refused by field, and clients that walk away freeing their cache slot."""

from __future__ import annotations

import asyncio
import time

import aiohttp

import pytest
import pytest_asyncio

from cloud_worker.config import CloudConfig, CloudServerSettings, GenerativeModelSpec
from cloud_worker.generation.model import TorchGenerativeModel
from cloud_worker.worker import CloudWorker
from edgecloud.generation import GenerateRequest, SamplingParams
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
async def cloud(generative_model_dir):
    config = CloudConfig(
        server=CloudServerSettings(port=0, http_port=0, metrics_port=0, grace_s=1),
        models=[GenerativeModelSpec(kind="generative", path=generative_model_dir, max_batch_size=4,
                                    context_length=1024)],
    )
    worker = CloudWorker(config)
    await worker.start()
    yield worker
    await worker.stop(0.5)


def _model(worker: CloudWorker) -> TorchGenerativeModel:
    (model,) = worker.models
    assert isinstance(model, TorchGenerativeModel)
    return model


async def _expected(worker: CloudWorker) -> str:
    request = GenerateRequest(PROMPT, SamplingParams(max_tokens=MAX_TOKENS, temperature=0.0))
    return "".join([chunk.text async for chunk in _model(worker).generate(request)])


async def test_tritonclient_streams_from_the_cloud(cloud, tritonclient_stream_check):
    expected = await _expected(cloud)
    assert expected
    seen = await asyncio.to_thread(tritonclient_stream_check, f"127.0.0.1:{cloud.port}", MODEL, PROMPT,
                                   "--max-tokens", str(MAX_TOKENS))
    check_tritonclient_streams(seen, prompt=PROMPT, expected=expected, max_tokens=MAX_TOKENS, variant="fp32")
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{cloud.metrics_port}/metrics") as response:
            exposition = await response.text()
    label = f'model="{MODEL}"'
    samples = {line.split(" ")[0]: float(line.split(" ")[1]) for line in exposition.splitlines()
               if line.startswith("edgecloud_cloud_") and label in line}
    assert samples[f"edgecloud_cloud_time_to_first_token_seconds_count{{{label}}}"] >= 8
    assert samples[f"edgecloud_cloud_generated_tokens_total{{{label}}}"] >= 8 * MAX_TOKENS // 2
    assert samples[f'edgecloud_cloud_requests_total{{{label},outcome="ok"}}'] >= 8
    assert samples[f'edgecloud_cloud_requests_total{{{label},outcome="cancelled"}}'] >= 1  # the cancelled stream
    assert samples[f"edgecloud_cloud_generation_queued{{{label}}}"] == 0


async def test_http_generate_and_server_sent_events(cloud):
    await check_http_generate(f"http://127.0.0.1:{cloud.http_port}", MODEL, prompt=PROMPT,
                              expected=await _expected(cloud), max_tokens=MAX_TOKENS)


async def test_clients_that_leave_mid_stream_free_their_slot(cloud):
    await disconnect_mid_stream(f"http://127.0.0.1:{cloud.http_port}", MODEL, PROMPT, times=20)
    model = _model(cloud)
    give_up = time.monotonic() + 30
    while (model.status.active or model.status.queued) and time.monotonic() < give_up:
        await asyncio.sleep(0.01)
    status = model.status
    assert status.active == 0 and status.queued == 0, f"a generation went on after its client left: {status}"
    assert await _expected(cloud)  # and the model still serves
