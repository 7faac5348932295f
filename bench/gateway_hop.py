"""What the gateway's hot path costs: the gateway against the bare Python gRPC hop, and the device
profile (an embedded edge) against the edge server called directly.

    python -m bench.gateway_hop [--requests 2000] [--throughput-s 8] [--reps 2] [--concurrency 64]
                                [--before ../baseline]

Every server runs in its own process, all in front of (or holding) the same INT8 model:
- ``direct``: the edge agent's gRPC server;
- ``floor``: ``bench.relay_floor``, a grpc.aio relay that pipes ModelInfer bytes to that edge and
  decodes nothing: the least any Python gRPC hop costs on this machine;
- ``gateway``: the gateway with that edge (no cloud worker, no cache: the uncached hot path);
- ``peer``: a second edge server configured as ``direct``'s, called only directly: the embedded
  gateway's peer. At concurrency 1 the ``direct`` edge also serves the floor's and the gateways'
  requests (4 in 5), so its model stays in the CPU's caches while the embedded gateway's (1 in 5 or
  6) is evicted between its requests: against ``direct`` the embedded gateway measured 1.38x,
  against a peer as idle as itself 1.03-1.06x (same run, same build);
- ``embedded``: a gateway holding the edge agent in its own process (``edge.embedded``);
- ``before`` (with ``--before DIR``): the gateway of another checkout (its own ``.venv``, e.g. a
  ``git worktree`` of an earlier commit), in front of the same edge, and ``embedded_before``, that
  checkout's embedded gateway: before/after in one run.

(a) Concurrency 1: requests rotate over all of them, request by request, so drift and noise hit
    all alike. p50/p99; what ``floor`` and ``gateway`` add over ``direct``; the gateway's added
    p50/p99 as a multiple of the floor's; CPU per request of every process (from /proc).
(b) Concurrency ``--concurrency``, closed loop: ``--reps`` rounds over all of them in alternating
    order; requests/s (median of the rounds), vs ``direct`` (the median of each round's ratio,
    with its range: a round's paths run back to back, so drift between rounds cancels), and CPU
    per request.
Targets (issue 14, item 2): gateway added p50 <= 1.0x the floor's, added p99 <= 1.5x; gateway
c=64 >= 0.92x direct; embedded no slower than the edge server called directly (``peer``) at c=1
(p50) and c=64. Prints tables and
writes bench/results/gateway_hop.json.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import numpy as np

from bench.common import (alternating, cpu_seconds, paired_ratios, print_table, ratio, spread, summarize,
                          write_result)
from bench.gateway_ab import launch_gateway
from bench.load import closed_loop, rotated, text_request
from edgecloud_tools.stack import ServiceProcess, edge_config, free_port, gateway_config, launch, wait_ready
from protos import inference_pb2_grpc as pb_grpc

MODEL_DIR = Path("models/all-MiniLM-L6-v2")
SENTENCE = "The quick brown fox jumps over the lazy dog near the river bank"
PATHS = ("direct", "floor", "gateway", "peer", "embedded", "before", "embedded_before")
ALONE = frozenset({"peer", "embedded", "embedded_before"})
"""Paths whose process serves them alone (every other path goes through the ``direct`` edge)."""


def launch_floor(target: str, workdir: Path) -> ServiceProcess:
    port = free_port()
    log_path = workdir / "floor.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "bench.relay_floor", "--port", str(port), "--target", target],
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    return ServiceProcess("floor", proc, f"127.0.0.1:{port}", log_path, log_path)


def wait_relaying(service: ServiceProcess, timeout: float = 30.0) -> None:
    """The floor answers no health call: wait until a request goes through it."""
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(service.address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        while True:
            try:
                stub.ModelInfer(text_request([SENTENCE]), timeout=2)
                return
            except grpc.RpcError:
                if time.monotonic() > deadline or not service.alive():
                    raise RuntimeError(f"the floor relay did not come up:\n{service.log_tail()}") from None
                time.sleep(0.1)


async def concurrency_1(addresses: dict[str, str], pids: dict[str, int], n: int) -> dict:
    cpu0: dict[str, float] = {}
    samples = await rotated(addresses, text_request([SENTENCE]), n, warmup=200,
                            measuring=lambda: cpu0.update({name: cpu_seconds(pid) for name, pid in pids.items()}))
    cpu1 = {name: cpu_seconds(pid) for name, pid in pids.items()}
    names = list(samples)
    out = {name: summarize(s) for name, s in samples.items()}
    direct = out["direct"]
    for name in names:
        if name != "direct":
            out[name]["added_p50_ms"] = out[name]["p50_ms"] - direct["p50_ms"]
            out[name]["added_p99_ms"] = out[name]["p99_ms"] - direct["p99_ms"]
            diffs = np.array(samples[name]) - np.array(samples["direct"])
            out[name]["paired_added_p50_ms"] = float(np.percentile(diffs, 50) * 1000)
    for name, pid_cpu in cpu1.items():
        # The edge process serves every path but those served alone: its CPU is per request of those.
        per = n * sum(1 for path in addresses if path not in ALONE) if name == "edge" else n
        out.setdefault("cpu_per_request_ms", {})[name] = (pid_cpu - cpu0[name]) / per * 1000
    return out


async def concurrency_n(addresses: dict[str, str], pids: dict[str, int], concurrency: int, duration_s: float,
                        reps: int) -> dict:
    runs: dict[str, list[dict]] = {name: [] for name in addresses}
    order = list(addresses)
    own = {name: name for name in addresses} | {"direct": "edge"}
    for rep in range(reps):
        for name in alternating(order, rep):
            pid = pids[own[name]]
            cpu0 = cpu_seconds(pid)
            outcomes = await closed_loop(addresses[name], duration_s=duration_s, concurrency=concurrency)
            ok = [o for o in outcomes if o.error is None]
            run = {"requests_per_s": len(ok) / duration_s, "errors": len(outcomes) - len(ok),
                   **summarize([o.latency for o in ok])}
            if ok:
                run["cpu_per_request_ms"] = (cpu_seconds(pid) - cpu0) / len(ok) * 1000
            runs[name].append(run)
    direct = [r["requests_per_s"] for r in runs["direct"]]
    return {name: {"requests_per_s": float(np.median([r["requests_per_s"] for r in rs])),
                   "vs_direct": paired_ratios([r["requests_per_s"] for r in rs], direct),
                   "p50_ms": float(np.median([r["p50_ms"] for r in rs])),
                   "p99_ms": float(np.median([r["p99_ms"] for r in rs])),
                   "cpu_per_request_ms": float(np.median([r.get("cpu_per_request_ms", 0.0) for r in rs])),
                   "runs": rs} for name, rs in runs.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="per path at concurrency 1")
    parser.add_argument("--throughput-s", type=float, default=8.0)
    parser.add_argument("--reps", type=int, default=4, help="concurrency-N rounds (ratios are paired per round)")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--before", type=Path, help="another checkout (with its .venv) whose gateway runs beside")
    args = parser.parse_args()
    model_dir = MODEL_DIR.resolve()
    workdir = Path(tempfile.mkdtemp(prefix="bench-gateway-hop-"))
    services: list[ServiceProcess] = []
    try:
        edge = launch("edge", edge_config(model_dir, free_port(), threads=1), workdir)
        services.append(edge)
        wait_ready(edge, 120)
        floor = launch_floor(edge.address, workdir)
        services.append(floor)
        peer = launch("edge", edge_config(model_dir, free_port(), threads=1), workdir, name="peer")
        services.append(peer)
        gateway = launch("gateway", gateway_config(free_port(), edge.address, []), workdir)
        agent = {"models": [{"path": str(model_dir), "intra_op_threads": 1}]}
        embedded_config = gateway_config(free_port(), None, [])
        embedded_config["edge"] = {"address": None, "embedded": agent}
        embedded = launch("gateway", embedded_config, workdir, name="embedded")
        services += [gateway, embedded]
        before = embedded_before = None
        if args.before is not None:
            if not (args.before / ".venv" / "bin" / "python").exists():
                raise SystemExit(f"{args.before} has no .venv: run `make setup` there (or link one)")
            before = launch_gateway(args.before.resolve(), edge.address, workdir, "before")
            embedded_before = launch_gateway(args.before.resolve(), None, workdir, "embedded_before", embedded=agent)
            services += [before, embedded_before]
        wait_relaying(floor)
        for service in (peer, gateway, embedded, before, embedded_before):
            if service is not None:
                wait_ready(service, 120)
        addresses = {"direct": edge.address, "floor": floor.address, "gateway": gateway.address,
                     "peer": peer.address, "embedded": embedded.address}
        pids = {"edge": edge.pid, "floor": floor.pid, "gateway": gateway.pid, "peer": peer.pid,
                "embedded": embedded.pid}
        for name, service in (("before", before), ("embedded_before", embedded_before)):
            if service is not None:
                addresses[name], pids[name] = service.address, service.pid
        c1 = asyncio.run(concurrency_1(addresses, pids, args.requests))
        cn = asyncio.run(concurrency_n(addresses, pids, args.concurrency, args.throughput_s, args.reps))
    finally:
        for service in reversed(services):
            service.stop()
    cpu = c1["cpu_per_request_ms"]
    own = {name: name for name in PATHS} | {"direct": "edge"}
    print_table([{"path": name, "p50_ms": c1[name]["p50_ms"], "p99_ms": c1[name]["p99_ms"],
                  "added_p50_ms": c1[name].get("added_p50_ms", 0.0),
                  "paired_added_p50_ms": c1[name].get("paired_added_p50_ms", 0.0),
                  "added_p99_ms": c1[name].get("added_p99_ms", 0.0), "cpu_per_request_ms": cpu[own[name]]}
                 for name in PATHS if name in c1], f"concurrency 1, {args.requests} requests per path, rotated")
    print_table([{"path": name, "requests_per_s": r["requests_per_s"], "vs_direct": r["vs_direct"]["median"],
                  "vs_direct_range": spread(r["vs_direct"]),
                  "p50_ms": r["p50_ms"], "p99_ms": r["p99_ms"], "cpu_per_request_ms": r["cpu_per_request_ms"]}
                 for name, r in cn.items()],
                f"concurrency {args.concurrency}, medians of {args.reps} alternating rounds of {args.throughput_s:g} s "
                f"(vs_direct: median of the per-round ratios)")
    gw, fl = c1["gateway"], c1["floor"]
    figures = {**({"before_added_p50_vs_floor": ratio(c1["before"]["added_p50_ms"], fl["added_p50_ms"]),
                   "before_cn_vs_direct": cn["before"]["vs_direct"]["median"],
                   "embedded_before_c1_p50_vs_peer": ratio(c1["embedded_before"]["p50_ms"], c1["peer"]["p50_ms"]),
                   "embedded_before_cn_vs_peer": paired_ratios(
                       [r["requests_per_s"] for r in cn["embedded_before"]["runs"]],
                       [r["requests_per_s"] for r in cn["peer"]["runs"]])["median"],
                   "embedded_cn_vs_embedded_before": paired_ratios(
                       [r["requests_per_s"] for r in cn["embedded"]["runs"]],
                       [r["requests_per_s"] for r in cn["embedded_before"]["runs"]])["median"]}
                if "before" in c1 else {}),
        "gateway_added_p50_vs_floor": ratio(gw["added_p50_ms"], fl["added_p50_ms"]),
        "gateway_paired_added_p50_vs_floor": ratio(gw["paired_added_p50_ms"], fl["paired_added_p50_ms"]),
        "gateway_added_p99_vs_floor": ratio(gw["added_p99_ms"], fl["added_p99_ms"]),
        "gateway_cn_vs_direct": cn["gateway"]["vs_direct"]["median"],
        "floor_cn_vs_direct": cn["floor"]["vs_direct"]["median"],
        "embedded_c1_p50_vs_peer": ratio(c1["embedded"]["p50_ms"], c1["peer"]["p50_ms"]),
        "embedded_c1_p50_vs_direct": ratio(c1["embedded"]["p50_ms"], c1["direct"]["p50_ms"]),
        "embedded_cn_vs_peer": paired_ratios([r["requests_per_s"] for r in cn["embedded"]["runs"]],
                                             [r["requests_per_s"] for r in cn["peer"]["runs"]])["median"],
        "peer_cn_vs_direct": cn["peer"]["vs_direct"]["median"],
    }
    targets = {
        "gateway added p50 <= 1.0x floor": figures["gateway_added_p50_vs_floor"] <= 1.0,
        "gateway added p99 <= 1.5x floor": figures["gateway_added_p99_vs_floor"] <= 1.5,
        f"gateway c={args.concurrency} >= 0.92x direct": figures["gateway_cn_vs_direct"] >= 0.92,
        "embedded c=1 p50 <= peer": figures["embedded_c1_p50_vs_peer"] <= 1.0,
        f"embedded c={args.concurrency} >= peer": figures["embedded_cn_vs_peer"] >= 1.0,
    }
    print_table([{"figure": k, "value": v} for k, v in figures.items()], "ratios")
    print_table([{"target": k, "met": v} for k, v in targets.items()], "targets")
    path = write_result("gateway_hop", {"concurrency_1": c1, "concurrency_n": cn, "figures": figures,
                                        "targets": targets, "config": {**vars(args), "before": str(args.before) if args.before else None}})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
