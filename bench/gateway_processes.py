"""Gateway processes: throughput of ``edgecloud serve gateway --processes N`` for several N.

    python -m bench.gateway_processes [--processes 1,2] [--seconds 8] [--reps 2] [--client-procs 2]

Every gateway serves cache hits (a real ``redis-server`` behind, near cache on: the gateway's own
work is the whole cost), in front of an edge agent that warms the entries. For each N, A/B
interleaved over ``--reps`` repetitions: a supervisor with N worker processes on one port; the
load is concurrency 64 from ``--client-procs`` processes, each spreading its calls over 8
connections (the kernel balances connections, not calls, over the workers). Reports requests/s,
p50/p99 and the gateway's CPU per request (supervisor and workers), and the ratio of each N to
N=1 from the same run. Writes bench/results/gateway_processes.json. On a 2-core machine the
clients share the cores with the gateway: the question there is only whether more processes lose.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import yaml

from bench.cache import HOT_TEXTS, hot_loop, request
from bench.common import cpu_seconds, machine_facts, print_table, ratio, summarize, write_result
from edgecloud_tools.stack import edge_config, free_port, gateway_config, launch, launch_redis, wait_ready
from protos import inference_pb2_grpc as pb_grpc

MODEL_DIR = Path("models/all-MiniLM-L6-v2")
CONNECTIONS_PER_CLIENT = 8


def _client_process(address: str, concurrency: int, start_at: float, duration_s: float, out) -> None:
    async def main():
        channels = [grpc.aio.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])
                    for _ in range(CONNECTIONS_PER_CLIENT)]
        stubs = [pb_grpc.GRPCInferenceServiceStub(c) for c in channels]
        msgs = [request(t) for t in HOT_TEXTS]
        for stub in stubs:
            for msg in msgs:
                await stub.ModelInfer(msg, timeout=30)  # every worker's near cache warm
        await asyncio.sleep(max(0.0, start_at - time.time()))
        try:
            return await hot_loop(stubs, msgs, concurrency, duration_s)
        finally:
            await asyncio.gather(*(c.close() for c in channels))

    ok, errors, latencies = asyncio.run(main())
    out.put((ok, errors, latencies[::4]))


def gateway_pids(supervisor_pid: int) -> list[int]:
    children = subprocess.run(["pgrep", "-P", str(supervisor_pid)], capture_output=True, text=True).stdout.split()
    return [supervisor_pid, *map(int, children)]


def measure(address: str, supervisor_pid: int, procs: int, duration_s: float) -> dict:
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    start_at = time.time() + 4.0
    per_proc = [64 // procs + (1 if i < 64 % procs else 0) for i in range(procs)]
    clients = [ctx.Process(target=_client_process, args=(address, c, start_at, duration_s, out)) for c in per_proc]
    for c in clients:
        c.start()
    time.sleep(max(0.0, start_at - time.time()))
    pids = gateway_pids(supervisor_pid)
    cpu0 = sum(cpu_seconds(p) for p in pids)
    results = [out.get(timeout=duration_s + 120) for _ in clients]
    cpu1 = sum(cpu_seconds(p) for p in pids)
    for c in clients:
        c.join(timeout=10)
    ok = sum(r[0] for r in results)
    return {"requests_per_s": ok / duration_s, **summarize([x for r in results for x in r[2]]),
            "errors": sum(r[1] for r in results), "gateway_cpu_ms_per_req": (cpu1 - cpu0) * 1000 / max(ok, 1)}


def start_gateway(processes: int, edge: str, redis_port: int, workdir: Path):
    port, metrics_port = free_port(), free_port()
    config = gateway_config(port, edge, [], metrics_port=metrics_port)
    config["server"]["max_concurrent_requests"] = 4096
    config["cache"] = {"enabled": True, "redis": {"url": f"redis://127.0.0.1:{redis_port}/0"}}
    path = workdir / f"gateway-{processes}.yaml"
    path.write_text(yaml.safe_dump(config))
    log = open(workdir / f"gateway-{processes}.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "edgecloud_tools", "serve", "gateway", "--config", str(path),
                             "--processes", str(processes)], stdout=log, stderr=subprocess.STDOUT)
    address = f"127.0.0.1:{port}"
    wait_ready(address, 60)
    time.sleep(2.0)  # every worker listening
    return proc, address


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", default="1,2")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--client-procs", type=int, default=2)
    args = parser.parse_args()
    counts = [int(n) for n in args.processes.split(",")]
    workdir = Path(tempfile.mkdtemp(prefix="bench-gw-procs-"))
    services, gateways = [], {}
    try:
        redis_port = free_port()
        services.append(launch_redis(workdir, redis_port))
        edge = launch("edge", edge_config(MODEL_DIR, free_port(), threads=1), workdir)
        services.append(edge)
        wait_ready(edge, 60)
        for n in counts:
            gateways[n] = start_gateway(n, edge.address, redis_port, workdir)
        runs: dict[int, list[dict]] = {n: [] for n in counts}
        for rep in range(args.reps):
            for n in counts:
                proc, address = gateways[n]
                row = measure(address, proc.pid, args.client_procs, args.seconds)
                runs[n].append(row)
                print(f"rep {rep + 1}, {n} process(es): {row['requests_per_s']:.0f} req/s, "
                      f"p50 {row['p50_ms']:.2f} ms, p99 {row['p99_ms']:.2f} ms, errors {row['errors']}", flush=True)
        rows = []
        base = sorted(r["requests_per_s"] for r in runs[counts[0]])[len(runs[counts[0]]) // 2]
        for n in counts:
            rps = sorted(r["requests_per_s"] for r in runs[n])[len(runs[n]) // 2]
            rows.append({"processes": n, "requests_per_s (median)": rps,
                         "p50_ms": sorted(r["p50_ms"] for r in runs[n])[len(runs[n]) // 2],
                         "p99_ms": sorted(r["p99_ms"] for r in runs[n])[len(runs[n]) // 2],
                         "gateway_cpu_ms_per_req": sorted(r["gateway_cpu_ms_per_req"] for r in runs[n])[len(runs[n]) // 2],
                         "errors": sum(r["errors"] for r in runs[n]),
                         f"vs {counts[0]}": ratio(rps, base)})
        print_table(rows, "gateway processes, concurrency 64, cache hits (near cache on Redis)")
        write_result("gateway_processes", {"machine": machine_facts(), "seconds": args.seconds, "reps": args.reps,
                                           "client_procs": args.client_procs, "rows": rows,
                                           "runs": {str(n): runs[n] for n in counts}})
    finally:
        for proc, _ in gateways.values():
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        for service in services:
            service.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
