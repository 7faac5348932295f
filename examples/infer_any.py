"""Call any model generically: read its metadata, build inputs that fit, print every output.

    python examples/infer_any.py --address 127.0.0.1:8001 --model all-MiniLM-L6-v2 --text "hello"

BYTES inputs get the ``--text`` values (a batch of them); numeric inputs get zeros of the
advertised shape, with each variable dimension (-1) set to the batch size. Works against the
gateway, an edge agent, a cloud worker or a Triton server.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from edgecloud.datatypes import DATATYPES
from gateway.client import Client, InferenceError, ModelMetadata


def build_inputs(meta: ModelMetadata, texts: list[str]) -> dict[str, np.ndarray | list[str]]:
    inputs: dict[str, np.ndarray | list[str]] = {}
    batch = len(texts)
    for spec in meta.inputs:
        shape = tuple(batch if dim < 0 else dim for dim in spec.shape)
        if spec.datatype == "BYTES":
            count = int(np.prod(shape))
            inputs[spec.name] = np.array([texts[i % batch] for i in range(count)], dtype=object).reshape(shape)
        else:
            inputs[spec.name] = np.zeros(shape, dtype=DATATYPES[spec.datatype].numpy_dtype)
    return inputs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", default="127.0.0.1:8001", help="server host:port")
    parser.add_argument("--model", default="all-MiniLM-L6-v2")
    parser.add_argument("--version", default="", help="model version ('' for the default)")
    parser.add_argument("--text", action="append", help="a text for BYTES inputs (repeat for a batch)")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per call, retries included")
    args = parser.parse_args(argv)
    texts = args.text or ["hello from infer_any", "a second input"]

    try:
        with Client(args.address, timeout_s=args.timeout) as client:
            meta = client.model_metadata(args.model, args.version)
            print(f"model {meta.name} versions {list(meta.versions)} platform {meta.platform!r}")
            for spec in meta.inputs:
                print(f"  input  {spec.name}: {spec.datatype} {list(spec.shape)}")
            for spec in meta.outputs:
                print(f"  output {spec.name}: {spec.datatype} {list(spec.shape)}")
            result = client.infer(args.model, build_inputs(meta, texts), version=args.version,
                                  request_id="infer-any")
    except InferenceError as exc:
        print(f"error ({exc.kind.value}): {exc}", file=sys.stderr)
        return 1

    print(f"answer id {result.id!r} from {result.model_name} v{result.model_version or '-'}, served by "
          f"{result.served_by or 'unspecified'} (variant {result.variant or '-'})")
    for name, array in result.outputs.items():
        print(f"  {name}: {result.datatypes[name]} {list(array.shape)} first values {array.reshape(-1)[:4]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
