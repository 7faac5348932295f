"""The edge server against a minimal backend on the same INT8 file, side by side in one run.

    python -m bench.edge_server [--duration 10] [--warmup 2] [--reps 2] [--quick]

Four servers run at once, each measured in turn (A/B/C/D then D/C/B/A, repeated ``--reps`` times):
the edge agent with its **default** config (threads and concurrency derived from the
cores, no spinning between requests, a lone request on its own session: ``edge_agent.lone``), the
same without the **lone session** (``lone_request_threads: 1``), the edge agent with the
**previous defaults** (concurrency 1, onnxruntime's own intra-op threads, spinning on), and
``bench.edge_floor`` (a minimal grpc.aio + onnxruntime
backend: same file, tokenizer and pooling, one worker thread per core). For each: closed-loop
load at concurrency 1 and 64 (this package's gRPC client, one short distinct sentence per
request) for ``--duration`` s after ``--warmup`` s, throughput, p50/p99, and the server's CPU per
request read from /proc; then the server idling while probed 5 times a second (what the gateway
does) for ``--idle`` s: cores busy. Figures are medians across reps; a ratio to the minimal backend
is the median of the per-rep ratios (each rep's windows run back to back, so the machine's drift
between reps cancels), with their min-max range beside it. Prints a table with the ratios the speed
issue names and writes bench/results/edge_server.json.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import (alternating, cpu_seconds, paired_ratios, print_table, spread, stop_all, summarize,
                          write_result)
from bench.load import closed_loop, text_request
from edge_agent.threads import usable_cores
from edgecloud_tools.stack import ServiceProcess, free_port, launch, wait_ready
from protos import inference_pb2_grpc as pb_grpc

import grpc

REPO = Path(__file__).resolve().parents[1]
MODEL_DIR = REPO / "models" / "all-MiniLM-L6-v2"
PROBE_INTERVAL_S = 0.2


def _edge(port: int, workdir: Path, name: str, model: dict[str, Any]) -> ServiceProcess:
    config = {"server": {"host": "127.0.0.1", "port": port, "grace_s": 1},
              "models": [{"path": str(MODEL_DIR), **model}]}
    return launch("edge", config, workdir, name=name)


def _floor(port: int, workdir: Path) -> ServiceProcess:
    log_path = workdir / "floor.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "bench.edge_floor", "--port", str(port),
                                 "--model-dir", str(MODEL_DIR)], stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, cwd=REPO)
    return ServiceProcess("floor", proc, f"127.0.0.1:{port}", workdir / "floor.yaml", log_path)


async def measured_window(service: ServiceProcess, concurrency: int, duration_s: float, warmup_s: float) -> dict:
    """Closed-loop load on ``service`` for ``warmup_s``, then ``duration_s`` measured: requests/s,
    latency summary, the server's CPU ms per answered request (from /proc), errors."""
    await closed_loop(service.address, duration_s=warmup_s, concurrency=concurrency)
    cpu0, t0 = cpu_seconds(service.pid), time.monotonic()
    outcomes = await closed_loop(service.address, duration_s=duration_s, concurrency=concurrency)
    cpu, wall = cpu_seconds(service.pid) - cpu0, time.monotonic() - t0
    ok = [o.latency for o in outcomes if o.error is None]
    errors = len(outcomes) - len(ok)
    return {"req_s": len(ok) / wall, **summarize(ok), "cpu_ms_per_req": 1000 * cpu / max(1, len(ok)),
            "errors": errors}


async def idle_cores(service: ServiceProcess, seconds: float) -> float:
    """Cores busy while the server answers one short request every PROBE_INTERVAL_S."""
    async with grpc.aio.insecure_channel(service.address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        await stub.ModelInfer(text_request(["probe"]), timeout=10)
        await asyncio.sleep(1.0)  # what the load before left running settles
        cpu0, t0 = cpu_seconds(service.pid), time.monotonic()
        while time.monotonic() - t0 < seconds:
            await stub.ModelInfer(text_request(["probe"]), timeout=10)
            await asyncio.sleep(PROBE_INTERVAL_S)
        return (cpu_seconds(service.pid) - cpu0) / (time.monotonic() - t0)


def _median(rows: list[dict], key: str) -> float:
    return statistics.median(row[key] for row in rows)


async def run(args) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="edge-server-bench-"))
    services = {
        "edge (default)": _edge(free_port(), workdir, "edge-default", {}),
        "edge (no lone session)": _edge(free_port(), workdir, "edge-no-lone", {"lone_request_threads": 1}),
        "edge (previous defaults)": _edge(free_port(), workdir, "edge-previous",
                                          {"concurrency": 1, "intra_op_threads": 0, "allow_spinning": True}),
        "minimal backend": _floor(free_port(), workdir),
    }
    try:
        for service in services.values():
            await asyncio.to_thread(wait_ready, service, 120)
        windows: dict[tuple[str, int], list[dict]] = {}
        idle: dict[str, list[float]] = {}
        for rep in range(args.reps):
            for concurrency in (1, 64):
                for name, service in alternating(list(services.items()), rep):
                    row = await measured_window(service, concurrency, args.duration, args.warmup)
                    windows.setdefault((name, concurrency), []).append(row)
                    print(f"rep {rep + 1} c={concurrency} {name}: {row['req_s']:.0f} req/s, "
                          f"p50 {row['p50_ms']:.2f} ms, {row['cpu_ms_per_req']:.2f} ms CPU/req", flush=True)
            for name, service in alternating(list(services.items()), rep):
                idle.setdefault(name, []).append(await idle_cores(service, args.idle))
    finally:
        stop_all(list(services.values()))
    rows = []
    floor = "minimal backend"
    for concurrency in (1, 64):
        base = windows[(floor, concurrency)]
        for name in services:
            mine = windows[(name, concurrency)]
            req_s = paired_ratios([row["req_s"] for row in mine], [row["req_s"] for row in base])
            p50 = paired_ratios([row["p50_ms"] for row in mine], [row["p50_ms"] for row in base])
            rows.append({"server": name, "c": concurrency, "req_s": _median(mine, "req_s"),
                         "x_floor_req_s": req_s["median"], "x_floor_req_s_range": spread(req_s),
                         "p50_ms": _median(mine, "p50_ms"), "p99_ms": _median(mine, "p99_ms"),
                         "x_floor_p50": p50["median"], "x_floor_p50_range": spread(p50),
                         "cpu_ms_per_req": _median(mine, "cpu_ms_per_req"),
                         "errors": sum(row["errors"] for row in mine)})
    idle_rows = [{"server": name, "cores_busy_while_probed": statistics.median(values)}
                 for name, values in idle.items()]
    print_table(rows, f"edge server vs a minimal backend, same INT8 file ({usable_cores()} cores, "
                      f"medians of {args.reps} reps of {args.duration:g} s)")
    print_table(idle_rows, f"idle, probed every {PROBE_INTERVAL_S * 1000:.0f} ms ({args.idle:g} s)")
    return {"settings": vars(args), "rows": rows, "idle": idle_rows,
            "windows": {f"{name} c={c}": value for (name, c), value in windows.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--reps", type=int, default=4, help="reps (paired ratios need several on a noisy machine)")
    parser.add_argument("--idle", type=float, default=5.0)
    parser.add_argument("--quick", action="store_true", help="2 s windows, 1 rep (a smoke run)")
    args = parser.parse_args()
    if args.quick:
        args.duration, args.warmup, args.reps, args.idle = 2.0, 0.5, 1, 2.0
    result = asyncio.run(run(args))
    path = write_result("edge_server" + ("-quick" if args.quick else ""), result)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
