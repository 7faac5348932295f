"""Result-cache benchmark: what a hit costs, how many hits a gateway serves, and what a frozen
Redis does to latency.

    python -m bench.cache [--requests 500] [--throughput-s 6] [--client-procs 2] [--freeze-s 3]

(a) Concurrency 1, interleaved request by request: a cache hit through the gateway (gRPC) on
    Redis (with its near cache, the default, and without it) and on the in-process LRU, a miss served by the edge (the same text with
    ``no_cache=true``), and the "floor": a bare Python grpc.aio server answering the same
    response from memory (what gRPC in Python costs on this machine at this moment, before any
    gateway or cache work); plus a bare redis-py GET.
(b) Concurrency 64, all hits, for a gateway on Redis (near cache on and off), one on the in-process LRU, and the floor
    server. The load comes from ``--client-procs`` processes (Python gRPC clients are expensive);
    CPU milliseconds per request of the clients, the server and Redis are reported.
(c) Concurrency 8, all hits, through the Redis gateway while Redis is frozen (SIGSTOP) for
    ``--freeze-s`` seconds, then resumed (SIGCONT): p50/p99, cache share and failures per 0.5 s
    bucket; the peak rise of p99 over the no-cache path's steady p99 (measured during the same
    freeze), how long p99 stayed above the worst steady no-cache bucket, and how soon hits return.
Every server (redis-server, edge, cloud, three gateways) runs in its own process, started by pid
and stopped by pid. Prints tables and writes bench/results/cache.json.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import numpy as np

from bench.common import cpu_seconds, print_table, summarize, write_result
from edgecloud.codec import serialize_bytes
from edgecloud_tools.stack import cloud_config, edge_config, free_port, gateway_config, launch, wait_ready
from protos import inference_pb2 as pb
from protos import inference_pb2_grpc as pb_grpc

MODEL_DIR = Path("models/all-MiniLM-L6-v2")
MODEL = "all-MiniLM-L6-v2"
SENTENCE = "The quick brown fox jumps over the lazy dog near the river bank"
HOT_TEXTS = [f"{SENTENCE} #{i}" for i in range(64)]


def request(text: str = SENTENCE, no_cache: bool = False) -> pb.ModelInferRequest:
    msg = pb.ModelInferRequest(model_name=MODEL)
    msg.inputs.add(name="text", datatype="BYTES", shape=[1])
    msg.raw_input_contents.append(serialize_bytes([text.encode()]))
    if no_cache:
        msg.parameters["no_cache"].bool_param = True
    return msg


# ---------------------------------------------------------------------------------------------
# redis-server


class RedisServer:
    def __init__(self, workdir: Path):
        self.port = free_port()
        self.log = open(workdir / "redis.log", "wb")
        self.proc = subprocess.Popen(
            [shutil.which("redis-server") or "/usr/bin/redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", str(workdir)],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not self._answers():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.stop()
                raise TimeoutError("redis-server did not start")
            time.sleep(0.05)

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"*1\r\n$4\r\nPING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def pause(self) -> None:
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.log.close()


# ---------------------------------------------------------------------------------------------
# the floor: a bare Python gRPC server answering a canned response (what any Python OIP server
# costs on this machine right now, before any gateway or cache work)


def _floor_server(port: int, body: bytes, ready) -> None:
    class Canned(pb_grpc.GRPCInferenceServiceServicer):
        async def ModelInfer(self, request, context):
            response = pb.ModelInferResponse.FromString(body)
            response.id = request.id
            response.parameters["served_by"].string_param = "floor"
            return response

    async def main() -> None:
        server = grpc.aio.server()
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(Canned(), server)
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        ready.set()
        await server.wait_for_termination()

    asyncio.run(main())


def start_floor_server(body: bytes):
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    port = free_port()
    proc = ctx.Process(target=_floor_server, args=(port, body, ready), daemon=True)
    proc.start()
    if not ready.wait(30):
        raise TimeoutError("the floor server did not start")
    return proc, f"127.0.0.1:{port}"


async def _canned_body(address: str) -> bytes:
    async with grpc.aio.insecure_channel(address) as channel:
        response = await pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request(no_cache=True), timeout=10)
    for name in ("served_by", "route_reason"):
        del response.parameters[name]
    return response.SerializeToString()


# ---------------------------------------------------------------------------------------------
# (a) hit vs miss at concurrency 1


async def concurrency_1(redis_gw: str, far_gw: str, lru_gw: str, floor: str, redis_url: str, n: int,
                        block_size: int = 10) -> dict:
    """Hits via Redis and via the LRU, a miss (``no_cache``, served by the edge) and the bare-gRPC
    floor, side by side: blocks of ``block_size`` requests per path, the paths in a rotating order
    (blocks keep each server warm as a steady client would; rotation spreads drift evenly);
    then bare redis-py GETs. Paired differences compare the i-th sample of two paths."""
    import redis.asyncio as aredis

    hit_msg, miss_msg = request(), request(no_cache=True)
    async with grpc.aio.insecure_channel(redis_gw) as a, grpc.aio.insecure_channel(lru_gw) as b, \
            grpc.aio.insecure_channel(floor) as c, grpc.aio.insecure_channel(far_gw) as d:
        stubs = {name: pb_grpc.GRPCInferenceServiceStub(ch)
                 for name, ch in (("redis", a), ("lru", b), ("floor", c), ("far", d))}
        for name in ("redis", "far", "lru"):
            await stubs[name].ModelInfer(hit_msg, timeout=10)
        await asyncio.sleep(0.2)
        for name in ("redis", "far", "lru"):
            warm = await stubs[name].ModelInfer(hit_msg, timeout=10)
            assert warm.parameters["served_by"].string_param == "cache", f"the {name} warm-up is not a hit"
        paths = [("hit_redis", stubs["redis"], hit_msg), ("hit_redis_no_near", stubs["far"], hit_msg),
                 ("hit_lru", stubs["lru"], hit_msg),
                 ("miss_edge", stubs["redis"], miss_msg), ("grpc_floor", stubs["floor"], hit_msg)]
        samples: dict[str, list[float]] = {name: [] for name, _, _ in paths}
        served: dict[str, set[str]] = {name: set() for name, _, _ in paths}
        for block in range((n + block_size - 1) // block_size + 1):  # the first round warms up
            k = block % len(paths)
            for name, stub, msg in paths[k:] + paths[:k]:
                for _ in range(block_size):
                    start = time.perf_counter()
                    response = await stub.ModelInfer(msg, timeout=10)
                    if block > 0:
                        samples[name].append(time.perf_counter() - start)
                        served[name].add(response.parameters["served_by"].string_param)
    client = aredis.Redis.from_url(redis_url)
    try:
        key = b"bench:reference"
        await client.set(key, warm.SerializeToString())
        gets = []
        for i in range(n + 50):
            start = time.perf_counter()
            await client.get(key)
            if i >= 50:
                gets.append(time.perf_counter() - start)
    finally:
        await client.aclose()
    out: dict = {name: summarize(values) for name, values in samples.items()}
    out["redis_get"] = summarize(gets)
    floor_s = np.array(samples["grpc_floor"])
    out["paired_p50_over_floor_ms"] = {name: float(np.percentile(np.array(samples[name]) - floor_s, 50) * 1000)
                                       for name in ("hit_redis", "hit_redis_no_near", "hit_lru")}
    out["served_by"] = {name: sorted(values) for name, values in served.items()}
    return out


# ---------------------------------------------------------------------------------------------
# (b) all hits at concurrency 64, load from several processes


async def hot_loop(stubs: list, msgs: list, concurrency: int, duration_s: float) -> tuple[int, int, list[float]]:
    """``concurrency`` closed-loop clients cycling ``msgs`` for ``duration_s``, client i on
    ``stubs[i % len(stubs)]``; returns (answered, errors, latencies in seconds)."""
    t0 = time.monotonic()
    latencies: list[float] = []
    errors = 0

    async def client(index: int) -> None:
        nonlocal errors
        stub = stubs[index % len(stubs)]
        n = index
        while time.monotonic() - t0 < duration_s:
            n += 1
            start = time.perf_counter()
            try:
                await stub.ModelInfer(msgs[n % len(msgs)], timeout=10)
                latencies.append(time.perf_counter() - start)
            except grpc.aio.AioRpcError:
                errors += 1

    await asyncio.gather(*(client(i) for i in range(concurrency)))
    return len(latencies), errors, latencies


def _client_process(address: str, concurrency: int, start_at: float, duration_s: float, out) -> None:
    async def main() -> tuple[int, int, list[float]]:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            msgs = [request(t) for t in HOT_TEXTS]
            for msg in msgs[:8]:
                await stub.ModelInfer(msg, timeout=10)
            await asyncio.sleep(max(0.0, start_at - time.time()))
            return await hot_loop([stub], msgs, concurrency, duration_s)

    cpu0 = time.process_time()
    ok, errors, latencies = asyncio.run(main())
    out.put((ok, errors, latencies[::4], time.process_time() - cpu0))


def throughput(address: str, gateway_pid: int, redis_pid: int | None, procs: int, concurrency: int,
               duration_s: float) -> dict:
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    start_at = time.time() + 3.0  # time for the clients to import and warm up
    per_proc = [concurrency // procs + (1 if i < concurrency % procs else 0) for i in range(procs)]
    workers = [ctx.Process(target=_client_process, args=(address, c, start_at, duration_s, out)) for c in per_proc]
    for w in workers:
        w.start()
    time.sleep(max(0.0, start_at - time.time()))
    g0 = cpu_seconds(gateway_pid)
    r0 = cpu_seconds(redis_pid) if redis_pid else 0.0
    results = [out.get(timeout=duration_s + 60) for _ in workers]
    g1 = cpu_seconds(gateway_pid)
    r1 = cpu_seconds(redis_pid) if redis_pid else 0.0
    for w in workers:
        w.join(timeout=10)
    ok = sum(r[0] for r in results)
    latencies = [x for r in results for x in r[2]]
    client_cpu = sum(r[3] for r in results)
    return {"requests_per_s": ok / duration_s, **summarize(latencies),
            "errors": sum(r[1] for r in results), "client_procs": procs,
            "gateway_cpu_ms_per_req": (g1 - g0) * 1000 / max(ok, 1),
            "redis_cpu_ms_per_req": (r1 - r0) * 1000 / max(ok, 1),
            "client_cpu_ms_per_req": client_cpu * 1000 / max(ok, 1)}


# ---------------------------------------------------------------------------------------------
# (c) Redis frozen mid-run


async def frozen_run(address: str, redis: RedisServer, duration_s: float, freeze_at: float, freeze_s: float,
                     concurrency: int) -> list[tuple]:
    outcomes: list[tuple] = []
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        msgs = [request(t) for t in HOT_TEXTS[:16]]
        for msg in msgs:  # warm: every text is an entry
            await stub.ModelInfer(msg, timeout=10)
        await asyncio.sleep(0.2)
        t0 = time.monotonic()

        async def client(index: int) -> None:
            n = index
            while time.monotonic() - t0 < duration_s:
                n += 1
                start = time.monotonic()
                try:
                    response = await stub.ModelInfer(msgs[n % len(msgs)], timeout=10)
                    outcomes.append((start - t0, time.monotonic() - start,
                                     response.parameters["served_by"].string_param, None))
                except grpc.aio.AioRpcError as exc:
                    outcomes.append((start - t0, time.monotonic() - start, None, exc.code().name))

        async def faults() -> None:
            await asyncio.sleep(freeze_at)
            redis.pause()
            try:
                await asyncio.sleep(freeze_s)
            finally:
                redis.resume()

        await asyncio.gather(faults(), *(client(i) for i in range(concurrency)))
    return outcomes


def buckets(outcomes: list[tuple], duration_s: float, width: float = 0.5) -> list[dict]:
    rows = []
    for k in range(int(duration_s / width)):
        lo, hi = k * width, (k + 1) * width
        inside = [o for o in outcomes if lo <= o[0] < hi]
        ok = [o for o in inside if o[3] is None]
        s = summarize([o[1] for o in ok])
        rows.append({"t_s": lo, "n": len(inside), "p50_ms": s["p50_ms"], "p99_ms": s["p99_ms"],
                     "cache_share": sum(o[2] == "cache" for o in ok) / max(1, len(ok)),
                     "failed": len(inside) - len(ok)})
    return rows


def freeze_summary(rows: list[dict], outcomes: list[tuple], freeze_at: float, freeze_s: float) -> dict:
    """How a frozen Redis shows at the client. The no-cache path's steady latency is measured in
    the same run (requests that started 1 s or more after the freeze, until it ends); a bucket is
    "elevated" when its p99 exceeds the worst steady no-cache bucket."""
    resume_at = freeze_at + freeze_s
    ok = [o for o in outcomes if o[3] is None]
    steady = [r for r in rows if freeze_at + 1.0 <= r["t_s"] < resume_at]
    no_cache_p99 = summarize([o[1] for o in ok if freeze_at + 1.0 <= o[0] < resume_at])["p99_ms"]
    steady_worst = max((r["p99_ms"] for r in steady), default=float("nan"))
    first_second = [r for r in rows if freeze_at <= r["t_s"] < freeze_at + 1.0]
    peak = max((r["p99_ms"] for r in first_second), default=float("nan"))
    elevated = [r for r in rows if freeze_at <= r["t_s"] < resume_at and r["p99_ms"] > steady_worst]
    back = [r["t_s"] for r in rows if r["t_s"] >= resume_at and r["cache_share"] >= 0.9]
    return {"requests": len(outcomes), "failed": len(outcomes) - len(ok),
            "p99_hits_before_ms": summarize([o[1] for o in ok if o[0] < freeze_at])["p99_ms"],
            "p99_no_cache_ms": no_cache_p99, "p99_first_second_peak_ms": peak,
            "p99_rise_ms": peak - no_cache_p99,
            "p99_elevated_s": max((r["t_s"] + 0.5 - freeze_at for r in elevated), default=0.0),
            "hits_again_after_s": (back[0] + 0.5 - resume_at) if back else None}


# ---------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=500, help="requests per path at concurrency 1")
    parser.add_argument("--throughput-s", type=float, default=6.0)
    parser.add_argument("--client-procs", type=int, default=2)
    parser.add_argument("--freeze-at", type=float, default=3.0)
    parser.add_argument("--freeze-s", type=float, default=3.0)
    parser.add_argument("--freeze-run-s", type=float, default=10.0)
    parser.add_argument("--freeze-concurrency", type=int, default=8)
    parser.add_argument("--probe-interval-ms", type=float, default=1000.0)
    args = parser.parse_args()
    if not (MODEL_DIR / "model.json").exists():
        from edge_agent.build.pipeline import build_model_dir

        build_model_dir(MODEL_DIR)

    workdir = Path(tempfile.mkdtemp(prefix="bench-cache-"))
    services = []
    floor_proc = None
    redis = RedisServer(workdir)
    try:
        edge = launch("edge", edge_config(MODEL_DIR.resolve(), free_port(), threads=1), workdir)
        cloud = launch("cloud", cloud_config(free_port(), threads=1), workdir)
        services += [edge, cloud]
        # Probes every second, not every 200 ms: on this machine the cloud worker's probes (torch
        # on CPU, ~30 ms each, two gateways) would otherwise tax the cores every phase measures.
        routing = {"probe_interval_ms": args.probe_interval_ms}
        gw_redis_cfg = gateway_config(free_port(), edge.address, [cloud.address], routing=routing)
        gw_redis_cfg["cache"] = {"enabled": True, "redis": {"url": redis.url}}
        gw_lru_cfg = gateway_config(free_port(), edge.address, [cloud.address], routing=routing)
        gw_lru_cfg["cache"] = {"enabled": True}
        gw_redis = launch("gateway", gw_redis_cfg, workdir, name="gateway-redis")
        gw_lru = launch("gateway", gw_lru_cfg, workdir, name="gateway-lru")
        gw_far_cfg = gateway_config(free_port(), edge.address, [cloud.address], routing=routing)
        gw_far_cfg["cache"] = {"enabled": True, "redis": {"url": redis.url}, "near": {"enabled": False}}
        gw_far = launch("gateway", gw_far_cfg, workdir, name="gateway-redis-no-near")
        services += [gw_redis, gw_lru, gw_far]
        for service in services:
            wait_ready(service, 120)

        floor_proc, floor = start_floor_server(asyncio.run(_canned_body(gw_redis.address)))

        background = [edge.pid, cloud.pid]
        bg0, wall0 = sum(cpu_seconds(pid) for pid in background), time.monotonic()
        print(f"(a) concurrency 1: {args.requests} requests each, Redis hit / LRU hit / edge miss / bare-gRPC floor, "
              "in rotating blocks of 10")
        c1 = asyncio.run(concurrency_1(gw_redis.address, gw_far.address, gw_lru.address, floor, redis.url,
                                       args.requests))
        print_table([{"path": name, **c1[name]} for name in ("hit_redis", "hit_redis_no_near", "hit_lru", "miss_edge",
                                                                  "grpc_floor", "redis_get")],
                    "latency, concurrency 1 (ms)")
        print("over the floor, paired p50 (ms): " +
              ", ".join(f"{k} {v:.3f}" for k, v in c1["paired_p50_over_floor_ms"].items()))

        print(f"\n(b) concurrency 64, all hits, {args.throughput_s:.0f} s each, {args.client_procs} client processes")
        thr = {}
        for name, address, pid, redis_pid in (("redis", gw_redis.address, gw_redis.pid, redis.proc.pid),
                                              ("redis_no_near", gw_far.address, gw_far.pid, redis.proc.pid),
                                              ("lru", gw_lru.address, gw_lru.pid, None),
                                              ("grpc_floor", floor, floor_proc.pid, None)):
            asyncio.run(_warm(address))
            thr[name] = throughput(address, pid, redis_pid, args.client_procs, 64, args.throughput_s)
        floor_proc.terminate()
        floor_proc.join(10)
        print_table([{"server": name, **row} for name, row in thr.items()], "throughput, concurrency 64, all hits")

        background_cores = (sum(cpu_seconds(pid) for pid in background) - bg0) / (time.monotonic() - wall0)
        print(f"\nbackground: the edge and cloud processes (probes) used {background_cores:.2f} cores during (a)+(b)")

        print(f"\n(c) Redis frozen at t={args.freeze_at:.1f}s for {args.freeze_s:.1f}s, "
              f"concurrency {args.freeze_concurrency}")
        outcomes = asyncio.run(frozen_run(gw_redis.address, redis, args.freeze_run_s, args.freeze_at, args.freeze_s,
                                          args.freeze_concurrency))
        rows = buckets(outcomes, args.freeze_run_s)
        print_table(rows, "per 0.5 s bucket")
        freeze = freeze_summary(rows, outcomes, args.freeze_at, args.freeze_s)
        print_table([freeze], "frozen Redis")
        breaker_log = [line.split(" cache: ", 1)[1].strip() for line in gw_redis.log_path.read_text().splitlines()
                       if "cache: breaker" in line]

        targets = {
            "hit_p50_ms<=0.8": c1["hit_redis"]["p50_ms"] <= 0.8,
            "hits_c64_redis_req_per_s>=4000": thr["redis"]["requests_per_s"] >= 4000,
            "hit_redis_paired_p50_over_floor_ms<=0.2": c1["paired_p50_over_floor_ms"]["hit_redis"] <= 0.2,
            "hits_c64_redis_x_floor>=0.6":
                thr["redis"]["requests_per_s"] >= 0.6 * thr["grpc_floor"]["requests_per_s"],
            "frozen_zero_failed": freeze["failed"] == 0,
            "frozen_p99_rise_ms<=60": freeze["p99_rise_ms"] <= 60,
            "frozen_p99_elevated_s<=1": freeze["p99_elevated_s"] <= 1.0,
        }
        print_table([{"target": k, "met": v} for k, v in targets.items()], "targets")
        path = write_result("cache", {"concurrency_1": c1, "throughput_c64": thr, "frozen_redis": freeze,
                                      "frozen_buckets": rows, "breaker_log": breaker_log,
                                      "background_cores": background_cores,
                                      "targets": targets, "config": vars(args),
                                      "load_average": os.getloadavg()})
        print(f"\nwrote {path}")
        return 0
    finally:
        if floor_proc is not None and floor_proc.is_alive():
            floor_proc.terminate()
            floor_proc.join(10)
        for service in reversed(services):
            service.stop()
        redis.stop()


async def _warm(address: str) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        for text in HOT_TEXTS:
            await stub.ModelInfer(request(text), timeout=10)
    await asyncio.sleep(0.2)


if __name__ == "__main__":
    sys.exit(main())
