"""The image classifier on the edge, real onnxruntime INT8 in process and behind the real gRPC
server: photos classified from bytes, files and prepared pixels; bad images refused by field
without touching the model; the unmodified tritonclient's classification extension."""

from __future__ import annotations

import asyncio
import io

import grpc
import numpy as np
import pytest

from edgecloud.codec import serialize_bytes
from edgecloud.config import ServerSettings
from edgecloud.errors import InvalidArgument, ResourceExhausted
from edgecloud.images import decode_image
from edge_agent.agent import EdgeAgent
from edge_agent.config import EdgeConfig, ModelSettings
from edge_agent.server import EdgeServer
from protos import inference_pb2 as pb
from protos import inference_pb2_grpc as pb_grpc

MODEL = "efficientnet-lite0"
CATS = {"tabby", "tiger cat", "Egyptian cat"}


@pytest.fixture(scope="module")
def agent(image_model_dir):
    with EdgeAgent.from_model_dir(image_model_dir, threads=1) as agent:
        yield agent


def top1(agent, probabilities: np.ndarray) -> list[str]:
    labels = agent.labels(MODEL)
    return [labels[i] for i in probabilities.argmax(axis=1)]


def test_photos_are_classified_from_bytes_files_and_pixels(agent, sample_photos, tmp_path):
    cat, coffee = sample_photos["cat"], sample_photos["coffee"]
    probabilities = agent.classify([cat, coffee])
    assert probabilities.shape == (2, 1000) and probabilities.dtype == np.float32
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-3)
    assert top1(agent, probabilities)[0] in CATS and top1(agent, probabilities)[1] == "espresso"
    path = tmp_path / "cat.png"
    path.write_bytes(cat)
    from_file = agent.classify(str(path))
    pixels = decode_image(cat, "image")
    from_pixels = agent.classify(pixels)
    assert np.allclose(from_file, probabilities[:1]) and np.allclose(from_pixels, probabilities[:1], atol=1e-6)


async def test_the_async_agent_classifies_too(agent, sample_photos):
    probabilities = await agent.aclassify([sample_photos["coffee"]])
    assert top1(agent, probabilities) == ["espresso"]


def _png(mode: str, size=(64, 48)) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new(mode, size, 128 if mode in ("L", "I;16") else None).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("data, error, words", [
    (b"not an image at all", InvalidArgument, "not a JPEG, PNG or WebP"),
    (b"", InvalidArgument, "empty"),
    ("truncated", InvalidArgument, "truncated or corrupt"),
    ("bomb", ResourceExhausted, "pixels than the limit"),
])
def test_bad_images_are_refused_by_field_and_the_agent_keeps_serving(agent, sample_photos, data, error, words):
    if data == "truncated":
        data = sample_photos["coffee"][: len(sample_photos["coffee"]) // 3]
    elif data == "bomb":
        data = _bomb_png(30_000, 30_000)
    with pytest.raises(error) as raised:
        agent.classify([sample_photos["cat"], data])
    assert raised.value.field == "inputs[image][1]" and words in raised.value.message
    assert top1(agent, agent.classify([sample_photos["cat"]]))[0] in CATS


def _bomb_png(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares ``width`` × ``height`` pixels (a decompression bomb)."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + \
        chunk(b"IEND", b"")


def test_wrong_pixel_shapes_and_types_are_refused_by_field(agent):
    with pytest.raises(InvalidArgument) as raised:
        agent.infer_sync(_request(np.zeros((1, 100, 100, 3), np.uint8)))
    assert raised.value.field == "inputs[image].shape" and "[-1, 224, 224, 3]" in raised.value.message
    with pytest.raises(InvalidArgument) as raised:
        agent.infer_sync(_request(np.zeros((1, 224, 224, 3), np.float32)))
    assert raised.value.field == "inputs[image].datatype" and "UINT8" in raised.value.message


def _request(array: np.ndarray):
    from edgecloud.datatypes import datatype_of
    from edgecloud.types import InferRequest, Tensor

    return InferRequest(MODEL, [Tensor("image", datatype_of(array), array.shape, array)])


@pytest.mark.parametrize("mode", ["L", "RGBA", "I;16", "P"])
def test_grayscale_alpha_16_bit_and_palette_images_are_converted(agent, mode):
    probabilities = agent.classify([_png(mode)])
    assert probabilities.shape == (1, 1000) and np.isfinite(probabilities).all()


@pytest.fixture
async def edge_server(image_model_dir):
    server = EdgeServer(EdgeConfig(server=ServerSettings(port=0, grace_s=1),
                                   models=[ModelSettings(path=image_model_dir, intra_op_threads=1)]))
    port = await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    yield port, pb_grpc.GRPCInferenceServiceStub(channel)
    await channel.close()
    await server.stop(0.5)


async def test_the_server_advertises_both_input_forms_and_answers_top_classes(edge_server, sample_photos):
    _, stub = edge_server
    meta = await stub.ModelMetadata(pb.ModelMetadataRequest(name=MODEL))
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [("image", "BYTES", [-1])]
    assert "UINT8" in meta.parameters["input_alternatives"].string_param
    request = pb.ModelInferRequest(model_name=MODEL)
    request.inputs.add(name="image", datatype="BYTES", shape=[2])
    request.raw_input_contents.append(serialize_bytes([sample_photos["cat"], sample_photos["coffee"]]))
    request.outputs.add(name="probabilities").parameters["classification"].int64_param = 3
    response = await stub.ModelInfer(request)
    assert list(response.outputs[0].shape) == [2, 3] and response.parameters["variant"].string_param == "int8"
    bad = pb.ModelInferRequest(model_name=MODEL)
    bad.inputs.add(name="image", datatype="BYTES", shape=[1])
    bad.raw_input_contents.append(serialize_bytes([b"\x89PNG\r\n\x1a\nbroken"]))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.ModelInfer(bad)
    assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT and "inputs[image][0]" in raised.value.details()
    assert (await stub.ModelInfer(request)).outputs[0].shape == [2, 3]


async def test_tritonclient_classifies_with_class_count(edge_server, sample_photos, tritonclient_image_check):
    port, _ = edge_server
    seen = await asyncio.to_thread(tritonclient_image_check, "grpc", f"127.0.0.1:{port}", MODEL,
                                   sample_photos["coffee"], class_count=3)  # the server runs on this loop
    assert seen["encoded"][0][0].split(":")[2] == "espresso" and len(seen["encoded"][0]) == 3
    assert seen["pixels"][0][0].split(":")[2] == "espresso"
