"""Soak: the whole stack at concurrency 64, hits and misses mixed, a fault every minute.

    python -m bench.soak [--duration-s 600] [--fault-every-s 60] [--concurrency 64]

Starts Redis, an edge agent behind a fault proxy, two cloud workers and the gateway (with the
Redis cache) as processes; runs closed-loop load from this process; injects, in turn: edge slowed
300 ms, a cloud worker killed and restarted, a cloud worker frozen, Redis killed and restarted,
Redis frozen, a config reload (SIGHUP). Records errors and p50/p99 per window, the RSS of every
process (and Redis' key count), and prints/writes bench/results/soak.json. RSS growth is judged
per process from the end of warm-up (a fifth of the run, at least two cache TTLs: Redis holds
one TTL of entries at steady state), or for a restarted process as long after its restart
(at least a minute). Faults start on a fixed schedule, each in its own task, so a slow restart
never delays the next. ``--duration-s 60 --fault-every-s 10 --concurrency 32`` is the short
version the tests run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from bench.common import print_table, summarize, write_result
from bench.load import closed_loop, text_request
from edgecloud_tools.stack import (
    cloud_config,
    edge_config,
    free_port,
    gateway_config,
    launch,
    launch_proxy,
    launch_redis,
    redis_reply,
    rss_bytes,
    wait_ready,
    wait_redis,
)
from protos import inference_pb2 as pb

MODEL_DIR = Path("models/all-MiniLM-L6-v2")
REPEATED = [f"frequently asked question number {i}" for i in range(40)]


def request(text: str) -> pb.ModelInferRequest:
    return text_request([text])


class Stack:
    def __init__(self, workdir: Path, threshold_ms: float, cache_ttl_s: float, cloud_attempt_timeout_ms: float):
        self.workdir = workdir
        self.redis = launch_redis(workdir, free_port())
        wait_redis(self.redis)
        self.edge = launch("edge", edge_config(MODEL_DIR.resolve(), free_port(), threads=1), workdir)
        self.cloud = [launch("cloud", cloud_config(free_port(), threads=1), workdir, name=f"cloud-{i}")
                      for i in range(2)]
        self.proxy = launch_proxy(self.edge.address, free_port(), workdir, delay_ms=300)
        self.gateway_cfg = gateway_config(free_port(), self.proxy.address, [c.address for c in self.cloud],
                                          routing={"threshold_ms": threshold_ms, "probe_interval_ms": 100})
        self.gateway_cfg["cloud"]["attempt_timeout_ms"] = cloud_attempt_timeout_ms
        self.gateway_cfg["cache"] = {"enabled": True, "redis": {"url": f"redis://{self.redis.address}"},
                                     "ttl_ms": cache_ttl_s * 1000}
        self.gateway = launch("gateway", self.gateway_cfg, workdir)
        for service in [self.edge, *self.cloud, self.gateway]:
            wait_ready(service, 120)

    def processes(self) -> dict[str, int]:
        procs = {"redis": self.redis.pid, "edge": self.edge.pid, "gateway": self.gateway.pid,
                 "proxy": self.proxy.pid}
        procs.update({c.name: c.pid for c in self.cloud})
        return procs

    def restart_cloud(self, index: int) -> None:
        old = self.cloud[index]
        port = int(old.address.rsplit(":", 1)[1])
        self.cloud[index] = launch("cloud", cloud_config(port, threads=1), self.workdir, name=old.name)
        wait_ready(self.cloud[index], 120)

    def restart_redis(self) -> None:
        port = int(self.redis.address.rsplit(":", 1)[1])
        self.redis = launch_redis(self.workdir, port)
        wait_redis(self.redis)

    def stop(self) -> None:
        for service in [self.proxy, self.gateway, *self.cloud, self.edge, self.redis]:
            service.stop()


FAULTS = ("edge_slow", "cloud_kill_restart", "cloud_freeze", "redis_kill_restart", "redis_freeze", "config_reload")


async def inject(stack: Stack, fault: str, hold_s: float, log: list) -> None:
    loop = asyncio.get_running_loop()
    entry = {"t": time.monotonic(), "fault": fault}
    log.append(entry)
    if fault == "edge_slow":
        stack.proxy.send(signal.SIGUSR1)
        await asyncio.sleep(hold_s)
        stack.proxy.send(signal.SIGUSR2)
    elif fault == "cloud_kill_restart":
        stack.cloud[0].kill()
        await asyncio.sleep(hold_s / 2)
        await loop.run_in_executor(None, stack.restart_cloud, 0)
    elif fault == "cloud_freeze":
        stack.cloud[1].pause()
        await asyncio.sleep(hold_s / 2)
        stack.cloud[1].resume()
    elif fault == "redis_kill_restart":
        stack.redis.kill()
        await asyncio.sleep(hold_s / 2)
        await loop.run_in_executor(None, stack.restart_redis)
    elif fault == "redis_freeze":
        stack.redis.pause()
        await asyncio.sleep(hold_s / 2)
        stack.redis.resume()
    elif fault == "config_reload":
        stack.gateway_cfg["routing"]["threshold_ms"] += 1
        stack.gateway.config_path.write_text(yaml.safe_dump(stack.gateway_cfg))
        stack.gateway.send(signal.SIGHUP)
    entry["done"] = time.monotonic()


async def soak(stack: Stack, duration_s: float, fault_every_s: float, concurrency: int) -> dict:
    rss: list[dict] = []
    faults: list[dict] = []
    t0 = time.monotonic()
    rng = random.Random(7)

    def make_request(index: int, n: int) -> pb.ModelInferRequest:
        return request(rng.choice(REPEATED) if rng.random() < 0.5 else f"new sentence {index}-{n}-{rng.random()}")

    async def events(_t0: float) -> None:
        async def sample_rss() -> None:
            while time.monotonic() - t0 < duration_s:
                rss.append({"t": time.monotonic() - t0, "redis_keys": redis_keys(stack.redis.address),
                            "procs": {k: {"pid": v, "rss": rss_bytes(v)} for k, v in stack.processes().items()}})
                await asyncio.sleep(5)

        async def faults_loop() -> None:
            # On a fixed schedule, each fault its own task: a slow restart never delays the next.
            injections = []
            index = 0
            while (at := (index + 1) * fault_every_s) < duration_s - fault_every_s / 2:
                await asyncio.sleep(max(0.0, t0 + at - time.monotonic()))
                injections.append(asyncio.create_task(
                    inject(stack, FAULTS[index % len(FAULTS)], min(15.0, fault_every_s / 2), faults)))
                index += 1
            await asyncio.gather(*injections)

        await asyncio.gather(sample_rss(), faults_loop())

    outcomes = await closed_loop(stack.gateway.address, duration_s=duration_s, concurrency=concurrency,
                                 make_request=make_request, timeout_s=15, events=events)
    for fault in faults:
        fault["t"] -= t0
        fault["done"] = fault.get("done", t0) - t0
    return {"outcomes": outcomes, "rss": rss, "faults": faults}


def report(run: dict, duration_s: float, window_s: float, cache_ttl_s: float) -> dict:
    outcomes = run["outcomes"]
    windows = []
    for start in range(0, int(duration_s), int(window_s)):
        chunk = [o for o in outcomes if start <= o.started < start + window_s]
        ok = [o.latency for o in chunk if o.error is None]
        faults = [f["fault"] for f in run["faults"] if start <= f["t"] < start + window_s]
        s = summarize(ok)
        windows.append({"window_s": start, "requests": len(chunk), "errors": len(chunk) - len(ok),
                        "p50_ms": s["p50_ms"], "p99_ms": s["p99_ms"],
                        "cache_share": sum(1 for o in chunk if o.served_by == "cache") / max(1, len(chunk)),
                        "faults": ",".join(faults)})
    growth = rss_growth(run["rss"], warm_t=min(duration_s / 2, max(duration_s / 5, 2 * cache_ttl_s)),
                        restart_warmup_s=max(60.0, 2 * cache_ttl_s))
    errors = [o for o in outcomes if o.error is not None]
    return {"requests": len(outcomes), "errors": len(errors), "error_samples": [o.error for o in errors[:5]],
            "windows": windows, "rss_growth_after_warmup": {r["process"]: r["growth"] for r in growth},
            "rss": growth, "rss_samples": run["rss"], "faults": run["faults"]}


def rss_growth(samples: list[dict], warm_t: float, restart_warmup_s: float = 60.0) -> list[dict]:
    """Per process, RSS growth of its last incarnation after warm-up: from ``warm_t``, or for a
    process restarted later, from ``restart_warmup_s`` after its restart. Judged as the median of
    the last quarter of those samples over the median of the first quarter (a torch worker's RSS
    swings ~15% with batch sizes, so two single samples would measure the swing); peaks are
    compared the same way."""
    rows = []
    if not samples:
        return rows
    for name, last in samples[-1]["procs"].items():
        if not last["rss"]:
            continue
        mine = [s for s in samples if s["procs"].get(name, {}).get("pid") == last["pid"] and s["procs"][name]["rss"]]
        born = mine[0]["t"]
        restarted = any(s["procs"].get(name, {}).get("pid") not in (None, last["pid"]) for s in samples)
        start_t = max(warm_t, born + restart_warmup_s) if restarted else warm_t
        after = [s["procs"][name]["rss"] for s in mine if s["t"] >= start_t]
        if len(after) < 8:
            continue
        quarter = len(after) // 4
        first, final = after[:quarter], after[-quarter:]
        rows.append({"process": name, "restarted_at_s": round(born, 1) if restarted else None,
                     "from_s": round(next(s["t"] for s in mine if s["t"] >= start_t), 1), "samples": len(after),
                     "rss_first_mib": float(np.median(first)) / 2**20, "rss_last_mib": float(np.median(final)) / 2**20,
                     "growth": float(np.median(final) / np.median(first) - 1),
                     "peak_growth": float(max(final) / max(first) - 1)})
    return rows


def redis_keys(address: str) -> int | None:
    """DBSIZE of the Redis at ``address``, or None when it does not answer."""
    reply = redis_reply(address, b"DBSIZE")
    return int(reply[1:].split(b"\r\n", 1)[0]) if reply and reply.startswith(b":") else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration-s", type=float, default=600)
    parser.add_argument("--fault-every-s", type=float, default=60)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--window-s", type=float, default=None, help="stats window (default: the fault period)")
    parser.add_argument("--threshold-ms", type=float, default=200)
    parser.add_argument("--cache-ttl-s", type=float, default=60,
                        help="cache TTL: Redis reaches its steady size after one TTL (warm-up is >= 2 TTLs)")
    parser.add_argument("--cloud-attempt-timeout-ms", type=float, default=1000,
                        help="the gateway's bound on one cloud attempt (a frozen worker costs this much)")
    parser.add_argument("--name", default="soak")
    parser.add_argument("--results-dir", type=Path, default=None, help="where the JSON goes (default bench/results)")
    args = parser.parse_args(argv)
    if not (MODEL_DIR / "model.json").exists():
        from edge_agent.build.pipeline import build_model_dir

        build_model_dir(MODEL_DIR)
    stack = Stack(Path(tempfile.mkdtemp(prefix="soak-")), args.threshold_ms, args.cache_ttl_s,
                  args.cloud_attempt_timeout_ms)
    try:
        run = asyncio.run(soak(stack, args.duration_s, args.fault_every_s, args.concurrency))
    finally:
        stack.stop()
    result = report(run, args.duration_s, args.window_s or args.fault_every_s, args.cache_ttl_s)
    print_table(result["windows"], f"soak: {args.duration_s:.0f}s at concurrency {args.concurrency}")
    print_table([{**{k: v for k, v in row.items() if k not in ("growth", "peak_growth")},
                  "growth_pct": row["growth"] * 100, "peak_growth_pct": row["peak_growth"] * 100}
                 for row in result["rss"]], "RSS growth after warm-up (last incarnation of each process; medians "
                                            "of the last vs the first quarter of the samples)")
    keys = [s["redis_keys"] for s in run["rss"] if s["redis_keys"] is not None]
    if keys:
        print(f"Redis keys: max {max(keys)}, at the end {keys[-1]}")
    print(f"\nrequests {result['requests']}, errors {result['errors']} {result['error_samples']}")
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    path = write_result(args.name, {"config": config, **result}, **({"results_dir": args.results_dir}
                                                                    if args.results_dir else {}))
    print(f"wrote {path}")
    print(json.dumps({"errors": result["errors"], "requests": result["requests"]}))
    return 0 if result["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
