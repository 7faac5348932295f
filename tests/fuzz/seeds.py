"""Seed inputs for the fuzzers: one or more well-formed inputs per target of ``fuzz_targets``, so a
run starts past protobuf's wire format and JSON's grammar instead of rediscovering them."""

from __future__ import annotations

import json
import struct

import numpy as np

from edgecloud import codec, json_codec
from edgecloud.types import InferRequest, InferResponse, RequestedOutput, Tensor
from tests.fuzz.fuzz_targets import as_input
from protos import inference_pb2 as pb

PROTO, BUILT, JSON, BINARY, BUILT_JSON, RESPONSE = range(6)


def _requests() -> list[InferRequest]:
    text = codec.bytes_array(["hello", "w\u00f6rld", ""])
    generic = [
        Tensor("a", "FP32", (2, 3), np.arange(6, dtype="<f4").reshape(2, 3)),
        Tensor("b", "INT64", (2,), np.array([-1, 2**40], dtype="<i8")),
        Tensor("c", "BYTES", (2, 1), codec.bytes_array(["x", "yz"]).reshape(2, 1)),
        Tensor("d", "BOOL", (), np.array(True)),
    ]
    return [
        InferRequest("all-MiniLM-L6-v2", [Tensor("text", "BYTES", (3,), text)]),
        InferRequest("m", generic, id="seed", parameters={"quality": "cloud", "top_k": 5},
                     outputs=[RequestedOutput("y", {"binary_data": True}), RequestedOutput("z")]),
    ]


def seed_inputs() -> list[bytes]:
    seeds: list[bytes] = []
    for request in _requests():
        raw = codec.request_to_proto(request)
        seeds.append(as_input(PROTO, raw.SerializeToString()))
        typed = pb.ModelInferRequest()
        typed.CopyFrom(raw)
        del typed.raw_input_contents[:]
        for tensor, source in zip(typed.inputs, request.inputs):
            if source.datatype == "BYTES":
                tensor.contents.bytes_contents.extend(source.data.reshape(-1).tolist())
            elif source.datatype == "FP32":
                tensor.contents.fp32_contents.extend(source.data.reshape(-1).tolist())
            elif source.datatype == "INT64":
                tensor.contents.int64_contents.extend(source.data.reshape(-1).tolist())
            elif source.datatype == "BOOL":
                tensor.contents.bool_contents.extend(source.data.reshape(-1).tolist())
        seeds.append(as_input(PROTO, typed.SerializeToString()))
        body, _ = json_codec.request_to_json(request, binary_inputs=False)
        seeds.append(as_input(JSON, body))
        body, length = json_codec.request_to_json(request, binary_inputs=True)
        seeds.append(as_input(BINARY, struct.pack("<H", length) + body))
    for size in (16, 64, 256):
        seeds.append(as_input(BUILT, bytes(range(size))))
        seeds.append(as_input(BUILT_JSON, bytes(range(size))[::-1]))
    response = InferResponse("m", [Tensor("y", "FP32", (1, 4), np.ones((1, 4), dtype="<f4")),
                                   Tensor("z", "BYTES", (1,), codec.bytes_array([b"\xff"]))], id="r")
    seeds.append(as_input(RESPONSE, codec.response_to_proto(response).SerializeToString()))
    seeds.append(as_input(JSON, json.dumps({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1, 1],
                                                         "data": [["nested"]]}]}).encode()))
    return seeds
