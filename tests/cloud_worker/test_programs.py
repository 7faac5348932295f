"""Generic TorchScript and torch.export programs from a model directory, served over real gRPC."""

from __future__ import annotations

import asyncio
import json

import grpc
import numpy as np
import pytest
import torch

from protos import inference_pb2 as pb


class Scorer(torch.nn.Module):
    """x FP32 [N, 4], k INT64 [N, 1] -> y FP32 [N, 2] (linear), z INT64 [N, 1] (2k)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.linear = torch.nn.Linear(4, 2)

    def forward(self, x: torch.Tensor, k: torch.Tensor):
        return self.linear(x), k * 2


SPEC = {
    "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]},
               {"name": "k", "datatype": "INT64", "shape": [-1, 1]}],
    "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 2]},
                {"name": "z", "datatype": "INT64", "shape": [-1, 1]}],
}


def write_dir(directory, program_format: str, **fields):
    directory.mkdir()
    module = Scorer().eval()
    if program_format == "torchscript":
        torch.jit.script(module).save(str(directory / "model.pt"))
    else:
        batch = torch.export.Dim("batch", max=1024)
        example = (torch.zeros(3, 4), torch.zeros(3, 1, dtype=torch.int64))
        program = torch.export.export(module, example, dynamic_shapes={"x": {0: batch}, "k": {0: batch}})
        torch.export.save(program, str(directory / "model.pt2"))
    manifest = {"name": fields.pop("name"), "format": program_format, **SPEC, **fields}
    (directory / "model.json").write_text(json.dumps(manifest))
    return directory


@pytest.fixture(scope="module")
def program_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("programs")
    return {
        "scripted": write_dir(root / "scripted", "torchscript", name="scripted", max_batch_size=8, variant="fp32-ts"),
        "exported": write_dir(root / "exported", "torch_export", name="exported", max_batch_size=8),
        "alone": write_dir(root / "alone", "torchscript", name="alone"),
        "lying": write_dir(root / "lying", "torchscript", name="lying",
                           outputs=[{"name": "y", "datatype": "FP16", "shape": [-1, 2]}, SPEC["outputs"][1]]),
    }


def request(model: str, x: np.ndarray, k: np.ndarray) -> pb.ModelInferRequest:
    msg = pb.ModelInferRequest(model_name=model)
    msg.inputs.add(name="x", datatype="FP32", shape=list(x.shape))
    msg.inputs.add(name="k", datatype="INT64", shape=list(k.shape))
    msg.raw_input_contents.extend([x.astype("<f4").tobytes(), k.astype("<i8").tobytes()])
    return msg


def outputs(response: pb.ModelInferResponse) -> dict[str, np.ndarray]:
    dtypes = {"FP32": "<f4", "INT64": "<i8"}
    return {t.name: np.frombuffer(response.raw_output_contents[i], dtype=dtypes[t.datatype]).reshape(tuple(t.shape))
            for i, t in enumerate(response.outputs)}


def expected(x: np.ndarray, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with torch.inference_mode():
        y, z = Scorer().eval()(torch.from_numpy(x), torch.from_numpy(k))
    return y.numpy(), z.numpy()


@pytest.fixture
async def worker(start_worker, program_dirs):
    models = [{"kind": "program", "path": str(path)} for path in program_dirs.values()]
    # A generous batching window: the concurrent requests below must land in one window even when
    # a busy CI machine spreads their arrival over tens of milliseconds.
    return await start_worker(models=models, batching={"max_queue_delay_us": 250_000})


@pytest.mark.parametrize("model", ["scripted", "exported", "alone"])
async def test_programs_answer_like_the_module(worker, connect, model):
    stub = connect(worker)
    rng = np.random.default_rng(1)
    x, k = rng.standard_normal((3, 4)).astype(np.float32), rng.integers(-5, 5, (3, 1))
    response = await stub.ModelInfer(request(model, x, k))
    got = outputs(response)
    y, z = expected(x, k)
    np.testing.assert_allclose(got["y"], y, atol=1e-6)
    np.testing.assert_array_equal(got["z"], z)
    assert response.model_version == "1"
    assert response.parameters["variant"].string_param == ("fp32-ts" if model == "scripted" else "fp32")
    meta = await stub.ModelMetadata(pb.ModelMetadataRequest(name=model))
    assert meta.platform == ("pytorch_export" if model == "exported" else "pytorch_libtorch")
    inputs = [(t.name, t.datatype, list(t.shape)) for t in meta.inputs]
    assert inputs == [("x", "FP32", [-1, 4]), ("k", "INT64", [-1, 1])]


@pytest.mark.parametrize("model", ["scripted", "exported"])
async def test_concurrent_requests_to_a_batchable_program_share_calls(worker, connect, model):
    stub = connect(worker)
    rng = np.random.default_rng(2)
    sample = worker.metrics.registry.get_sample_value
    # A first batch of 8 rows makes the batcher wait (up to the 250 ms window) for 8 rows again, so
    # the concurrent requests below share calls however fast the program answers each one.
    await stub.ModelInfer(request(model, np.ones((8, 4), np.float32), np.ones((8, 1), np.int64)))
    rows_before = sample("edgecloud_cloud_batch_size_sum", {"model": model})
    batches_before = sample("edgecloud_cloud_batch_size_count", {"model": model})
    inputs = [(rng.standard_normal((n, 4)).astype(np.float32), rng.integers(0, 9, (n, 1))) for n in (1, 2, 3, 1, 2)]
    responses = await asyncio.gather(*(stub.ModelInfer(request(model, x, k)) for x, k in inputs))
    for response, (x, k) in zip(responses, inputs):
        y, z = expected(x, k)
        np.testing.assert_allclose(outputs(response)["y"], y, atol=1e-6)
        np.testing.assert_array_equal(outputs(response)["z"], z)
    assert sample("edgecloud_cloud_batch_size_sum", {"model": model}) - rows_before == 9
    assert sample("edgecloud_cloud_batch_size_count", {"model": model}) - batches_before < 5


async def test_a_program_without_max_batch_size_runs_each_request_alone(worker, connect):
    stub = connect(worker)
    x, k = np.ones((2, 4), np.float32), np.ones((2, 1), np.int64)
    await asyncio.gather(*(stub.ModelInfer(request("alone", x, k)) for _ in range(4)))
    sample = worker.metrics.registry.get_sample_value
    assert sample("edgecloud_cloud_batch_requests_count", {"model": "alone"}) == 4
    assert sample("edgecloud_cloud_batch_requests_sum", {"model": "alone"}) == 4


async def test_a_request_over_the_program_s_max_batch_size_is_refused(worker, connect):
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await connect(worker).ModelInfer(request("scripted", np.ones((9, 4), np.float32), np.ones((9, 1), np.int64)))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details().startswith("inputs[x].shape:")


async def test_an_output_unlike_model_json_is_an_internal_error_not_a_wrong_answer(worker, connect):
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await connect(worker).ModelInfer(request("lying", np.ones((1, 4), np.float32), np.ones((1, 1), np.int64)))
    assert info.value.code() == grpc.StatusCode.INTERNAL
