"""The committed stubs match the .proto, and the definition is wire-compatible with the spec."""

from __future__ import annotations

from pathlib import Path

from protos import generate
from protos import inference_pb2 as pb


def test_generated_stubs_are_fresh(tmp_path: Path):
    fresh = generate.generate_into(tmp_path)
    for name in generate.GENERATED_FILES:
        committed = (generate.PROTO_DIR / name).read_bytes()
        assert (fresh / name).read_bytes() == committed, f"protos/{name} is stale: run `make protos`"


def _numbers(message) -> dict[str, int]:
    return {field.name: field.number for field in message.DESCRIPTOR.fields}


def test_service_and_methods_match_the_protocol():
    service = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert service.full_name == "inference.GRPCInferenceService"
    assert {m.name for m in service.methods} == {
        "ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata", "ModelInfer",
        "ModelStreamInfer",
    }
    assert service.methods_by_name["ModelInfer"].input_type.full_name == "inference.ModelInferRequest"
    stream = service.methods_by_name["ModelStreamInfer"]
    assert stream.client_streaming and stream.server_streaming
    assert stream.input_type.full_name == "inference.ModelInferRequest"
    assert stream.output_type.full_name == "inference.ModelStreamInferResponse"
    assert _numbers(pb.ModelStreamInferResponse) == {"error_message": 1, "infer_response": 2}


def test_field_numbers_match_the_protocol():
    # Field numbers are the wire contract shared with Triton and KServe.
    assert _numbers(pb.ModelInferRequest) == {
        "model_name": 1, "model_version": 2, "id": 3, "parameters": 4, "inputs": 5, "outputs": 6,
        "raw_input_contents": 7,
    }
    assert _numbers(pb.ModelInferRequest.InferInputTensor) == {
        "name": 1, "datatype": 2, "shape": 3, "parameters": 4, "contents": 5,
    }
    assert _numbers(pb.ModelInferRequest.InferRequestedOutputTensor) == {"name": 1, "parameters": 2}
    assert _numbers(pb.ModelInferResponse) == {
        "model_name": 1, "model_version": 2, "id": 3, "parameters": 4, "outputs": 5, "raw_output_contents": 6,
    }
    assert _numbers(pb.ModelInferResponse.InferOutputTensor) == {
        "name": 1, "datatype": 2, "shape": 3, "parameters": 4, "contents": 5,
    }
    assert _numbers(pb.InferParameter) == {
        "bool_param": 1, "int64_param": 2, "string_param": 3, "double_param": 4, "uint64_param": 5,
    }
    assert _numbers(pb.InferTensorContents) == {
        "bool_contents": 1, "int_contents": 2, "int64_contents": 3, "uint_contents": 4, "uint64_contents": 5,
        "fp32_contents": 6, "fp64_contents": 7, "bytes_contents": 8,
    }
    assert _numbers(pb.ModelMetadataResponse) == {
        "name": 1, "versions": 2, "platform": 3, "inputs": 4, "outputs": 5,
        "parameters": 100,  # edgecloud's extension, outside the spec's numbers (a model's chat template)
    }
    assert _numbers(pb.ModelMetadataResponse.TensorMetadata) == {"name": 1, "datatype": 2, "shape": 3}
    assert _numbers(pb.ServerMetadataResponse) == {"name": 1, "version": 2, "extensions": 3}
    assert _numbers(pb.ModelReadyRequest) == {"name": 1, "version": 2}
