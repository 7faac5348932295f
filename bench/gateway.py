"""Gateway benchmark: what the gateway adds, and how it behaves when the edge slows down.

    python -m bench.gateway [--requests 1000] [--throughput-s 8] [--failover-s 20]

(a) Latency at concurrency 1, direct to the edge agent vs through the gateway, interleaved
    request by request (added p50/p99), and throughput at concurrency 64 for both.
(b) Failover: load at concurrency 8 through the gateway while a fault proxy in front of the edge
    adds 300 ms (SIGUSR1) and later restores it (SIGUSR2): max/p99 latency, share per backend,
    time to switch to the cloud and back, failures, and the bound every request must meet
    (threshold + cloud p99 + 20 ms).
Every server (edge, cloud, gateway, proxy) runs in its own process; the load generator is this one.
The hot path against its floors (a bare Python gRPC relay; the edge server for the embedded edge),
with CPU per request: ``bench.gateway_hop``.
Prints tables and writes bench/results/gateway.json.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import tempfile
import time
from pathlib import Path

import grpc
import numpy as np

from bench.common import print_table, summarize, write_result
from bench.load import Outcome, closed_loop
from edgecloud.codec import serialize_bytes
from edgecloud_tools.stack import cloud_config, edge_config, free_port, gateway_config, launch, launch_proxy, wait_ready
from protos import inference_pb2 as pb
from protos import inference_pb2_grpc as pb_grpc

MODEL_DIR = Path("models/all-MiniLM-L6-v2")
SENTENCE = "The quick brown fox jumps over the lazy dog near the river bank"


def request(text: str = SENTENCE) -> pb.ModelInferRequest:
    msg = pb.ModelInferRequest(model_name="all-MiniLM-L6-v2")
    msg.inputs.add(name="text", datatype="BYTES", shape=[1])
    msg.raw_input_contents.append(serialize_bytes([text.encode()]))
    return msg


async def added_latency(direct: str, gateway: str, n: int) -> dict:
    async with grpc.aio.insecure_channel(direct) as d, grpc.aio.insecure_channel(gateway) as g:
        stubs = {"direct": pb_grpc.GRPCInferenceServiceStub(d), "gateway": pb_grpc.GRPCInferenceServiceStub(g)}
        samples: dict[str, list[float]] = {"direct": [], "gateway": []}
        msg = request()
        for i in range(n + 50):
            order = ("direct", "gateway") if i % 2 == 0 else ("gateway", "direct")
            for name in order:
                start = time.perf_counter()
                await stubs[name].ModelInfer(msg, timeout=10)
                if i >= 50:
                    samples[name].append(time.perf_counter() - start)
    direct_s, gateway_s = summarize(samples["direct"]), summarize(samples["gateway"])
    diffs = np.array(samples["gateway"]) - np.array(samples["direct"])
    return {"direct": direct_s, "gateway": gateway_s,
            "added_p50_ms": gateway_s["p50_ms"] - direct_s["p50_ms"],
            "added_p99_ms": gateway_s["p99_ms"] - direct_s["p99_ms"],
            "paired_diff_p50_ms": float(np.percentile(diffs, 50) * 1000)}


def throughput(outcomes: list[Outcome], duration_s: float) -> dict:
    ok = [o for o in outcomes if o.error is None]
    return {"requests_per_s": len(ok) / duration_s, **summarize([o.latency for o in ok]),
            "errors": len(outcomes) - len(ok)}


def switch_time(outcomes: list[Outcome], since: float, until: float, backend: str) -> float | None:
    """Seconds from ``since`` to the start of the first request after which every request
    started before ``until`` was served by ``backend``."""
    window = sorted((o for o in outcomes if since <= o.started < until), key=lambda o: o.started)
    last_other = None
    for o in window:
        if o.served_by != backend:
            last_other = o.started
    after = [o.started for o in window if last_other is None or o.started > last_other]
    return (after[0] - since) if after else None


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--throughput-s", type=float, default=8.0)
    parser.add_argument("--failover-s", type=float, default=20.0)
    parser.add_argument("--threshold-ms", type=float, default=200.0)
    args = parser.parse_args()
    if not (MODEL_DIR / "model.json").exists():
        from edge_agent.build.pipeline import build_model_dir

        build_model_dir(MODEL_DIR)

    workdir = Path(tempfile.mkdtemp(prefix="bench-gateway-"))
    services = []
    proxy = None
    try:
        edge = launch("edge", edge_config(MODEL_DIR.resolve(), free_port(), threads=1), workdir)
        cloud = launch("cloud", cloud_config(free_port(), threads=1), workdir)
        services += [edge, cloud]
        proxy = launch_proxy(edge.address, free_port(), workdir, delay_ms=300)
        routing = {"threshold_ms": args.threshold_ms, "probe_interval_ms": 100}
        # (a) measures a gateway wired straight to the edge; (b) one whose edge link runs through the proxy.
        gateway = launch("gateway", gateway_config(free_port(), edge.address, [cloud.address], routing=routing),
                         workdir, name="gateway-direct")
        faulty = launch("gateway", gateway_config(free_port(), proxy.address, [cloud.address],
                                                  routing=routing), workdir, name="gateway-via-proxy")
        services += [gateway, faulty]
        for service in services:
            wait_ready(service, 120)

        print(f"(a) added latency at concurrency 1: {args.requests} interleaved requests each")
        latency = asyncio.run(added_latency(edge.address, gateway.address, args.requests))
        print_table([{"path": name, **{k: v for k, v in latency[name].items() if k != "n"}}
                     for name in ("direct", "gateway")], "latency, concurrency 1 (ms)")
        print(f"added p50 {latency['added_p50_ms']:.3f} ms (target <= 0.5), "
              f"added p99 {latency['added_p99_ms']:.3f} ms (target <= 1.5)")

        rows = []
        thr = {}
        for name, address in (("direct", edge.address), ("gateway", gateway.address)):
            outcomes = asyncio.run(closed_loop(address, duration_s=args.throughput_s, concurrency=64,
                                               make_request=lambda i, n: request(f"{SENTENCE} {i} {n % 50}")))
            thr[name] = throughput(outcomes, args.throughput_s)
            rows.append({"path": name, **thr[name]})
        print_table(rows, "throughput, concurrency 64")

        slow_at, recover_at = 5.0, 5.0 + min(8.0, args.failover_s / 2)

        async def faults(t0):
            await asyncio.sleep(slow_at)
            proxy.send(signal.SIGUSR1)
            await asyncio.sleep(recover_at - slow_at)
            proxy.send(signal.SIGUSR2)

        print(f"\n(b) failover: edge +300 ms at t={slow_at:.0f}s, restored at t={recover_at:.0f}s, concurrency 8")
        outcomes = asyncio.run(closed_loop(faulty.address, duration_s=args.failover_s, concurrency=8,
                                           make_request=lambda i, n: request(f"{SENTENCE} {i} {n % 50}"),
                                           events=faults))
        ok = [o for o in outcomes if o.error is None]
        during = [o for o in ok if slow_at <= o.started < recover_at]
        cloud_lat = [o.latency for o in ok if o.served_by == "cloud"]
        cloud_p99_ms = summarize(cloud_lat)["p99_ms"] if cloud_lat else float("nan")
        bound_ms = args.threshold_ms + cloud_p99_ms + 20.0
        shares = {b: sum(1 for o in ok if o.served_by == b) / max(1, len(ok)) for b in ("edge", "cloud")}
        failover = {
            "requests": len(outcomes), "failed": len(outcomes) - len(ok),
            "max_ms": max(o.latency for o in ok) * 1000, "p99_ms": summarize([o.latency for o in ok])["p99_ms"],
            "during_slowdown_max_ms": max((o.latency for o in during), default=float("nan")) * 1000,
            "during_slowdown_p99_ms": summarize([o.latency for o in during])["p99_ms"],
            "edge_share": shares["edge"], "cloud_share": shares["cloud"],
            "switch_to_cloud_s": switch_time(ok, slow_at, recover_at, "cloud"),
            "switch_back_to_edge_s": switch_time(ok, recover_at, args.failover_s, "edge"),
            "cloud_p99_ms": cloud_p99_ms, "bound_ms": bound_ms,
            "over_bound": sum(1 for o in ok if o.latency * 1000 > bound_ms),
        }
        print_table([failover], "failover")
        targets = {
            "added_p50_ms<=0.5": latency["added_p50_ms"] <= 0.5,
            "added_p99_ms<=1.5": latency["added_p99_ms"] <= 1.5,
            "zero_failed": failover["failed"] == 0,
            "every_request_within_bound": failover["over_bound"] == 0,
            "on_cloud_within_1s": failover["switch_to_cloud_s"] is not None and failover["switch_to_cloud_s"] <= 1.0,
            "back_on_edge_within_5s": failover["switch_back_to_edge_s"] is not None
            and failover["switch_back_to_edge_s"] <= 5.0,
        }
        print_table([{"target": k, "met": v} for k, v in targets.items()], "targets")
        path = write_result("gateway", {"added_latency": latency, "throughput_c64": thr, "failover": failover,
                                        "targets": targets, "config": vars(args)})
        print(f"\nwrote {path}")
        return 0
    finally:
        if proxy is not None:
            proxy.stop()
        for service in reversed(services):
            service.stop()


if __name__ == "__main__":
    sys.exit(main())
