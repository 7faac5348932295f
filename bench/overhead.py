"""What a server costs a request beyond its model: the edge server, the embedded gateway (the
device profile) and the minimal backend (``bench.edge_floor``), each with its model call replaced
by a canned answer, so only the server's own work is measured.

    python -m bench.overhead [--duration 4] [--reps 6] [--concurrency 1 64] [--before ../baseline]

With the model in, these costs are a few percent of a request on this kind of box, below what the
throughput of two busy cores resolves from run to run (``bench.edge_server``'s ranges span +-10%).
Without it, the server's CPU per request is what is left, and it repeats to within a few percent:
the figure to profile against and to compare commits by. Each server is its own process (this
``bench/canned_server.py``: the real server, with ``SentenceEmbeddingModel.embed_texts`` /
``Floor._embed`` answering a fixed embedding and no warm-up), all loading the same model
directory; ``--before DIR`` adds the edge server and the embedded gateway of another checkout (its
own ``.venv``). Closed-loop load (``bench.load``) at each concurrency, ``--reps`` rounds in
alternating order; medians of each server's CPU per request (from /proc) and requests/s, and CPU
per request as a multiple of the floor's (the median of each round's ratio, with its range).
Prints a table and writes bench/results/overhead.json.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import yaml

from bench.common import RESULTS_DIR, alternating, paired_ratios, print_table, spread, stop_all, write_result
from bench.edge_server import measured_window
from edgecloud_tools.stack import ServiceProcess, free_port, wait_ready

REPO = Path(__file__).resolve().parents[1]
MODEL_DIR = REPO / "models" / "all-MiniLM-L6-v2"
"""The sentence-embedding model directory every server loads (its model call is never made)."""
FLOOR = "minimal backend"


def _config(kind: str, port: int, model_dir: Path) -> dict:
    server = {"host": "127.0.0.1", "port": port, "metrics_port": None}
    models = [{"path": str(model_dir)}]
    if kind == "edge":
        return {"server": {**server, "grace_s": 1}, "models": models}
    return {"server": server, "edge": {"embedded": {"models": models}}, "cache": {"enabled": False}}


def launch(name: str, kind: str, repo: Path, workdir: Path, model_dir: Path = MODEL_DIR) -> ServiceProcess:
    """``kind`` (floor, edge, gateway) of the checkout ``repo``, answering from memory
    (``bench/canned_server.py``, run with that checkout's ``.venv`` and code)."""
    port = free_port()
    log_path = workdir / f"{name}.log"
    if kind == "floor":
        arguments = [str(port), str(model_dir)]
    else:
        config_path = workdir / f"{name}.yaml"
        config_path.write_text(yaml.safe_dump(_config(kind, port, model_dir)))
        arguments = [str(config_path)]
    python = repo / ".venv" / "bin" / "python"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([str(python if python.exists() else sys.executable), str(REPO / "bench" / "canned_server.py"),
                                 kind, *arguments], cwd=repo, env={**os.environ, "PYTHONPATH": str(repo)},
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    return ServiceProcess(name, proc, f"127.0.0.1:{port}", workdir / f"{name}.yaml", log_path)


async def _round(service: ServiceProcess, concurrency: int, duration_s: float) -> dict:
    window = await measured_window(service, concurrency, duration_s, warmup_s=1.0)
    return {"req_s": window["req_s"], "cpu_us_per_req": 1000 * window["cpu_ms_per_req"], "p50_ms": window["p50_ms"],
            "errors": window["errors"]}


async def run(args) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="overhead-bench-"))
    specs = [(FLOOR, "floor", REPO), ("edge server", "edge", REPO), ("embedded gateway", "gateway", REPO)]
    if args.before is not None:
        specs += [("edge server (before)", "edge", args.before), ("embedded gateway (before)", "gateway", args.before)]
    model_dir = args.model_dir.resolve()
    services = {name: launch(name, kind, repo, workdir, model_dir) for name, kind, repo in specs}
    rounds: dict[tuple[str, int], list[dict]] = {}
    try:
        for service in services.values():
            await asyncio.to_thread(wait_ready, service, 120)
        for rep in range(args.reps):
            for concurrency in args.concurrency:
                for name, service in alternating(list(services.items()), rep):
                    rounds.setdefault((name, concurrency), []).append(
                        await _round(service, concurrency, args.duration))
            print(f"round {rep + 1} of {args.reps} done", flush=True)
    finally:
        stop_all(list(services.values()))
    rows = []
    for concurrency in args.concurrency:
        floor = [r["cpu_us_per_req"] for r in rounds[(FLOOR, concurrency)]]
        for name in services:
            mine = rounds[(name, concurrency)]
            cpu = [r["cpu_us_per_req"] for r in mine]
            vs_floor = paired_ratios(cpu, floor)
            rows.append({"server": name, "c": concurrency, "cpu_us_per_req": float(np.median(cpu)),
                         "cpu_range": f"{min(cpu):.0f}-{max(cpu):.0f}", "x_floor_cpu": vs_floor["median"],
                         "x_floor_cpu_range": spread(vs_floor), "req_s": float(np.median([r["req_s"] for r in mine])),
                         "errors": sum(r["errors"] for r in mine)})
    print_table(rows, f"server CPU per request with the model answered from memory (medians of {args.reps} "
                      f"rounds of {args.duration:g} s)")
    settings = {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()}
    return {"settings": settings, "rows": rows,
            "rounds": {f"{name} c={c}": value for (name, c), value in rounds.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--reps", type=int, default=6)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--before", type=Path, help="another checkout (with its .venv) whose servers run beside")
    parser.add_argument("--model-dir", type=Path, default=MODEL_DIR)
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args()
    payload = asyncio.run(run(args))
    print(f"wrote {write_result('overhead', payload, args.results_dir)}")


if __name__ == "__main__":
    main()
