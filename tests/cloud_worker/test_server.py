"""The cloud worker over real gRPC on port 0, with the real FP32 model on CPU."""

from __future__ import annotations

import asyncio
import os

import aiohttp
import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tests.support.cloud_fakes import KeepLoaded, embedding_of, text_request
from protos import inference_pb2 as pb

MODEL = "all-MiniLM-L6-v2"
SERVICE = "inference.GRPCInferenceService"

TEXTS = [
    "hi",
    "The cloud worker batches requests from many clients.",
    "A considerably longer sentence, which pads the others when they share a batch without length bucketing, "
    "goes on for a while so that it is several times longer than the rest of them.",
    "Ünïcödé text: 東京は晴れです 🙂",
    "",
    "short one",
    "Batched outputs must equal unbatched ones.",
    "edge",
]


async def test_health_metadata_and_one_inference(reference_worker, connect):
    stub = connect(reference_worker)
    assert (await stub.ServerLive(pb.ServerLiveRequest())).live
    assert (await stub.ServerReady(pb.ServerReadyRequest())).ready
    assert (await stub.ModelReady(pb.ModelReadyRequest(name=MODEL, version="1"))).ready
    assert (await stub.ServerMetadata(pb.ServerMetadataRequest())).name == "edgecloud-cloud"
    meta = await stub.ModelMetadata(pb.ModelMetadataRequest(name=MODEL))
    assert list(meta.versions) == ["1"]
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [("text", "BYTES", [-1])]
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.outputs] == [("embedding", "FP32", [-1, 384])]

    response = await stub.ModelInfer(text_request(["hello", "world"], request_id="r1"))
    assert response.id == "r1" and response.model_name == MODEL and response.model_version == "1"
    assert response.parameters["variant"].string_param == "fp32"
    vectors = embedding_of(response)
    assert vectors.shape == (2, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)

    health = health_pb2_grpc.HealthStub(stub.channel)
    for service in ("", SERVICE):
        status = await health.Check(health_pb2.HealthCheckRequest(service=service))
        assert status.status == health_pb2.HealthCheckResponse.SERVING


async def test_an_idle_worker_trims_its_heap_after_its_last_batch(reference_worker, connect, monkeypatch):
    """The worker's batches arm the process's heap trimmer: a trim follows once it has been idle."""
    from edgecloud.allocator import heap_trimmer

    monkeypatch.setattr(heap_trimmer, "idle_s", 0.2)
    before = heap_trimmer.trims
    await connect(reference_worker).ModelInfer(text_request(["hello"]))
    for _ in range(200):
        if heap_trimmer.trims > before:
            break
        await asyncio.sleep(0.01)
    assert heap_trimmer.trims == before + 1


async def test_reflection_lists_the_services(reference_worker, connect):
    stub = reflection_pb2_grpc.ServerReflectionStub(connect(reference_worker).channel)
    call = stub.ServerReflectionInfo()
    await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
    response = await call.read()
    await call.done_writing()
    names = {service.name for service in response.list_services_response.service}
    assert {SERVICE, "grpc.health.v1.Health"} <= names


async def test_typed_and_raw_inputs_give_the_same_answer(reference_worker, connect):
    stub = connect(reference_worker)
    typed = pb.ModelInferRequest(model_name=MODEL)
    typed.inputs.add(name="text", datatype="BYTES", shape=[1]).contents.bytes_contents.append(b"same text")
    a = embedding_of(await stub.ModelInfer(typed))
    b = embedding_of(await stub.ModelInfer(text_request(["same text"])))
    np.testing.assert_array_equal(a, b)


async def test_answers_match_the_sentence_transformers_recipe(reference_worker, reference_runtime, connect):
    """Independent recipe: transformers' last_hidden_state, numpy mean pooling, L2 norm."""
    import torch

    from edgecloud.tokenization import mean_pool_normalize

    def recipe(text: str) -> np.ndarray:
        encoded = reference_runtime.tokenizer.encode([text])
        with torch.inference_mode():
            hidden = reference_runtime._model(**{k: torch.from_numpy(v) for k, v in encoded.items()}).last_hidden_state
        return mean_pool_normalize(hidden.numpy(), encoded["attention_mask"])[0]

    stub = connect(reference_worker)
    served = embedding_of(await stub.ModelInfer(text_request(TEXTS[:3])))
    for index, text in enumerate(TEXTS[:3]):
        np.testing.assert_allclose(served[index], await asyncio.to_thread(recipe, text), atol=1e-5)


async def test_64_concurrent_clients_get_their_unbatched_answers(start_worker, reference_runtime, connect):
    worker = await start_worker(runtimes=[KeepLoaded(reference_runtime)],
                                batching={"max_batch_size": 32, "max_queue_delay_us": 50_000})
    stub = connect(worker)
    texts = [f"{TEXTS[i % len(TEXTS)]} (client {i})" if i % 5 else TEXTS[i % len(TEXTS)] for i in range(64)]
    expected = await asyncio.to_thread(lambda: np.concatenate([reference_runtime.embed([t]) for t in texts]))
    responses = await asyncio.gather(*(stub.ModelInfer(text_request([text], request_id=str(i)))
                                       for i, text in enumerate(texts)))
    for i, response in enumerate(responses):
        assert response.id == str(i)
        np.testing.assert_allclose(embedding_of(response)[0], expected[i], atol=1e-5)
    sample = worker.metrics.registry.get_sample_value
    batches = sample("edgecloud_cloud_batch_size_count", {"model": MODEL})
    assert sample("edgecloud_cloud_batch_size_sum", {"model": MODEL}) == 64
    assert batches < 64 / 4, f"64 concurrent requests ran in {batches} batches: batching did not happen"
    assert sample("edgecloud_cloud_requests_total", {"model": MODEL, "outcome": "ok"}) == 64


def recording_runtime(settings):
    """A reference runtime that records each batch as (rows, torch intra-op threads, thread) in
    ``runtime.runs`` and the most batches running at once in ``runtime.most``."""
    import threading

    import torch

    from cloud_worker.reference import ReferenceRuntime

    lock = threading.Lock()

    class Recording(ReferenceRuntime):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.runs: list[tuple[int, int, int]] = []
            self.active = self.most = 0

        def run(self, items):
            with lock:
                self.runs.append((len(items), torch.get_num_threads(), threading.get_ident()))
                self.active += 1
                self.most = max(self.most, self.active)
            try:
                return super().run(items)
            finally:
                with lock:
                    self.active -= 1

    return Recording(settings=settings, max_rows=8)


async def sixty_four_clients_get_the_reference_answers(stub, reference_runtime) -> None:
    """64 different one-text requests at once, each answered with its own reference embedding."""
    texts = [f"{TEXTS[i % len(TEXTS)]} (client {i})" for i in range(64)]
    expected = await asyncio.to_thread(lambda: np.concatenate([reference_runtime.embed([t]) for t in texts]))
    responses = await asyncio.gather(*(stub.ModelInfer(text_request([text])) for text in texts))
    for i, response in enumerate(responses):
        np.testing.assert_allclose(embedding_of(response)[0], expected[i], atol=1e-5)


async def test_two_instances_run_batches_side_by_side_each_on_its_own_threads(start_worker, reference_runtime,
                                                                              connect):
    from cloud_worker.config import RuntimeSettings

    runtime = recording_runtime(RuntimeSettings(device="cpu", instances=2))
    worker = await start_worker(runtimes=[runtime], batching={"max_batch_size": 8, "max_queue_delay_us": 0})
    assert runtime.instances == 2
    await sixty_four_clients_get_the_reference_answers(connect(worker), reference_runtime)
    seen = {(thread, count) for _, count, thread in runtime.runs}  # (compute thread, its torch intra-op threads)
    threads_per_instance = max(1, len(os.sched_getaffinity(0)) // 2)
    assert runtime.most == 2, "64 queued requests never had two batches running at once"
    assert {count for _, count in seen} == {threads_per_instance}  # every instance set its own count
    assert len({thread for thread, _ in seen}) == 2


async def test_auto_instances_run_a_lone_request_on_every_thread_and_a_queue_on_two_halves(
        start_worker, reference_runtime, connect):
    from cloud_worker.config import RuntimeSettings
    from cloud_worker.threads import available_cpus

    runtime = recording_runtime(RuntimeSettings(device="cpu"))  # instances: auto, the default
    runs = runtime.runs
    worker = await start_worker(runtimes=[runtime], batching={"max_batch_size": 8, "max_queue_delay_us": 0})
    cpus = available_cpus()
    assert runtime.instances == (2 if cpus >= 2 else 1)
    stub = connect(worker)
    await stub.ModelInfer(text_request([TEXTS[0]]))
    assert runs[-1][:2] == (1, cpus)  # alone: every thread
    await sixty_four_clients_get_the_reference_answers(stub, reference_runtime)
    if cpus >= 2:
        assert runtime.most == 2, "64 queued requests never had two batches running at once"
        assert cpus // 2 in {threads for _, threads, _ in runs[1:]}, "no batch ran on half the threads"
    await stub.ModelInfer(text_request([TEXTS[1]]))
    assert runs[-1][:2] == (1, cpus)  # the queue gone: alone again
    assert len({thread for _, threads, thread in runs if threads == cpus}) == 1  # wide: always the same thread


@pytest.mark.parametrize("bucketing", [True, False])
def test_batched_equals_unbatched_in_the_runtime(reference_runtime, bucketing):
    from cloud_worker.config import RuntimeSettings
    from cloud_worker.reference import ReferenceRuntime

    runtime = ReferenceRuntime(settings=RuntimeSettings(device="cpu", length_bucketing=bucketing), max_rows=3)
    runtime._model, runtime._tokenizer = reference_runtime._model, reference_runtime.tokenizer
    runtime._scripted = reference_runtime._scripted  # the encoder the worker serves with
    batched = runtime.embed(TEXTS)
    alone = np.concatenate([runtime.embed([text]) for text in TEXTS])
    np.testing.assert_allclose(batched, alone, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(batched, axis=1), 1.0, atol=1e-5)


async def test_metrics_endpoint_serves_the_worker_s_registry(reference_worker, connect):
    await connect(reference_worker).ModelInfer(text_request(["count me"]))
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{reference_worker.metrics_port}/metrics") as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain")
            body = await response.text()
    for family in ("edgecloud_cloud_batch_size_bucket", "edgecloud_cloud_queue_seconds_bucket",
                   "edgecloud_cloud_compute_seconds_bucket", "edgecloud_cloud_pending_requests"):
        assert f'{family}{{le="1.0",model="{MODEL}"}}' in body or f'{family}{{model="{MODEL}"}}' in body, family
    assert f'edgecloud_cloud_requests_total{{model="{MODEL}",outcome="ok"}} 1.0' in body


async def test_graceful_stop_serves_what_is_in_flight_and_arrives_meanwhile_then_refuses(start_worker, connect):
    from tests.support.cloud_fakes import FakeEmbeddingRuntime

    runtime = FakeEmbeddingRuntime(gated=True)
    worker = await start_worker(runtimes=[runtime])
    stub = connect(worker)
    in_flight = asyncio.ensure_future(stub.ModelInfer(text_request(["finishing"])))
    assert await asyncio.to_thread(runtime.running.wait, 10)
    stopping = asyncio.create_task(worker.stop(10.0))
    try:
        await asyncio.sleep(0.2)
        assert not worker.dataplane.ready() and not in_flight.done() and not stopping.done()
        # Draining: a call arriving now (its client's balancer has not moved yet) is still served.
        late = asyncio.ensure_future(stub.ModelInfer(text_request(["arriving"]), timeout=10))
        await asyncio.sleep(0.2)
        assert not late.done() and not stopping.done()
    finally:
        runtime.release()  # ... and both finish
    assert embedding_of(await in_flight).shape == (1, 384)
    assert embedding_of(await late).shape == (1, 384)
    await stopping
    assert not runtime.loaded
    assert sorted(text for batch in runtime.batches for text in batch) == ["arriving", "finishing"]
    with pytest.raises(grpc.aio.AioRpcError) as info:  # stopped: no longer accepting
        await stub.ModelInfer(text_request(["too late"]), timeout=5)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_workers_share_nothing(start_worker, connect):
    """Scale-out: two workers in one process (own ports, metrics, queues) answer alike."""
    from tests.support.cloud_fakes import FakeEmbeddingRuntime

    a = await start_worker(runtimes=[FakeEmbeddingRuntime()])
    b = await start_worker(runtimes=[FakeEmbeddingRuntime()])
    assert a.port != b.port and a.metrics_port != b.metrics_port
    ra = await connect(a).ModelInfer(text_request(["same"]))
    rb = await connect(b).ModelInfer(text_request(["same"]))
    np.testing.assert_array_equal(embedding_of(ra), embedding_of(rb))
    await connect(a).ModelInfer(text_request(["only a"]))
    count = "edgecloud_cloud_requests_total"
    assert a.metrics.registry.get_sample_value(count, {"model": MODEL, "outcome": "ok"}) == 2
    assert b.metrics.registry.get_sample_value(count, {"model": MODEL, "outcome": "ok"}) == 1


async def test_model_work_never_runs_on_the_event_loop_thread(start_worker, connect):
    import threading

    from tests.support.cloud_fakes import FakeEmbeddingRuntime

    threads: dict[str, set[int]] = {"load": set(), "run": set()}

    class Recording(FakeEmbeddingRuntime):
        def load(self):
            threads["load"].add(threading.get_ident())
            super().load()

        def run(self, items):
            threads["run"].add(threading.get_ident())
            return super().run(items)

    worker = await start_worker(runtimes=[Recording()])
    await asyncio.gather(*(connect(worker).ModelInfer(text_request([f"t{i}"])) for i in range(8)))
    loop_thread = threading.get_ident()
    assert threads["load"] and threads["run"]
    assert loop_thread not in threads["load"] | threads["run"]
    assert len(threads["run"]) == 1  # one dedicated compute thread per model
