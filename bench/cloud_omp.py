"""The cloud worker's OpenMP wait policies compared with one worker alive at a time.

    python -m bench.cloud_omp [--policies brief inherit passive] [--reps 2] [--requests 600]

``bench.cloud --worker-omp`` runs every policy's worker at once, so a policy whose threads spin
while idle (``active``) burns the cores the measured worker needs. Here each policy's worker
(``runtime.openmp_wait_policy``, torch intra-op threads 2, batching on, TorchScript encoder) is
started alone, measured, and stopped, in alternating order over ``--reps`` rounds:
- concurrency 1: p50 of ``--requests`` sequential requests (after 100 unmeasured) and the
  worker's CPU per request;
- concurrency 64: requests/s over ``--seconds`` of closed-loop load (after a warm-up);
- idle while probed: cores busy while one short request arrives every 200 ms (a gateway's
  probes; ``bench.edge_server.idle_cores``).
Prints a table (medians of the rounds) and writes bench/results/cloud_omp.json.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
from pathlib import Path

from bench.common import cpu_seconds, print_table, write_result
from bench.edge_server import idle_cores
from bench.load import closed_loop, rotated, text_request
from edgecloud_tools.stack import cloud_config, free_port, launch, wait_ready

SENTENCE = "The quick brown fox jumps over the lazy dog near the river bank"


async def measure(policy: str, args: argparse.Namespace, workdir: Path) -> dict[str, float]:
    config = cloud_config(free_port(), threads=2)
    config["runtime"].update({"openmp_wait_policy": policy, "encoder": "torchscript"})
    config["batching"] = {"enabled": True, "max_batch_size": 32, "max_queue_delay_us": 2000}
    worker = launch("cloud", config, workdir, name=f"cloud-{policy}")
    try:
        await asyncio.to_thread(wait_ready, worker, 180)
        cpu0: list[float] = []
        latencies = (await rotated({policy: worker.address}, text_request([SENTENCE]), args.requests,
                                   measuring=lambda: cpu0.append(cpu_seconds(worker.pid))))[policy]
        cpu_c1 = (cpu_seconds(worker.pid) - cpu0[0]) / args.requests
        await closed_loop(worker.address, duration_s=2.0, concurrency=64)
        outcomes = await closed_loop(worker.address, duration_s=args.seconds, concurrency=64)
        answered = sum(1 for outcome in outcomes if outcome.error is None)
        idle = await idle_cores(worker, args.idle_s)
        return {"c1_p50_ms": statistics.median(latencies) * 1000, "c1_cpu_ms_per_req": cpu_c1 * 1000,
                "c64_req_per_s": answered / args.seconds, "idle_cores_while_probed": idle}
    finally:
        worker.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--policies", nargs="+", choices=["brief", "passive", "active", "inherit"],
                        default=["brief", "inherit", "passive"])
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--requests", type=int, default=600, help="sequential requests at concurrency 1")
    parser.add_argument("--seconds", type=float, default=8.0, help="closed-loop load at concurrency 64")
    parser.add_argument("--idle-s", type=float, default=5.0)
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="bench-cloud-omp-"))
    runs: dict[str, list[dict[str, float]]] = {policy: [] for policy in args.policies}
    for rep in range(args.reps):
        for policy in args.policies if rep % 2 == 0 else list(reversed(args.policies)):
            runs[policy].append(asyncio.run(measure(policy, args, workdir)))
            print(f"rep {rep + 1} {policy}: {runs[policy][-1]}", flush=True)
    rows = [{"policy": policy, **{key: statistics.median(run[key] for run in policy_runs) for key in policy_runs[0]}}
            for policy, policy_runs in runs.items()]
    print_table(rows, f"cloud worker per OpenMP wait policy, one alive at a time, median of {args.reps} rounds")
    path = write_result("cloud_omp", {"rows": rows, "runs": runs, "config": vars(args)})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
