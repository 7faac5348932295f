"""Any ONNX model directory is served: inputs and outputs read from the graph."""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
import pytest

from edgecloud.config import ServerSettings
from edge_agent.config import EdgeConfig, ModelSettings
from edge_agent.model_dir import ModelDirError, load_model_dir
from edge_agent.server import EdgeServer
from protos import inference_pb2 as pb
from protos import inference_pb2_grpc as pb_grpc


def write_affine_model(directory: Path) -> Path:
    """y = x @ W + b with a dynamic batch dimension, plus a second INT64 output."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = np.arange(12, dtype=np.float32).reshape(4, 3)
    bias = np.array([1.0, -1.0, 0.5], dtype=np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["xw"]),
            helper.make_node("Add", ["xw", "b"], ["y"]),
            helper.make_node("ArgMax", ["y"], ["label"], axis=1, keepdims=0),
        ],
        "affine",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3]),
         helper.make_tensor_value_info("label", TensorProto.INT64, ["batch"])],
        initializer=[numpy_helper.from_array(weight, "W"), numpy_helper.from_array(bias, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    directory.mkdir(parents=True, exist_ok=True)
    onnx.save(model, directory / "affine.onnx")
    return directory


async def test_generic_onnx_model_is_served_with_graph_io(tmp_path: Path):
    model_dir = write_affine_model(tmp_path / "affine")
    server = EdgeServer(EdgeConfig(server=ServerSettings(port=0), models=[ModelSettings(path=model_dir)]))
    port = await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            meta = await stub.ModelMetadata(pb.ModelMetadataRequest(name="affine"))
            assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [("x", "FP32", [-1, 4])]
            assert [(t.name, t.datatype, list(t.shape)) for t in meta.outputs] == [
                ("y", "FP32", [-1, 3]), ("label", "INT64", [-1])]
            x = np.array([[1, 0, 0, 0], [0, 0, 0, 2]], dtype=np.float32)
            msg = pb.ModelInferRequest(model_name="affine")
            msg.inputs.add(name="x", datatype="FP32", shape=[2, 4]).contents.fp32_contents.extend(x.ravel())
            msg.outputs.add(name="y")
            response = await stub.ModelInfer(msg)
            assert [o.name for o in response.outputs] == ["y"]
            y = np.frombuffer(response.raw_output_contents[0], "<f4").reshape(2, 3)
            np.testing.assert_allclose(y, x @ np.arange(12, dtype=np.float32).reshape(4, 3) + [1, -1, 0.5])
            bad = pb.ModelInferRequest(model_name="affine")
            bad.inputs.add(name="x", datatype="FP32", shape=[1, 5]).contents.fp32_contents.extend([0] * 5)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.ModelInfer(bad)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "expected [-1, 4], got [1, 5]" in info.value.details()
    finally:
        await server.stop(0.5)


def test_model_dir_errors_are_clear(tmp_path: Path):
    with pytest.raises(ModelDirError, match="exactly one .onnx"):
        load_model_dir(tmp_path)
    (tmp_path / "model.json").write_text('{"format": "edgecloud-model/1", "variants": {"int8": "gone.onnx"}}')
    with pytest.raises(ModelDirError, match="variants.int8: gone.onnx is missing"):
        load_model_dir(tmp_path)
