"""Images through the gateway, every part real: an edge process (onnxruntime INT8), a cloud worker
process (torch FP32), a redis-server of the tests' own, the SDK and the unmodified tritonclient.
A confident photo is answered on the edge; an unsure one is escalated to the cloud, says so, and is
cached with cloud provenance; with the cloud gone, the edge's unsure answer comes back marked."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from edgecloud_tools.stack import cloud_config, edge_config, free_port, launch, wait_ready
from gateway.client import AsyncClient, Client
from gateway.server import GatewayServer
from tests.gateway.conftest import in_process_gateway_config

MODEL = "efficientnet-lite0"


@pytest.fixture(scope="module")
def image_edge(model_dir, image_model_dir, tmp_path_factory):
    service = launch("edge", edge_config(model_dir, free_port(), threads=1, image_model_dir=image_model_dir),
                     tmp_path_factory.mktemp("image-edge"), name="image-edge")
    try:
        wait_ready(service, 120)
        yield service
    finally:
        service.stop()


@pytest.fixture(scope="module")
def image_cloud(tmp_path_factory):
    service = launch("cloud", cloud_config(free_port(), threads=1, image=True), tmp_path_factory.mktemp("image-cloud"),
                     name="image-cloud")
    try:
        wait_ready(service, 180)
        yield service
    finally:
        service.stop()


@pytest.fixture
async def image_gateway():
    servers = []

    async def start(edge: str, worker: str, *, cache: dict | None = None, **escalation) -> GatewayServer:
        rule = {"min_confidence": 0.5, **escalation}
        config = in_process_gateway_config(edge, [worker], cloud={"attempt_timeout_ms": 30_000}, cache=cache,
                                           http=True, escalation={MODEL: rule})
        server = GatewayServer(config)
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop(0.5)


def _edge_top1(edge_address: str, photo: bytes) -> float:  # the edge is another process: a blocking call is fine
    with Client(edge_address) as client:
        return client.classify([photo], top_k=1).top[0].score


async def test_confident_photos_stay_on_the_edge_and_unsure_ones_go_to_the_cloud(
        image_edge, image_cloud, image_gateway, sample_photos, stream_redis):
    coffee, astronaut = sample_photos["coffee"], sample_photos["astronaut"]
    assert _edge_top1(image_edge.address, coffee) >= 0.5 > _edge_top1(image_edge.address, astronaut)
    gw = await image_gateway(image_edge.address, image_cloud.address, cache={"enabled": True,
                                                                            "redis": {"url": stream_redis}})
    async with AsyncClient(f"127.0.0.1:{gw.port}") as client:
        sure = await client.classify([coffee], top_k=3)
        assert (sure.served_by, sure.route_reason, sure.variant) == ("edge", "edge_fast", "int8")
        assert sure.top[0].label == "espresso" and len(sure.classes[0]) == 3
        unsure = await client.classify([astronaut], top_k=1)
        assert (unsure.served_by, unsure.route_reason, unsure.variant) == ("cloud", "low_confidence", "fp32")
        assert len(unsure.classes[0]) == 1
        with Client(image_cloud.address) as cloud:
            assert unsure.top[0] == cloud.classify([astronaut], top_k=1).top[0]
        again = await client.classify([astronaut], top_k=1)
        assert (again.served_by, again.parameters.get("cache_source")) == ("cache", "cloud")
        assert again.top[0] == unsure.top[0]
    escalated = gw.dataplane.metrics.escalations.labels("escalated")._value.get()
    assert escalated == 1


async def test_tritonclient_over_http_and_grpc_through_the_gateway(
        image_edge, image_cloud, image_gateway, sample_photos, tritonclient_image_check):
    gw = await image_gateway(image_edge.address, image_cloud.address)
    for protocol, port in (("http", gw.http_port), ("grpc", gw.port)):
        seen = await asyncio.to_thread(tritonclient_image_check, protocol, f"127.0.0.1:{port}", MODEL,
                                       sample_photos["astronaut"], class_count=2)  # the gateway runs on this loop
        assert len(seen["encoded"][0]) == 2 and seen["probabilities_shape"] == [1, 1000]
        assert seen["encoded_parameters"]["route_reason"] == "low_confidence"
        assert seen["encoded_parameters"]["served_by"] == "cloud"
        assert seen["encoded"] == seen["pixels"]


async def test_with_the_cloud_gone_the_unsure_edge_answer_comes_back_marked(
        image_edge, image_gateway, sample_photos):
    gw = await image_gateway(image_edge.address, f"127.0.0.1:{free_port()}")  # nothing listens there
    async with AsyncClient(f"127.0.0.1:{gw.port}") as client:
        answer = await client.classify(np.stack([_pixels(sample_photos["astronaut"])]), top_k=2)
    assert (answer.served_by, answer.route_reason) == ("edge", "low_confidence_kept")
    assert answer.parameters["escalation"].startswith("kept: ")


def _pixels(photo: bytes) -> np.ndarray:
    from edgecloud.images import decode_image

    return decode_image(photo, "image")


async def test_the_example_classifies_the_bundled_photos_through_the_gateway(image_edge, image_cloud, image_gateway):
    import subprocess
    import sys

    from tests.conftest import REPO_ROOT

    gw = await image_gateway(image_edge.address, image_cloud.address)
    proc = await asyncio.to_thread(subprocess.run, [sys.executable, "examples/classify.py", "--address",
                                                    f"127.0.0.1:{gw.port}"],
                                   capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("chelsea.png") and "coffee.png" in lines[2] and "espresso" in lines[2]
    assert "served by edge (edge_fast, int8)" in lines[3]
    assert "served by cloud (low_confidence, fp32)" in lines[5]  # the astronaut


async def test_bad_images_are_refused_by_field_on_both_paths_and_everything_keeps_serving(
        image_edge, image_cloud, image_gateway, sample_photos):
    from edgecloud.errors import InferenceError
    from gateway.client import RetryPolicy
    from tests.hostile.bad_images import bad_images

    gw = await image_gateway(image_edge.address, image_cloud.address)
    async with AsyncClient(f"127.0.0.1:{gw.port}", retry=RetryPolicy(max_attempts=1)) as client:
        for name, (images, kind) in bad_images().items():
            for quality in ("auto", "cloud"):
                with pytest.raises(InferenceError) as raised:
                    await client.classify(images, parameters={"quality": quality})
                assert raised.value.kind.value == kind, (name, quality, raised.value)
                assert "inputs[image]" in str(raised.value), (name, quality, raised.value)
        for quality in ("auto", "cloud"):
            answer = await client.classify([sample_photos["coffee"]], parameters={"quality": quality})
            assert answer.top[0].label == "espresso"


async def test_the_readme_curl_body_classifies_through_the_gateway_http_front(
        image_edge, image_cloud, image_gateway, sample_photos):
    """The body the README's curl recipe builds (the binary data extension: JSON header, then the
    BYTES element as a 4-byte little-endian length and the file's bytes)."""
    import json
    import struct

    import aiohttp

    gw = await image_gateway(image_edge.address, image_cloud.address)
    image = sample_photos["coffee"]
    header = json.dumps({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES",
                                     "parameters": {"binary_data_size": len(image) + 4}}],
                         "outputs": [{"name": "probabilities", "parameters": {"classification": 3}}]}).encode()
    async with aiohttp.ClientSession() as session:
        async with session.post(f"http://127.0.0.1:{gw.http_port}/v2/models/{MODEL}/infer",
                                data=header + struct.pack("<I", len(image)) + image,
                                headers={"Inference-Header-Content-Length": str(len(header)),
                                         "Content-Type": "application/octet-stream"}) as response:
            assert response.status == 200, await response.text()
            answer = await response.json()
            assert response.headers["X-Edgecloud-Served-By"] == "edge"
    classes = answer["outputs"][0]["data"]
    assert answer["outputs"][0]["shape"] == [1, 3] and classes[0].endswith(":967:espresso")
