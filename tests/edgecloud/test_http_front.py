"""The REST front, real on port 0 over the real edge dataplane: health, metadata, JSON and binary
infer, every bad-input class (the model never runs, the server keeps serving), body limits,
metrics, graceful stop, and the unmodified tritonclient over HTTP."""

from __future__ import annotations

import asyncio
import json
import logging
import time

import aiohttp
import numpy as np
import pytest
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest

from edge_agent.agent import EdgeAgent
from edgecloud import json_codec as jc
from edgecloud.codec import bytes_array, serialize_bytes
from edgecloud.errors import Unavailable
from edgecloud.http_front import TIMEOUT_HEADER, RestFront
from edgecloud.types import InferRequest, InferResponse, RequestedOutput, Tensor

MODEL = "all-MiniLM-L6-v2"
SMALL_BODY = 64 * 1024


@pytest.fixture(scope="module")
def loaded_agent(model_dir):
    """One INT8 edge agent (one onnxruntime thread) for the module; loading takes a while."""
    with EdgeAgent.from_model_dir(model_dir, threads=1) as agent:
        yield agent


@pytest.fixture
def agent(loaded_agent):
    yield loaded_agent
    loaded_agent.dataplane.set_ready(True)  # a test may have marked it not ready


@pytest.fixture
def model_calls(agent, monkeypatch) -> list[InferRequest]:
    """Every request that reached the model itself (after the dataplane's validation)."""
    calls: list[InferRequest] = []
    model = agent.models[0]
    real = model.infer

    async def counting(request):
        calls.append(request)
        return await real(request)

    monkeypatch.setattr(model, "infer", counting)
    return calls


@pytest.fixture
async def serve():
    """Start ``RestFront``s on port 0; each is stopped at teardown."""
    fronts: list[RestFront] = []

    async def start(dataplane, **kwargs) -> str:
        front = RestFront(dataplane, **kwargs)
        fronts.append(front)
        port = await front.start()
        assert port == front.port and port > 0
        return f"http://127.0.0.1:{port}"

    yield start
    for front in fronts:
        await front.stop(0.5)


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def url(agent, serve):
    return await serve(agent.dataplane, max_body_bytes=SMALL_BODY)


def text_body(texts: list[str], **top) -> bytes:
    return json.dumps({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [len(texts)], "data": texts}],
                       **top}).encode()


async def post(http, url, body: bytes, headers=None, path=f"/v2/models/{MODEL}/infer"):
    async with http.post(url + path, data=body, headers=headers or {"Content-Type": "application/json"}) as reply:
        return reply.status, dict(reply.headers), await reply.read()


# ---------------------------------------------------------------------------------------------
# protocol


def test_public_names():
    from edgecloud import http_front

    assert http_front.__all__ == sorted(http_front.__all__)
    assert all(hasattr(http_front, name) for name in http_front.__all__)


async def test_health_and_metadata(http, url):
    for path in ("/v2/health/live", "/v2/health/ready", f"/v2/models/{MODEL}/ready",
                 f"/v2/models/{MODEL}/versions/1/ready"):
        async with http.get(url + path) as reply:
            assert reply.status == 200, path
    async with http.get(url + "/v2") as reply:
        assert reply.content_type == "application/json"
        server = await reply.json()
    assert server["name"] == "edgecloud-edge" and server["version"] and isinstance(server["extensions"], list)
    for path in (f"/v2/models/{MODEL}", f"/v2/models/{MODEL}/versions/1"):
        async with http.get(url + path) as reply:
            meta = await reply.json()
        assert meta["name"] == MODEL and meta["versions"] == ["1"]
        assert meta["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
        assert meta["outputs"] == [{"name": "embedding", "datatype": "FP32", "shape": [-1, 384]}]
    for path in ("/v2/models/nope", "/v2/models/nope/ready", f"/v2/models/{MODEL}/versions/9"):
        async with http.get(url + path) as reply:
            assert reply.status == 404, path
            assert "model" in (await reply.json())["error"]


async def test_not_ready_is_503(http, agent, url):
    agent.dataplane.set_ready(False)
    for path in ("/v2/health/ready", f"/v2/models/{MODEL}/ready"):
        async with http.get(url + path) as reply:
            assert reply.status == 503
    async with http.get(url + "/v2/health/live") as reply:
        assert reply.status == 200


async def test_json_infer(http, agent, url, model_calls):
    texts = ["hello", "wörld"]
    status, headers, body = await post(http, url, text_body(texts, id="j1", model_name="ignored"))
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert jc.HEADER_LENGTH not in headers
    answer = json.loads(body)
    assert (answer["model_name"], answer["model_version"], answer["id"]) == (MODEL, "1", "j1")
    assert answer["parameters"]["variant"] == "int8"
    [output] = answer["outputs"]
    assert (output["name"], output["datatype"], output["shape"]) == ("embedding", "FP32", [2, 384])
    assert len(model_calls) == 1 and model_calls[0].model_name == MODEL and model_calls[0].deadline is None
    np.testing.assert_allclose(np.array(output["data"]).reshape(2, 384), await agent.aembed(texts), atol=1e-6)


@pytest.mark.parametrize("content_type", [None, "application/octet-stream"])
async def test_binary_infer_both_ways(http, agent, url, content_type):
    texts = ["binary in", "binary out", ""]
    data = bytes_array(texts)
    request = InferRequest(MODEL, [Tensor("text", "BYTES", data.shape, data)], id="b1",
                           outputs=[RequestedOutput("embedding", {"binary_data": True})])
    body, header_length = jc.request_to_json(request, binary_inputs=True)
    headers = {jc.HEADER_LENGTH: str(header_length)}
    if content_type:
        headers["Content-Type"] = content_type
    status, reply_headers, reply = await post(http, url, body, headers, path=f"/v2/models/{MODEL}/versions/1/infer")
    assert status == 200 and reply_headers["Content-Type"] == "application/octet-stream"
    length = int(reply_headers[jc.HEADER_LENGTH])
    assert json.loads(reply[:length])["outputs"][0]["parameters"]["binary_data_size"] == 3 * 384 * 4
    response = jc.response_from_json(reply, length)
    assert response.id == "b1" and response.output("embedding").shape == (3, 384)
    np.testing.assert_allclose(response.output("embedding").data, await agent.aembed(texts), atol=1e-6)


async def test_binary_data_output_request_parameter(http, url):
    status, headers, body = await post(http, url, text_body(["x"], parameters={"binary_data_output": True}))
    assert status == 200 and jc.HEADER_LENGTH in headers
    assert jc.response_from_json(body, int(headers[jc.HEADER_LENGTH])).output("embedding").data.dtype == np.float32


async def test_response_headers_and_deadline_header(http, agent, serve, model_calls):
    def where(response: InferResponse) -> dict[str, str]:
        return {"X-Served-By": f"edge/{response.parameters['variant']}"}

    url = await serve(agent.dataplane, response_headers=where)
    before = time.monotonic()
    status, headers, _ = await post(http, url, text_body(["x"]),
                                    {"Content-Type": "application/json", TIMEOUT_HEADER: "5000"})
    assert status == 200 and headers["X-Served-By"] == "edge/int8"
    assert before + 4.9 < model_calls[0].deadline < time.monotonic() + 5.0


# ---------------------------------------------------------------------------------------------
# bad input: typed status, JSON error naming the field, the model never runs, still serving

_BIN_HEADER = json.dumps({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1],
                                      "parameters": {"binary_data_size": 9}}]}).encode()
JSON_TYPE = {"Content-Type": "application/json"}

BAD = [
    # (id, path, body, headers, status, text expected in the error)
    ("unknown-model", "/v2/models/nope/infer", text_body(["x"]), JSON_TYPE, 404, "model_name"),
    ("unknown-version", f"/v2/models/{MODEL}/versions/7/infer", text_body(["x"]), JSON_TYPE, 404, "model"),
    ("unknown-input", None, text_body(["x"]).replace(b'"text"', b'"txt"'), JSON_TYPE, 400, "inputs"),
    ("wrong-datatype", None, json.dumps({"inputs": [{"name": "text", "datatype": "INT32", "shape": [1],
                                                     "data": [1]}]}).encode(), JSON_TYPE, 400,
     "inputs[text].datatype"),
    ("wrong-rank", None, json.dumps({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1, 1],
                                                 "data": ["a"]}]}).encode(), JSON_TYPE, 400, "inputs[text].shape"),
    ("empty-batch", None, text_body([]), JSON_TYPE, 400, "inputs[text].shape"),
    ("count-mismatch", None, text_body(["a", "b"]).replace(b'"shape": [2]', b'"shape": [3]'), JSON_TYPE, 400,
     "inputs[text].data"),
    ("number-as-text", None, text_body(["a"]).replace(b'["a"]', b"[1]"), JSON_TYPE, 400, "inputs[text].data"),
    ("unknown-output", None, text_body(["a"], outputs=[{"name": "logits"}]), JSON_TYPE, 400, "outputs[logits]"),
    ("too-many-inputs", None, json.dumps({"inputs": [{"name": f"i{n}", "datatype": "INT8", "shape": [1],
                                                      "data": [1]} for n in range(65)]}).encode(), JSON_TYPE, 413,
     "inputs"),
    ("invalid-json", None, b'{"inputs": [', JSON_TYPE, 400, "body: is not valid JSON"),
    ("invalid-utf8", None, b'{"id": "\xc3\x28", "inputs": []}', JSON_TYPE, 400, "body: is not valid UTF-8"),
    ("empty-body", None, b"", JSON_TYPE, 400, "body"),
    ("binary-size-mismatch", None, _BIN_HEADER + serialize_bytes([b"hi"]), {jc.HEADER_LENGTH: str(len(_BIN_HEADER))},
     400, "inputs[text].parameters.binary_data_size"),
    ("binary-leftover", None, _BIN_HEADER + serialize_bytes([b"hello"]) + b"!",
     {jc.HEADER_LENGTH: str(len(_BIN_HEADER))}, 400, "body"),
    ("header-length-not-int", None, _BIN_HEADER, {jc.HEADER_LENGTH: "ten"}, 400, "Inference-Header-Content-Length"),
    ("text-plain", None, text_body(["x"]), {"Content-Type": "text/plain"}, 415, "Content-Type"),
    ("form", None, b"a=1", {"Content-Type": "application/x-www-form-urlencoded"}, 415, "Content-Type"),
    ("bad-timeout", None, text_body(["x"]), {**JSON_TYPE, TIMEOUT_HEADER: "soon"}, 400, TIMEOUT_HEADER),
    ("zero-timeout", None, text_body(["x"]), {**JSON_TYPE, TIMEOUT_HEADER: "0"}, 400, TIMEOUT_HEADER),
]


@pytest.mark.parametrize("path, body, headers, status, expected", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
async def test_bad_input_is_rejected_before_the_model_runs(http, url, model_calls, path, body, headers, status,
                                                           expected):
    got, reply_headers, reply = await post(http, url, body, headers, path=path or f"/v2/models/{MODEL}/infer")
    assert got == status and reply_headers["Content-Type"] == "application/json"
    error = json.loads(reply)["error"]
    assert expected in error
    assert "Traceback" not in error and "/work" not in error and ".py" not in error
    assert model_calls == []
    ok, _, _ = await post(http, url, text_body(["still serving"]))
    assert ok == 200 and len(model_calls) == 1


async def test_unknown_routes_and_methods_are_json(http, url):
    async with http.get(url + "/v3/nothing") as reply:
        assert reply.status == 404 and (await reply.json())["error"] == "no such route: GET /v3/nothing"
    async with http.get(url + f"/v2/models/{MODEL}/infer") as reply:
        assert reply.status == 405 and "POST" in reply.headers["Allow"]
        assert "GET" in (await reply.json())["error"]


async def test_unexpected_errors_are_500_without_details(http, agent, serve, caplog):
    class Broken:
        def __init__(self, inner):
            self.inner, self.limits = inner, inner.limits

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def server_metadata(self):
            raise RuntimeError("secret /etc/path detail")

        async def infer(self, request):
            raise Unavailable("warming up", retry_after_s=1.5)

    url = await serve(Broken(agent.dataplane))
    with caplog.at_level(logging.ERROR, logger="edgecloud.http_front"):
        async with http.get(url + "/v2") as reply:
            assert reply.status == 500 and await reply.json() == {"error": "internal error"}
    assert "secret /etc/path detail" in caplog.text
    status, headers, body = await post(http, url, text_body(["x"]))
    assert status == 503 and headers["Retry-After"] == "2" and json.loads(body) == {"error": "warming up"}


# ---------------------------------------------------------------------------------------------
# body limits


async def test_oversize_body_is_413_with_content_length_or_chunks(http, url, model_calls):
    big = text_body(["x" * SMALL_BODY])
    status, headers, body = await post(http, url, big)
    assert status == 413 and headers["Content-Type"] == "application/json"
    assert json.loads(body)["error"].startswith("body: ") and str(SMALL_BODY) in json.loads(body)["error"]

    async def chunks():
        for _ in range(2 * SMALL_BODY // 4096):
            yield b" " * 4096

    async with http.post(url + f"/v2/models/{MODEL}/infer", data=chunks(), headers=JSON_TYPE) as reply:
        assert reply.status == 413 and str(SMALL_BODY) in (await reply.json())["error"]
    assert model_calls == []
    assert (await post(http, url, text_body(["fits"])))[0] == 200


async def test_a_flood_of_tiny_chunks_is_cut_off_at_the_limit(url):
    """One-byte chunks past the limit, and no end: the answer comes once the limit is crossed,
    not after the (never-ending) body, so nothing past the limit is buffered."""
    port = int(url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"POST /v2/models/{MODEL}/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     "Transfer-Encoding: chunked\r\n\r\n".encode())
        writer.write(b"1\r\n \r\n" * (SMALL_BODY + 4096))  # never the terminating 0-size chunk
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 413 ")
        fields = dict(line.lower().split(b": ", 1) for line in head.split(b"\r\n")[1:] if line)
        length = int(fields[b"content-length"])
        assert str(SMALL_BODY).encode() in await reader.readexactly(length)
    finally:
        writer.close()
        await writer.wait_closed()


# ---------------------------------------------------------------------------------------------
# metrics, extra routes


async def test_extra_routes_and_metrics_on_an_operator_port_of_their_own(http, agent, serve):
    from aiohttp import web

    from edgecloud.metrics_http import MetricsServer

    registry = CollectorRegistry()
    requests = Counter("rest_requests", "requests seen", registry=registry)
    requests.inc(3)

    async def version(request: web.Request) -> web.Response:
        return web.json_response({"extra": True})

    url = await serve(agent.dataplane, extra_routes=lambda app: app.router.add_get("/extra", version))
    async with http.get(url + "/extra") as reply:
        assert await reply.json() == {"extra": True}
    async with http.get(url + "/metrics") as reply:
        assert reply.status == 404  # never on the public front
    metrics = MetricsServer(lambda: (generate_latest(registry), CONTENT_TYPE_LATEST))
    port = await metrics.start()
    try:
        async with http.get(f"http://127.0.0.1:{port}/metrics") as reply:
            assert reply.status == 200 and reply.headers["Content-Type"] == CONTENT_TYPE_LATEST
            assert "rest_requests_total 3.0" in await reply.text()
    finally:
        await metrics.stop()


# ---------------------------------------------------------------------------------------------
# deadlines and graceful stop


class GatedDataplane:
    """The real dataplane, except that ``infer`` waits for ``gate`` (to hold a request in flight)."""

    def __init__(self, inner):
        self.inner, self.limits = inner, inner.limits
        self.entered = asyncio.Event()
        self.gate = asyncio.Event()

    def __getattr__(self, name):
        return getattr(self.inner, name)

    async def infer(self, request):
        self.entered.set()
        await self.gate.wait()
        return await self.inner.infer(request)


async def test_deadline_header_bounds_the_call(http, agent, serve):
    gated = GatedDataplane(agent.dataplane)
    url = await serve(gated)
    started = time.monotonic()
    status, _, body = await post(http, url, text_body(["x"]), {**JSON_TYPE, TIMEOUT_HEADER: "150"})
    assert status == 504 and json.loads(body)["error"] == f"{TIMEOUT_HEADER}: no answer within 150 ms"
    assert 0.14 < time.monotonic() - started < 10  # the 150 ms bound, not the gate (never opened)


async def test_the_timeout_parameter_bounds_the_call_as_on_grpc(http, agent, serve):
    """tritonclient's ``timeout=`` (microseconds) travels as the request's ``timeout`` parameter."""
    gated = GatedDataplane(agent.dataplane)
    url = await serve(gated)
    started = time.monotonic()
    status, _, body = await post(http, url, text_body(["x"], parameters={"timeout": 150_000}), JSON_TYPE)
    assert status == 504 and json.loads(body)["error"] == "parameters[timeout]: no answer within 150000 us"
    assert 0.14 < time.monotonic() - started < 10


async def test_the_earlier_of_the_timeout_header_and_parameter_wins(http, agent, serve):
    gated = GatedDataplane(agent.dataplane)
    url = await serve(gated)
    status, _, body = await post(http, url, text_body(["x"], parameters={"timeout": 60_000_000}),
                                 {**JSON_TYPE, TIMEOUT_HEADER: "150"})
    assert status == 504 and json.loads(body)["error"] == f"{TIMEOUT_HEADER}: no answer within 150 ms"
    gated.gate.set()
    status, _, body = await post(http, url, text_body(["x"], parameters={"timeout": "soon"}),
                                 {**JSON_TYPE, TIMEOUT_HEADER: "5000"})
    assert status == 200  # a timeout that is not a number of microseconds is not one


async def test_graceful_stop_drains_the_request_in_flight(http, agent):
    gated = GatedDataplane(agent.dataplane)
    front = RestFront(gated)
    port = await front.start()
    url = f"http://127.0.0.1:{port}"
    in_flight = asyncio.create_task(post(http, url, text_body(["drained"])))
    await asyncio.wait_for(gated.entered.wait(), 5)
    stopping = asyncio.create_task(front.stop(grace=5))
    await asyncio.sleep(0.1)
    assert not stopping.done()
    with pytest.raises(OSError):  # no longer accepting
        await asyncio.open_connection("127.0.0.1", port)
    gated.gate.set()
    status, _, body = await asyncio.wait_for(in_flight, 5)
    assert status == 200 and json.loads(body)["outputs"][0]["shape"] == [1, 384]
    await asyncio.wait_for(stopping, 5)


async def test_stop_gives_up_on_requests_after_the_grace(http, agent):
    gated = GatedDataplane(agent.dataplane)
    front = RestFront(gated)
    url = f"http://127.0.0.1:{await front.start()}"
    in_flight = asyncio.create_task(post(http, url, text_body(["stuck"])))
    await asyncio.wait_for(gated.entered.wait(), 5)
    started = time.monotonic()
    await front.stop(grace=0.2)
    assert time.monotonic() - started < 10  # the grace, not the stuck request (never released)
    with pytest.raises(aiohttp.ClientError):
        await asyncio.wait_for(in_flight, 5)
    await front.stop(0)  # stopping twice is a no-op


# ---------------------------------------------------------------------------------------------
# the unmodified tritonclient over HTTP


async def test_tritonclient_http(agent, serve, tritonclient_check):
    url = await serve(agent.dataplane)
    texts = ["tritonclient over REST", "ok"]
    seen = await asyncio.to_thread(
        tritonclient_check, "http", url.removeprefix("http://"), MODEL,
        *[arg for text in texts for arg in ("--text", text)], "--bad-model", "nope",
    )
    assert seen["live"] and seen["ready"] and seen["model_ready"]
    assert seen["server_name"] == "edgecloud-edge"
    meta = seen["model_metadata"]
    assert meta["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    assert meta["outputs"] == [{"name": "embedding", "datatype": "FP32", "shape": [-1, 384]}]
    assert seen["response_id"] == "triton-check-1" and seen["response_parameters"] == {"variant": "int8"}
    assert seen["embedding_shape"] == [2, 384] and seen["embedding_dtype"] == "float32"
    np.testing.assert_allclose(np.array(seen["embedding"]), await agent.aembed(texts), atol=1e-6)
    assert seen["bad_model"]["status"] == "404" and "model_name" in seen["bad_model"]["message"]
    assert seen["after_error_shape"] == [2, 384]
