"""Two versions of the gateway side by side, in one run, in front of one edge agent.

    python -m bench.gateway_ab --before ../baseline [--requests 2000] [--throughput-s 6] [--reps 3]

``--before`` is another checkout of this repository with its own ``.venv`` (``make setup`` there),
for instance ``git worktree add ../baseline <commit>``; "after" is this checkout. Both gateways
run as processes of their own tree, against the same edge agent process, with no cloud worker.

(a) Concurrency 1: requests go to the edge directly and through each gateway in rotation (so drift
    and noise hit all three alike); added p50/p99 over direct, and CPU per request of each gateway
    process (from /proc).
(b) Concurrency 64, closed loop: ``--reps`` rounds of direct / before / after in alternating order;
    requests/s (median of the rounds) and CPU per request.
Prints tables and writes bench/results/gateway_ab.json. Rerun it for every claim that one
version of the gateway is faster or slower than another: separate runs on this machine differ by
more than the changes being compared.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import yaml

from bench.common import cpu_seconds, print_table, summarize, write_result
from bench.load import closed_loop, rotated, text_request
from edgecloud_tools.stack import ServiceProcess, edge_config, free_port, gateway_config, launch, wait_ready

HERE = Path(__file__).resolve().parent.parent
MODEL_DIR = HERE / "models" / "all-MiniLM-L6-v2"
SENTENCE = "The quick brown fox jumps over the lazy dog near the river bank"


def launch_gateway(repo: Path, edge: str | None, workdir: Path, name: str,
                   embedded: dict | None = None) -> ServiceProcess:
    """A gateway process of the tree at ``repo`` (its own virtualenv and code), in front of the
    edge at ``edge``, or holding the edge agent ``embedded`` describes (``edge.embedded``)."""
    config = gateway_config(free_port(), edge, [])
    if embedded is not None:
        config["edge"] = {"address": None, "embedded": embedded}
    config_path = workdir / f"{name}.yaml"
    config_path.write_text(yaml.safe_dump(config))
    log_path = workdir / f"{name}.log"
    module = "edgecloud_tools" if (repo / "edgecloud_tools").is_dir() else "edgecloud"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([str(repo / ".venv" / "bin" / "python"), "-m", module, "serve", "gateway",
                                 "--config", str(config_path)], cwd=repo, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    return ServiceProcess(name, proc, f"127.0.0.1:{config['server']['port']}", config_path, log_path)


async def concurrency_1(addresses: dict[str, str], gateways: dict[str, ServiceProcess], n: int) -> dict:
    cpu0: dict[str, float] = {}
    samples = await rotated(addresses, text_request([SENTENCE]), n,
                            measuring=lambda: cpu0.update({name: cpu_seconds(g.pid) for name, g in gateways.items()}))
    cpu1 = {name: cpu_seconds(g.pid) for name, g in gateways.items()}
    direct = summarize(samples["direct"])
    out = {"direct": direct}
    for name in gateways:
        s = summarize(samples[name])
        out[name] = {**s, "added_p50_ms": s["p50_ms"] - direct["p50_ms"], "added_p99_ms": s["p99_ms"] - direct["p99_ms"],
                     "cpu_per_request_ms": (cpu1[name] - cpu0[name]) / n * 1000}
    return out


async def concurrency_64(addresses: dict[str, str], gateways: dict[str, ServiceProcess], duration_s: float,
                         reps: int) -> dict:
    runs: dict[str, list[dict]] = {name: [] for name in addresses}
    order = list(addresses)
    for rep in range(reps):
        for name in order if rep % 2 == 0 else list(reversed(order)):
            cpu0 = cpu_seconds(gateways[name].pid) if name in gateways else 0.0
            outcomes = await closed_loop(addresses[name], duration_s=duration_s, concurrency=64)
            ok = [o for o in outcomes if o.error is None]
            run = {"requests_per_s": len(ok) / duration_s, "errors": len(outcomes) - len(ok)}
            if name in gateways and ok:
                run["cpu_per_request_ms"] = (cpu_seconds(gateways[name].pid) - cpu0) / len(ok) * 1000
            runs[name].append(run)
    return {name: {"requests_per_s_median": float(np.median([r["requests_per_s"] for r in rs])),
                   "cpu_per_request_ms_median": float(np.median([r.get("cpu_per_request_ms", 0.0) for r in rs])),
                   "runs": rs} for name, rs in runs.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=Path, required=True, help="another checkout with its own .venv")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--throughput-s", type=float, default=6.0)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    before = args.before.resolve()
    if not (before / ".venv" / "bin" / "python").exists():
        raise SystemExit(f"{before} has no .venv: run `make setup` there first")
    workdir = Path(tempfile.mkdtemp(prefix="bench-gateway-ab-"))
    edge = launch("edge", edge_config(MODEL_DIR, free_port(), threads=1), workdir)
    gateways: dict[str, ServiceProcess] = {}
    try:
        wait_ready(edge, 60)
        for name, repo in (("before", before), ("after", HERE)):
            gateways[name] = launch_gateway(repo, edge.address, workdir, f"gateway-{name}")
        for gateway in gateways.values():
            wait_ready(gateway, 60)
        addresses = {"direct": edge.address, **{name: g.address for name, g in gateways.items()}}
        c1 = asyncio.run(concurrency_1(addresses, gateways, args.requests))
        c64 = asyncio.run(concurrency_64(addresses, gateways, args.throughput_s, args.reps))
    finally:
        for service in (*gateways.values(), edge):
            service.stop()
    print_table([{"path": name, "p50_ms": s["p50_ms"], "p99_ms": s["p99_ms"],
                  "added_p50_ms": s.get("added_p50_ms", 0.0), "added_p99_ms": s.get("added_p99_ms", 0.0),
                  "cpu_per_request_ms": s.get("cpu_per_request_ms", 0.0)} for name, s in c1.items()],
                f"concurrency 1, {args.requests} requests each, interleaved")
    direct = c64["direct"]["requests_per_s_median"]
    print_table([{"path": name, "requests_per_s": r["requests_per_s_median"], "vs_direct": r["requests_per_s_median"] / direct,
                  "cpu_per_request_ms": r["cpu_per_request_ms_median"]} for name, r in c64.items()],
                f"concurrency 64, median of {args.reps} alternating rounds of {args.throughput_s:g} s")
    path = write_result("gateway_ab", {"before": str(before), "concurrency_1": c1, "concurrency_64": c64,
                                       "config": vars(args) | {"before": str(before)}})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
