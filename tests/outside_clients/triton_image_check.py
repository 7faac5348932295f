"""Classify an image with the unmodified ``tritonclient``, as a Triton user would: the encoded file
as BYTES [1], then prepared pixels as UINT8 [1, 224, 224, 3], each asking for the top classes
(``class_count``, the classification extension). Runs in its own environment and imports nothing of
edgecloud. Prints one JSON object. Usage::

    triton_image_check.py {grpc,http} --url HOST:PORT --model NAME --image FILE --pixels NPY
                          [--class-count K]
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np


def _strings(array) -> list[list[str]]:
    rows = array.reshape(array.shape[0], -1) if array.ndim > 1 else array.reshape(1, -1)
    return [[item.decode("utf-8") if isinstance(item, bytes) else str(item) for item in row] for row in rows]


def _parameters(protocol: str, result) -> dict:
    response = result.get_response()
    if protocol == "grpc":
        return {k: (v.string_param or v.bool_param or v.int64_param) for k, v in response.parameters.items()}
    return response.get("parameters", {})


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("protocol", choices=["grpc", "http"])
    parser.add_argument("--url", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--image", required=True)
    parser.add_argument("--pixels", required=True)
    parser.add_argument("--class-count", type=int, default=3)
    args = parser.parse_args()
    if args.protocol == "grpc":
        import tritonclient.grpc as client_mod
    else:
        import tritonclient.http as client_mod
    client = client_mod.InferenceServerClient(url=args.url)
    out: dict = {}
    requested = client_mod.InferRequestedOutput("probabilities", class_count=args.class_count)
    with open(args.image, "rb") as file:
        encoded = np.array([file.read()], dtype=np.object_)
    image = client_mod.InferInput("image", [1], "BYTES")
    image.set_data_from_numpy(encoded)
    result = client.infer(args.model, [image], outputs=[requested])
    out["encoded"] = _strings(result.as_numpy("probabilities"))
    out["encoded_parameters"] = _parameters(args.protocol, result)
    pixels = np.load(args.pixels)
    prepared = client_mod.InferInput("image", list(pixels.shape), "UINT8")
    prepared.set_data_from_numpy(pixels)
    result = client.infer(args.model, [prepared], outputs=[requested])
    out["pixels"] = _strings(result.as_numpy("probabilities"))
    out["pixels_parameters"] = _parameters(args.protocol, result)
    raw = client.infer(args.model, [prepared])
    out["probabilities_shape"] = list(raw.as_numpy("probabilities").shape)
    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
