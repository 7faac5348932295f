"""The cloud worker's thread set-ups compared with one worker alive at a time.

    python -m bench.cloud_omp [--configs brief:1 inherit:1 passive:1 brief:2] [--reps 2] [--requests 600]

A config is ``policy:instances``: ``runtime.openmp_wait_policy`` and ``runtime.instances`` (each
instance gets 2 / instances torch threads; batching on, TorchScript encoder). ``bench.cloud
--worker-omp`` runs every policy's worker at once, so a policy whose threads spin while idle
(``active``) burns the cores the measured worker needs. Here each config's worker is started
alone, measured, and stopped, in alternating order over ``--reps`` rounds:
- concurrency 1: p50 of ``--requests`` sequential requests (after 100 unmeasured) and the
  worker's CPU per request;
- sporadic: p50 of requests arriving one at a time at random (Poisson, ``--sporadic-rate`` a
  second, for ``--sporadic-s``): what a lone user sees, whose request finds the worker idle rather
  than straight after the previous answer, as back-to-back requests do;
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
from bench.load import closed_loop, open_loop, rotated, text_request
from edgecloud_tools.stack import cloud_config, free_port, launch, wait_ready

SENTENCE = "The quick brown fox jumps over the lazy dog near the river bank"


async def measure(name: str, args: argparse.Namespace, workdir: Path) -> dict[str, float]:
    policy, instances = name.split(":")
    config = cloud_config(free_port(), threads=max(1, 2 // int(instances)))
    config["runtime"].update({"openmp_wait_policy": policy, "encoder": "torchscript", "instances": int(instances)})
    config["batching"] = {"enabled": True, "max_batch_size": 32, "max_queue_delay_us": 2000}
    worker = launch("cloud", config, workdir, name=f"cloud-{policy}-{instances}")
    try:
        await asyncio.to_thread(wait_ready, worker, 180)
        cpu0: list[float] = []
        latencies = (await rotated({name: worker.address}, text_request([SENTENCE]), args.requests,
                                   measuring=lambda: cpu0.append(cpu_seconds(worker.pid))))[name]
        cpu_c1 = (cpu_seconds(worker.pid) - cpu0[0]) / args.requests
        sporadic = await open_loop(worker.address, rate_per_s=args.sporadic_rate, duration_s=args.sporadic_s,
                                   make_request=lambda _client, _n: text_request([SENTENCE]))
        if any(outcome.error is not None for outcome in sporadic):
            raise RuntimeError(f"{name}: a sporadic request failed")
        await closed_loop(worker.address, duration_s=2.0, concurrency=64)
        outcomes = await closed_loop(worker.address, duration_s=args.seconds, concurrency=64)
        answered = sum(1 for outcome in outcomes if outcome.error is None)
        idle = await idle_cores(worker, args.idle_s)
        return {"c1_p50_ms": statistics.median(latencies) * 1000, "c1_cpu_ms_per_req": cpu_c1 * 1000,
                "sporadic_p50_ms": statistics.median(outcome.latency for outcome in sporadic) * 1000,
                "c64_req_per_s": answered / args.seconds, "idle_cores_while_probed": idle}
    finally:
        worker.stop()


def _config(text: str) -> str:
    policy, _, instances = text.partition(":")
    if policy not in ("brief", "passive", "active", "inherit") or not instances.isdigit() or int(instances) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected policy:instances, as brief:1")
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", type=_config, default=["brief:1", "inherit:1", "passive:1", "brief:2"],
                        help="policy:instances (policy: brief, passive, active or inherit)")
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--requests", type=int, default=600, help="sequential requests at concurrency 1")
    parser.add_argument("--seconds", type=float, default=8.0, help="closed-loop load at concurrency 64")
    parser.add_argument("--idle-s", type=float, default=5.0)
    parser.add_argument("--sporadic-rate", type=float, default=20.0, help="lone requests a second, at random")
    parser.add_argument("--sporadic-s", type=float, default=10.0)
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="bench-cloud-omp-"))
    runs: dict[str, list[dict[str, float]]] = {config: [] for config in args.configs}
    for rep in range(args.reps):
        for config in args.configs if rep % 2 == 0 else list(reversed(args.configs)):
            runs[config].append(asyncio.run(measure(config, args, workdir)))
            print(f"rep {rep + 1} {config}: {runs[config][-1]}", flush=True)
    rows = [{"policy:instances": config,
             **{key: statistics.median(run[key] for run in config_runs) for key in config_runs[0]}}
            for config, config_runs in runs.items()]
    print_table(rows, f"cloud worker per OpenMP wait policy and instances, one alive at a time, "
                      f"median of {args.reps} rounds")
    path = write_result("cloud_omp", {"rows": rows, "runs": runs, "config": vars(args)})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
