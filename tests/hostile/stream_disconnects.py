"""Clients that walk away mid-stream, a thousand times: does each generation stop, and does the
server's memory stay flat?

    .venv/bin/python -m tests.hostile.stream_disconnects [--times 1000]

Starts an edge agent and a cloud worker serving the generative model (child processes), then for
each: warms up, reads its RSS, and ``--times`` times starts a long stream (max_tokens 400) and
drops it after the first chunk, alternating plain HTTP server-sent events (connection closed) and
gRPC ``ModelStreamInfer`` (call cancelled). Afterwards one more request must answer at once (no
generation is still holding the edge's only thread or the cloud's cache slots) and the RSS is read
again. Prints a line per server and writes bench/results/stream_disconnects.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

import aiohttp
import grpc

from bench.common import machine_facts, write_result
from edgecloud.codec import serialize_bytes
from edgecloud_tools.stack import cloud_config, edge_config, free_port, launch, rss_bytes, wait_ready
from protos import inference_pb2 as pb
from tests.conftest import GENERATIVE_MODEL_DIR, MODEL_DIR

MODEL = "smollm2-135m-instruct"
PROMPT = "<|im_start|>user\nTell me a long story about a lighthouse.<|im_end|>\n<|im_start|>assistant\n"
STREAM_METHOD = "/inference.GRPCInferenceService/ModelStreamInfer"
MIB = 2**20


def _grpc_request(max_tokens: int) -> bytes:
    msg = pb.ModelInferRequest(model_name=MODEL, id="leaver")
    for name, datatype, value in (("text_input", "BYTES", PROMPT.encode()),
                                  ("sampling_parameters", "BYTES",
                                   json.dumps({"max_tokens": max_tokens, "temperature": 0}).encode())):
        msg.inputs.add(name=name, datatype=datatype, shape=[1])
        msg.raw_input_contents.append(serialize_bytes([value]))
    msg.inputs.add(name="stream", datatype="BOOL", shape=[1])
    msg.raw_input_contents.append(b"\x01")
    return msg.SerializeToString()


async def _leave_http(session: aiohttp.ClientSession, base: str) -> None:
    payload = {"text_input": PROMPT, "stream": True, "sampling_parameters": {"max_tokens": 400, "temperature": 0}}
    response = await session.post(f"{base}/v2/models/{MODEL}/generate_stream", json=payload)
    await response.content.readuntil(b"\n\n")
    response.close()  # the connection goes with it


async def _leave_grpc(channel: grpc.aio.Channel) -> None:
    call = channel.stream_stream(STREAM_METHOD)(iter([_grpc_request(400)]))
    first = pb.ModelStreamInferResponse.FromString(await call.read())  # the first chunk
    assert not first.error_message, first.error_message
    call.cancel()


async def _complete(channel: grpc.aio.Channel, timeout: float) -> float:
    """Seconds one short stream takes end to end (fails if it cannot finish in ``timeout``)."""
    started = time.perf_counter()
    call = channel.stream_stream(STREAM_METHOD)(iter([_grpc_request(8)]), timeout=timeout)
    async for raw in call:
        response = pb.ModelStreamInferResponse.FromString(raw)
        assert not response.error_message, response.error_message
        if response.infer_response.parameters["triton_final_response"].bool_param:
            break
    return time.perf_counter() - started


async def _run_one(name: str, grpc_address: str, http_port: int, pid: int, times: int) -> dict:
    base = f"http://127.0.0.1:{http_port}"
    async with grpc.aio.insecure_channel(grpc_address) as channel, aiohttp.ClientSession() as session:
        for index in range(20):  # warm-up: connection pools, allocator arenas, first-use caches
            await (_leave_http(session, base) if index % 2 else _leave_grpc(channel))
        await _complete(channel, 60)
        before = rss_bytes(pid)
        started = time.perf_counter()
        for index in range(times):
            await (_leave_http(session, base) if index % 2 else _leave_grpc(channel))
            if (index + 1) % 200 == 0:
                print(f"  {name}: {index + 1}/{times} left mid-stream, RSS {rss_bytes(pid) / MIB:.0f} MiB", flush=True)
        elapsed = time.perf_counter() - started
        after_s = await _complete(channel, 30)
        after = rss_bytes(pid)
    return {"server": name, "disconnects": times, "seconds": round(elapsed, 1),
            "rss_before_mib": round(before / MIB, 1), "rss_after_mib": round(after / MIB, 1),
            "rss_growth_mib": round((after - before) / MIB, 1), "next_request_s": round(after_s, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--times", type=int, default=1000)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="stream-disconnects-"))
    rows = []
    edge_port, edge_http, cloud_port, cloud_http = (free_port() for _ in range(4))
    edge = launch("edge", edge_config(MODEL_DIR, edge_port, threads=2, http_port=edge_http,
                                      generative_model_dir=GENERATIVE_MODEL_DIR), workdir)
    cloud = None
    try:
        wait_ready(edge, 180)
        rows.append(asyncio.run(_run_one("edge", edge.address, edge_http, edge.pid, args.times)))
        edge.stop()
        config = cloud_config(cloud_port, threads=None, http_port=cloud_http, generative_model_dir=GENERATIVE_MODEL_DIR)
        config["models"][1].update(max_batch_size=4, context_length=1024)
        cloud = launch("cloud", config, workdir)
        wait_ready(cloud, 180)
        rows.append(asyncio.run(_run_one("cloud", cloud.address, cloud_http, cloud.pid, args.times)))
    finally:
        edge.stop()
        if cloud is not None:
            cloud.stop()
    for row in rows:
        print(f"{row['server']}: {row['disconnects']} clients left mid-stream in {row['seconds']} s; RSS "
              f"{row['rss_before_mib']} -> {row['rss_after_mib']} MiB ({row['rss_growth_mib']:+} MiB); "
              f"the next request then took {row['next_request_s']} s")
    path = write_result("stream_disconnects", {"machine": machine_facts(), "rows": rows,
                                               "command": f"python -m tests.hostile.stream_disconnects --times {args.times}"})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
