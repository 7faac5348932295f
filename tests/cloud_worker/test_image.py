"""The image classifier in the cloud worker: real torch FP32 behind real gRPC on port 0, uploads
decoded off the event loop, concurrent requests batched, a bad image refused alone."""

from __future__ import annotations

import asyncio

import grpc
import numpy as np
import pytest

from cloud_worker.config import ImageModelSpec, RuntimeSettings
from edgecloud.codec import serialize_bytes
from edgecloud.images import decode_image
from protos import inference_pb2 as pb
from tests.support.cloud_fakes import KeepLoaded

MODEL = "efficientnet-lite0"
CATS = {"tabby", "tiger cat", "Egyptian cat"}


@pytest.fixture(scope="module")
def image_runtime():
    from cloud_worker.image import ImageRuntime

    runtime = ImageRuntime(ImageModelSpec(kind="image"), RuntimeSettings(device="cpu", intra_op_threads=2))
    runtime.load()
    yield runtime
    runtime.close()


class Counting(KeepLoaded):
    """The shared runtime, recording how many requests each model call merged."""

    def __init__(self, runtime):
        super().__init__(runtime)
        self.merged: list[int] = []

    def run(self, items):
        self.merged.append(len(items))
        return super().run(items)


@pytest.fixture
async def image_worker(start_worker, image_runtime):
    runtime = Counting(image_runtime)
    worker = await start_worker(runtimes=[runtime], batching={"max_queue_delay_us": 20_000})
    worker.counting = runtime
    return worker


def encoded_request(images: list[bytes], k: int = 0) -> pb.ModelInferRequest:
    msg = pb.ModelInferRequest(model_name=MODEL)
    msg.inputs.add(name="image", datatype="BYTES", shape=[len(images)])
    msg.raw_input_contents.append(serialize_bytes(images))
    if k:
        msg.outputs.add(name="probabilities").parameters["classification"].int64_param = k
    return msg


def pixel_request(pixels: np.ndarray) -> pb.ModelInferRequest:
    msg = pb.ModelInferRequest(model_name=MODEL)
    msg.inputs.add(name="image", datatype="UINT8", shape=list(pixels.shape))
    msg.raw_input_contents.append(pixels.tobytes())
    return msg


def probabilities_of(response: pb.ModelInferResponse) -> np.ndarray:
    return np.frombuffer(response.raw_output_contents[0], "<f4").reshape(list(response.outputs[0].shape))


async def test_photos_are_classified_with_labels(image_worker, connect, sample_photos):
    stub = connect(image_worker)
    response = await stub.ModelInfer(encoded_request([sample_photos["cat"], sample_photos["coffee"]], k=2))
    assert response.parameters["variant"].string_param == "fp32"
    assert list(response.outputs[0].shape) == [2, 2]
    classes = _strings(response)
    assert classes[0][0].split(":")[2] in CATS and classes[1][0].endswith(":967:espresso")
    assert {row[0].split(":")[2] for row in classes[:1]} | {classes[0][1].split(":")[2]} <= CATS
    assert float(classes[1][0].split(":")[0]) > 0.9


def _strings(response: pb.ModelInferResponse) -> list[list[str]]:
    from edgecloud.codec import deserialize_bytes

    width = response.outputs[0].shape[-1]
    count = width * response.outputs[0].shape[0]
    items = [bytes(item).decode() for item in deserialize_bytes(response.raw_output_contents[0], count, "out")]
    return [items[i:i + width] for i in range(0, len(items), width)]


async def test_pixels_and_uploads_agree_and_concurrent_requests_batch(image_worker, connect, sample_photos):
    stub = connect(image_worker)
    photos = list(sample_photos.values())
    pixels = np.stack([decode_image(photo, "image") for photo in photos])
    alone = [probabilities_of(await stub.ModelInfer(pixel_request(pixels[i:i + 1]))) for i in range(len(photos))]
    together = await asyncio.gather(*(stub.ModelInfer(encoded_request([photo])) for photo in photos))
    for one, batched in zip(alone, together):
        np.testing.assert_allclose(probabilities_of(batched), one, atol=1e-4)
    assert max(image_worker.counting.merged) > 1  # the concurrent uploads shared model calls


async def test_a_bad_image_is_refused_alone_and_the_worker_keeps_serving(image_worker, connect, sample_photos):
    stub = connect(image_worker)
    good = stub.ModelInfer(encoded_request([sample_photos["coffee"]]))
    bad = stub.ModelInfer(encoded_request([sample_photos["coffee"][:200]]))
    results = await asyncio.gather(good, bad, return_exceptions=True)
    assert probabilities_of(results[0]).argmax() == 967
    assert isinstance(results[1], grpc.aio.AioRpcError)
    assert results[1].code() is grpc.StatusCode.INVALID_ARGUMENT and "inputs[image][0]" in results[1].details()
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.ModelInfer(pixel_request(np.zeros((1, 224, 224, 4), np.uint8)))
    assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT and "inputs[image].shape" in raised.value.details()
    assert probabilities_of(await stub.ModelInfer(encoded_request([sample_photos["coffee"]]))).argmax() == 967
