"""Bad input over real gRPC: the right status naming the field, the model never runs, the server
keeps serving; and one client's falsified request never changes a batch-mate's answer."""

from __future__ import annotations

import asyncio
import struct

import grpc
import numpy as np
import pytest

from tests.support.cloud_fakes import Gated, embedding_of, text_request
from edgecloud.codec import serialize_bytes
from protos import inference_pb2 as pb

MODEL = "all-MiniLM-L6-v2"
MAX_MESSAGE = 256 * 1024
MAX_ELEMENT = 64 * 1024
MAX_BATCH = 64
INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED


@pytest.fixture
async def worker(start_worker, reference_runtime):
    gated = Gated(reference_runtime)
    return await start_worker(
        runtimes=[gated],
        server={"max_message_bytes": MAX_MESSAGE},
        limits={"max_batch_size": MAX_BATCH, "max_bytes_element": MAX_ELEMENT},
        batching={"max_queue_delay_us": 1000},
    )


def raw(datatype: str, shape, data: bytes, name: str = "text", model: str = MODEL) -> pb.ModelInferRequest:
    msg = pb.ModelInferRequest(model_name=model)
    msg.inputs.add(name=name, datatype=datatype, shape=shape)
    msg.raw_input_contents.append(data)
    return msg


def typed(items: list[bytes], shape) -> pb.ModelInferRequest:
    msg = pb.ModelInferRequest(model_name=MODEL)
    msg.inputs.add(name="text", datatype="BYTES", shape=shape).contents.bytes_contents.extend(items)
    return msg


def with_extra_input() -> pb.ModelInferRequest:
    msg = text_request(["fine"])
    msg.inputs.add(name="extra", datatype="BYTES", shape=[1])
    msg.raw_input_contents.append(serialize_bytes([b"x"]))
    return msg


def mixed_raw_and_typed() -> pb.ModelInferRequest:
    msg = typed([b"a"], [1])
    msg.inputs.add(name="extra", datatype="BYTES", shape=[1])
    msg.raw_input_contents.append(serialize_bytes([b"x"]))
    return msg


def unknown_output() -> pb.ModelInferRequest:
    msg = text_request(["fine"])
    msg.outputs.add(name="nope")
    return msg


def no_inputs() -> pb.ModelInferRequest:
    return pb.ModelInferRequest(model_name=MODEL)


CASES = {
    "wrong dtype": (lambda: raw("FP32", [1], b"\0\0\0\0"), INVALID, "inputs[text].datatype"),
    "unknown dtype": (lambda: raw("STRING", [1], b""), INVALID, "inputs[text].datatype"),
    "wrong rank": (lambda: text_request(["a"], shape=[1, 1]), INVALID, "inputs[text].shape"),
    "element past the end": (lambda: raw("BYTES", [1], struct.pack("<I", 99) + b"abc"), INVALID, "inputs[text]"),
    "bytes beyond the shape": (lambda: raw("BYTES", [1], serialize_bytes([b"a", b"b"])), INVALID, "inputs[text]"),
    "element count vs shape": (lambda: typed([b"a", b"b"], [3]), INVALID, "inputs[text]"),
    "missing input": (lambda: raw("BYTES", [1], serialize_bytes([b"a"]), name="txt"), INVALID, "inputs"),
    "extra input": (with_extra_input, INVALID, "inputs[extra]"),
    "no inputs": (no_inputs, INVALID, "inputs"),
    "raw and typed mixed": (mixed_raw_and_typed, INVALID, "raw_input_contents"),
    "unknown output": (unknown_output, INVALID, "outputs[nope]"),
    "empty model name": (lambda: text_request(["a"], model=""), INVALID, "model_name"),
    "unknown model": (lambda: text_request(["a"], model="nope"), NOT_FOUND, "model_name"),
    "unknown version": (lambda: text_request(["a"], version="7"), NOT_FOUND, "model_version"),
    "empty batch": (lambda: text_request([]), INVALID, "inputs[text].shape"),
    "invalid utf-8": (lambda: text_request([b"fine", b"\xff\xfe bad"]), INVALID, "inputs[text]"),
    "negative dim": (lambda: text_request(["a"], shape=[-1]), INVALID, "inputs[text].shape"),
    "huge dim": (lambda: text_request(["a"], shape=[2**40]), EXHAUSTED, "inputs[text].shape"),
    "huge element count": (lambda: text_request(["a"], shape=[2**12, 2**12, 2]), EXHAUSTED, "inputs[text].shape"),
    "batch over limit": (lambda: text_request(["a"] * (MAX_BATCH + 1)), INVALID, "inputs[text].shape"),
    "element over limit": (lambda: text_request([b"a" * (MAX_ELEMENT + 1)]), EXHAUSTED, "inputs[text]"),
    "oversize message": (lambda: text_request([b"a" * 60_000] * 5), EXHAUSTED, None),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_bad_input_is_refused_without_running_the_model(worker, connect, case):
    build, code, field = CASES[case]
    stub = connect(worker)
    runtime = worker.models[0].runtime
    before = len(runtime.batches)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.ModelInfer(build(), timeout=30)
    assert info.value.code() == code, info.value.details()
    if field is not None:
        assert info.value.details().startswith(f"{field}:"), info.value.details()
    assert len(runtime.batches) == before, "the model ran for a bad request"
    still = await stub.ModelInfer(text_request(["still serving"]), timeout=30)
    assert embedding_of(still).shape == (1, 384)


async def test_a_falsified_batch_mate_never_changes_another_client_s_answer(worker, connect, reference_runtime):
    """Two clients in one batch while others send lies: each good answer equals its solo answer."""
    stub = connect(worker)
    runtime: Gated = worker.models[0].runtime
    good = ["the first honest client", "a second honest client with a longer sentence than the first one"]
    solo = [await asyncio.to_thread(reference_runtime.embed, [text]) for text in good]

    runtime.hold()
    blocker = asyncio.ensure_future(stub.ModelInfer(text_request(["keeps the model busy"])))
    assert await asyncio.to_thread(runtime.running.wait, 10)
    honest = [asyncio.ensure_future(stub.ModelInfer(text_request([text]), timeout=30)) for text in good]
    lies = [
        raw("BYTES", [3], serialize_bytes([b"only", b"two"])),  # shape says 3 elements
        raw("BYTES", [1], struct.pack("<I", 10_000) + b"short"),  # length prefix past the end
        text_request([b"\xc3\x28 invalid utf-8"]),  # decodes only per request, before queueing
        text_request(["a", "b"], shape=[1, 2]),  # shape the model does not take
    ]
    outcomes = await asyncio.gather(*(stub.ModelInfer(lie, timeout=30) for lie in lies), return_exceptions=True)
    assert all(isinstance(o, grpc.aio.AioRpcError) and o.code() == INVALID for o in outcomes), outcomes
    batcher = worker.models[0].batcher
    async with asyncio.timeout(10):
        while batcher.queued < 2:
            await asyncio.sleep(0.005)
    runtime.release()
    await blocker
    answers = [embedding_of(await call) for call in honest]
    assert sorted(runtime.batches[-1]) == [[good[1]], [good[0]]], "the honest clients did not share one batch"
    for answer, expected in zip(answers, solo):
        np.testing.assert_allclose(answer, expected, atol=1e-5)
