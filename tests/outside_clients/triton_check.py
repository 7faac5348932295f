"""Drive an Open Inference Protocol server with the unmodified ``tritonclient``.

Runs in its own virtual environment (tritonclient needs protobuf < 7) and imports nothing of
edgecloud. Prints one JSON object on stdout describing what the server answered, so the tests can
assert on it. Usage::

    triton_check.py {grpc,http} --url HOST:PORT --model NAME [--text T ...] [--version V]
                    [--bad-model NAME] [--class-count K] [--timeout-us N]
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np


def _status(exc) -> dict:
    status = getattr(exc, "status", lambda: None)()
    return {"status": str(status), "message": str(exc.message() if hasattr(exc, "message") else exc)}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("protocol", choices=["grpc", "http"])
    parser.add_argument("--url", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--version", default="")
    parser.add_argument("--text", action="append", default=[])
    parser.add_argument("--input-name", default="text")
    parser.add_argument("--output-name", default="embedding")
    parser.add_argument("--bad-model", default=None, help="also infer against this unknown model")
    parser.add_argument("--class-count", type=int, default=0,
                        help="also ask for the output's top classes (the classification extension)")
    parser.add_argument("--timeout-us", type=int, default=0,
                        help="last, infer once more with tritonclient's timeout= (microseconds)")
    args = parser.parse_args()

    if args.protocol == "grpc":
        import tritonclient.grpc as client_mod
        from tritonclient.utils import InferenceServerException
    else:
        import tritonclient.http as client_mod
        from tritonclient.utils import InferenceServerException

    client = client_mod.InferenceServerClient(url=args.url)
    out: dict = {}
    out["live"] = client.is_server_live()
    out["ready"] = client.is_server_ready()
    out["model_ready"] = client.is_model_ready(args.model, args.version)
    server_meta = client.get_server_metadata()
    model_meta = client.get_model_metadata(args.model, args.version)
    if args.protocol == "grpc":
        out["server_name"] = server_meta.name
        out["model_metadata"] = {
            "name": model_meta.name,
            "versions": list(model_meta.versions),
            "platform": model_meta.platform,
            "inputs": [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in model_meta.inputs],
            "outputs": [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in model_meta.outputs],
        }
    else:
        out["server_name"] = server_meta["name"]
        out["model_metadata"] = model_meta

    texts = args.text or ["hello from tritonclient"]
    data = np.array([t.encode("utf-8") for t in texts], dtype=np.object_)
    infer_input = client_mod.InferInput(args.input_name, list(data.shape), "BYTES")
    infer_input.set_data_from_numpy(data)
    requested = client_mod.InferRequestedOutput(args.output_name)
    result = client.infer(args.model, [infer_input], model_version=args.version, outputs=[requested],
                          request_id="triton-check-1")
    embedding = result.as_numpy(args.output_name)
    response = result.get_response()
    if args.protocol == "grpc":
        out["response_id"] = response.id
        out["response_parameters"] = {k: str(v) for k, v in response.parameters.items()}
    else:
        out["response_id"] = response.get("id", "")
        out["response_parameters"] = response.get("parameters", {})
    out["embedding_shape"] = list(embedding.shape)
    out["embedding_dtype"] = str(embedding.dtype)
    out["embedding"] = embedding.astype(float).tolist()

    if args.class_count:
        top = client_mod.InferRequestedOutput(args.output_name, class_count=args.class_count)
        classified = client.infer(args.model, [infer_input], model_version=args.version, outputs=[top])
        classes = classified.as_numpy(args.output_name)
        out["classification_shape"] = list(classes.shape)
        out["classification"] = [item.decode("utf-8") if isinstance(item, bytes) else str(item)
                                 for item in classes.reshape(-1)]
        out["server_extensions"] = list(server_meta.extensions) if args.protocol == "grpc" \
            else server_meta.get("extensions", [])

    if args.bad_model:
        try:
            client.infer(args.bad_model, [infer_input])
            out["bad_model"] = {"status": "OK"}
        except InferenceServerException as exc:
            out["bad_model"] = _status(exc)
        # The server must keep serving after the error.
        again = client.infer(args.model, [infer_input], model_version=args.version)
        out["after_error_shape"] = list(again.as_numpy(args.output_name).shape)
    if args.timeout_us:
        try:
            client.infer(args.model, [infer_input], model_version=args.version, timeout=args.timeout_us)
            out["with_timeout"] = {"status": "OK"}
        except InferenceServerException as exc:
            out["with_timeout"] = _status(exc)
    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
