"""Drive a generative model over the Open Inference Protocol with the unmodified ``tritonclient``:
gRPC ``ModelStreamInfer`` (``start_stream`` / ``async_stream_infer`` and the asyncio client's
``stream_infer``) and unary ``ModelInfer``, as Triton's LLM-backend examples do.

Runs in its own virtual environment (tritonclient needs protobuf < 7) and imports nothing of
edgecloud. Prints one JSON object on stdout describing what the server answered. Usage::

    triton_stream_check.py --url HOST:PORT --model NAME --prompt TEXT [--max-tokens N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import queue
import sys

import numpy as np


def _inputs(module, prompt: str, stream: bool | None, sampling: dict | str | None, exclude: bool | None = None):
    items = []
    text = module.InferInput("text_input", [1], "BYTES")
    text.set_data_from_numpy(np.array([prompt.encode("utf-8")], dtype=object))
    items.append(text)
    if stream is not None:
        flag = module.InferInput("stream", [1], "BOOL")
        flag.set_data_from_numpy(np.array([stream], dtype=bool))
        items.append(flag)
    if sampling is not None:
        params = module.InferInput("sampling_parameters", [1], "BYTES")
        raw = sampling if isinstance(sampling, str) else json.dumps(sampling)
        params.set_data_from_numpy(np.array([raw.encode("utf-8")], dtype=object))
        items.append(params)
    if exclude is not None:
        flag = module.InferInput("exclude_input_in_output", [1], "BOOL")
        flag.set_data_from_numpy(np.array([exclude], dtype=bool))
        items.append(flag)
    return items


def _describe(result) -> dict:
    response = result.get_response()
    params = {}
    for key, value in response.parameters.items():
        kind = value.WhichOneof("parameter_choice")
        params[key] = getattr(value, kind)
    text = result.as_numpy("text_output")
    return {"id": response.id, "text": "" if text is None else b"".join(text.reshape(-1)).decode("utf-8"),
            "parameters": params}


def _error(exc) -> dict:
    status = getattr(exc, "status", lambda: None)()
    return {"error": str(exc.message() if hasattr(exc, "message") else exc), "status": str(status)}


def _collect(client, module, requests: list[dict], *, cancel_after: int | None = None, timeout: float = 60.0):
    """Send ``requests`` on one stream; gather what comes back until each has a final response
    (or, with ``cancel_after``, cancel the stream after that many responses)."""
    seen: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: seen.put((result, error)))
    for index, request in enumerate(requests):
        client.async_stream_infer(request["model"], _inputs(module, request["prompt"], request.get("stream"),
                                                            request.get("sampling"), request.get("exclude")),
                                  request_id=f"r{index}",
                                  enable_empty_final_response=request.get("empty_final", False))
    out: list[dict] = []
    finals = 0
    try:
        while finals < len(requests):
            result, error = seen.get(timeout=timeout)
            if error is not None:
                out.append(_error(error))
                finals += 1
                continue
            item = _describe(result)
            out.append(item)
            if item["parameters"].get("triton_final_response"):
                finals += 1
            if cancel_after is not None and len(out) >= cancel_after:
                client.stop_stream(cancel_requests=True)
                return out
    finally:
        if cancel_after is None:
            client.stop_stream()
    return out


async def _aio(url: str, model: str, prompt: str, max_tokens: int) -> list[dict]:
    import tritonclient.grpc.aio as aio_client

    client = aio_client.InferenceServerClient(url=url)

    async def requests():
        yield {"model_name": model, "request_id": "aio-1",
               "inputs": _inputs(aio_client, prompt, True, {"max_tokens": max_tokens, "temperature": 0})}

    out = []
    try:
        async for result, error in client.stream_infer(requests()):
            if error is not None:
                out.append(_error(error))
                break
            item = _describe(result)
            out.append(item)
            if item["parameters"].get("triton_final_response"):
                break
    finally:
        await client.close()
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--prompt", required=True)
    parser.add_argument("--max-tokens", type=int, default=12)
    args = parser.parse_args()

    import tritonclient.grpc as grpc_client
    from tritonclient.utils import InferenceServerException

    client = grpc_client.InferenceServerClient(url=args.url)
    model, prompt, n = args.model, args.prompt, args.max_tokens
    greedy = {"max_tokens": n, "temperature": 0}
    out: dict = {"model_metadata": client.get_model_metadata(model, as_json=True)}

    out["stream"] = _collect(client, grpc_client, [{"model": model, "prompt": prompt, "stream": True,
                                                    "sampling": greedy}])
    out["stream_empty_final"] = _collect(client, grpc_client, [{"model": model, "prompt": prompt, "stream": True,
                                                                "sampling": greedy, "empty_final": True}])
    out["stream_false"] = _collect(client, grpc_client, [{"model": model, "prompt": prompt, "stream": False,
                                                          "sampling": greedy}])
    # Two requests on one stream: a bad one is answered with an error and the good one still streams.
    out["bad_then_good"] = _collect(client, grpc_client, [
        {"model": model, "prompt": prompt, "stream": True, "sampling": {"max_tokens": n, "temprature": 0}},
        {"model": model, "prompt": prompt, "stream": True, "sampling": "{not json"},
        {"model": model, "prompt": prompt, "stream": True, "sampling": greedy},
    ])
    out["cancelled"] = _collect(client, grpc_client, [{"model": model, "prompt": prompt, "stream": True,
                                                       "sampling": {"max_tokens": 200, "temperature": 0}}],
                                cancel_after=3)
    unary = client.infer(model, _inputs(grpc_client, prompt, False, greedy, exclude=True), request_id="u1")
    out["unary"] = _describe(unary)
    unary_full = client.infer(model, _inputs(grpc_client, prompt, None, greedy))
    out["unary_with_prompt"] = _describe(unary_full)
    try:
        client.infer(model, _inputs(grpc_client, prompt, True, greedy))
        out["unary_stream_true"] = {"error": None}
    except InferenceServerException as exc:
        out["unary_stream_true"] = _error(exc)
    out["aio"] = asyncio.run(_aio(args.url, model, prompt, n))
    client.close()
    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
