"""Large hostile payloads against a gateway with the default limits (64 MiB messages), many passes:
does the memory of a refused large request go back?

    .venv/bin/python -m tests.hostile.large_payloads [--passes 10]

Each pass sends a million-element BYTES tensor and a 12 MiB element over gRPC (both refused,
RESOURCE_EXHAUSTED) and a million-element JSON body over HTTP (refused, 400), then reads the
gateway's RSS. Prints a line a pass and writes bench/results/large_payloads.json.
"""

from __future__ import annotations

import argparse
import http.client
import json
import tempfile
import time
from pathlib import Path

import grpc

from bench.common import machine_facts, write_result
from edgecloud.codec import serialize_bytes
from edgecloud_tools.stack import edge_config, free_port, gateway_config, launch, rss_bytes, wait_ready
from protos import inference_pb2 as pb
from protos import inference_pb2_grpc as pb_grpc
from tests.conftest import MODEL_DIR

MODEL = "all-MiniLM-L6-v2"
MIB = 2**20


def _bytes_request(items: list[bytes]) -> pb.ModelInferRequest:
    msg = pb.ModelInferRequest(model_name=MODEL)
    msg.inputs.add(name="text", datatype="BYTES", shape=[len(items)])
    msg.raw_input_contents.append(serialize_bytes(items))
    return msg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--passes", type=int, default=10)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="large-payloads-"))
    edge = launch("edge", edge_config(MODEL_DIR, free_port()), workdir)
    http_port = free_port()
    gateway = launch("gateway", gateway_config(free_port(), edge.address, [], http_port=http_port), workdir)
    rows = []
    try:
        wait_ready(edge, 60)
        wait_ready(gateway, 60)
        start = rss_bytes(gateway.pid)
        payloads = [_bytes_request([b"x"] * 1_000_000), _bytes_request([b"a" * (12 * MIB)])]
        body = json.dumps({"inputs": [{"name": "text", "shape": [1_000_000], "datatype": "BYTES",
                                       "data": ["x"] * 1_000_000}]}).encode()
        with grpc.insecure_channel(gateway.address, options=[("grpc.max_send_message_length", 1 << 30)]) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            for number in range(1, args.passes + 1):
                codes = []
                for msg in payloads:
                    try:
                        stub.ModelInfer(msg, timeout=30)
                        codes.append("OK")
                    except grpc.RpcError as exc:
                        codes.append(exc.code().name)
                connection = http.client.HTTPConnection("127.0.0.1", http_port, timeout=30)
                connection.request("POST", f"/v2/models/{MODEL}/infer", body, {"Content-Type": "application/json"})
                reply = connection.getresponse()
                reply.read()
                connection.close()
                time.sleep(0.5)
                rss = rss_bytes(gateway.pid) / MIB
                rows.append({"pass": number, "grpc": codes, "http": reply.status, "gateway_rss_mib": rss})
                print(f"pass {number}: gateway RSS {rss:.1f} MiB (grpc {', '.join(codes)}; http {reply.status})",
                      flush=True)
    finally:
        gateway.stop()
        edge.stop()
    growth = rows[-1]["gateway_rss_mib"] - rows[0]["gateway_rss_mib"]
    print(f"gateway RSS: {start / MIB:.1f} MiB at start, {rows[0]['gateway_rss_mib']:.1f} after pass 1, "
          f"{rows[-1]['gateway_rss_mib']:.1f} after pass {args.passes}: {growth:+.1f} MiB after the first pass")
    path = write_result("large_payloads", {"machine": machine_facts(), "passes": rows,
                                           "rss_at_start_mib": start / MIB, "growth_after_first_pass_mib": growth})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
