"""Cloud worker benchmark: dynamic batching on vs off over real gRPC, against the pure-compute ceiling.

    python -m bench.cloud [--seconds 2.5] [--rounds 3] [--concurrency 1 8 64] [--threads 2]
                          [--encoders torchscript eager] [--instances auto 1 2]

Everything heavy runs in spawned child processes, so the load generator (this process, closed-loop
``grpc.aio`` clients sending pre-serialised one-sentence requests of 13 tokens) neither starves nor
is starved by them: two cloud workers (batching on and off, otherwise identical) and two
pure-compute processes that call the same runtime directly at batch 1 and batch 32, no server, one
with passive OpenMP and one with torch's default (spin), so the ceiling is
the better of the two (each compute process tokenizes serially, as the worker does, and keeps
glibc's dynamic mmap threshold, which settles where the worker's fixed 32 MiB is), and a floor
(``bench.cloud_floor``): a minimal grpc.aio server batching the same runtime greedily, with the least
Python around it, so the worker's gap to the ceiling splits into what any server on this machine pays
(the floor's own gap) and what is the worker's.
``--instances`` (``runtime.instances``: batches that run at once, each on
``threads / instances`` torch threads; ``auto``, the worker's default: one batch on every thread
while it is all the work there is, two on half the threads each while batches queue) adds a worker
pair per value and a pair of compute processes per count (``auto`` has none: its layouts are
those of 1 and 2); a compute process with several instances calls the runtime from that many
threads at once, and the ceilings are the best of every thread layout measured. The floor runs the
first count given. Configurations are interleaved round by
round, in alternating order (the machine is shared and noisy), so every figure comes from the same
minutes; concurrency 1 is also measured request by request in turn (a bare gRPC round trip, worker
on, worker off), which shows what batching costs a lone request and the transport's floor. ``--encoders`` runs that whole set
once per ``runtime.encoder`` in the same interleaved rounds (an A/B of the scripted encoder against
the eager one); the targets are for the first. Prints a table and writes ``bench/results/cloud.json``.

Targets (2-core CPU): at concurrency 64 batching on gives >= 2.5x the throughput of batching off
and >= 85% of the batch-32 ceiling; at concurrency 1 the p50 latency is within 1.5 ms of the
batch-1 compute p50.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import time
from dataclasses import dataclass, field

import grpc
import numpy as np

from bench.cloud_floor import serve_floor
from bench.common import print_table, ratio, summarize, write_result
from edgecloud.codec import serialize_bytes

MODEL = "all-MiniLM-L6-v2"
INFER_METHOD = "/inference.GRPCInferenceService/ModelInfer"
LIVE_METHOD = "/inference.GRPCInferenceService/ServerLive"
TOKENS = 13
START_TIMEOUT_S = 300

_SUBJECTS = ["The cloud worker", "A small model", "The edge agent", "Our gateway", "The batcher", "This service",
             "A busy client", "The new router"]
_VERBS = ["answers requests", "embeds short sentences", "keeps latency low", "handles many users",
          "serves every query", "returns vectors"]
_TAILS = ["within a few milliseconds", "during the busy evening", "on two tiny cores", "without dropping anything",
          "for the whole team today", "across the quiet network"]


def sentences(tokenizer, count: int = 64, tokens: int = TOKENS) -> list[str]:
    """``count`` distinct sentences of exactly ``tokens`` tokens ([CLS] and [SEP] included)."""
    pool = [f"{a} {b} {c}." for a in _SUBJECTS for b in _VERBS for c in _TAILS]
    chosen = [text for text, n in zip(pool, tokenizer.token_counts(pool)) if n == tokens]
    if len(chosen) < count:
        raise RuntimeError(f"only {len(chosen)} sentences of {tokens} tokens")
    return chosen[:count]


def bench_sentences() -> list[str]:
    from edgecloud.reference_model import tokenizer_file
    from edgecloud.tokenization import TextTokenizer

    return sentences(TextTokenizer.from_file(tokenizer_file(), 256))


def worker_config(batching: bool, threads: int, omp: str = "brief", encoder: str = "torchscript",
                  instances: int | str = 1) -> dict:
    per_instance = threads if instances == "auto" else max(1, threads // int(instances))
    return {
        "server": {"host": "127.0.0.1", "port": 0, "metrics_port": None, "grace_s": 1.0},
        "runtime": {"device": "cpu", "intra_op_threads": per_instance, "instances": instances,
                    "openmp_wait_policy": omp, "encoder": encoder},
        "batching": {"enabled": batching, "max_batch_size": 32, "max_queue_delay_us": 2000},
    }


# ---------------------------------------------------------------------------------------------
# child processes


def _serve_process(config: dict, ready: multiprocessing.Queue) -> None:
    """One cloud worker until SIGTERM; puts its port on ``ready``."""
    from cloud_worker.config import CloudConfig
    from cloud_worker.main import serve
    from edgecloud.lifecycle import configure_logging

    configure_logging("WARNING")
    asyncio.run(serve(CloudConfig.model_validate(config), ready=lambda worker: ready.put(worker.port)))


def _compute_process(policy: str, threads: int, encoder: str, instances: int, conn) -> None:
    """The runtime called directly from ``instances`` threads at once, each with ``threads /
    instances`` torch threads: answers ``(batch, seconds)`` with (latencies, items, elapsed);
    ``seconds`` 0 makes exactly one call per thread."""
    if policy == "default":
        os.environ.pop("OMP_WAIT_POLICY", None)
    else:
        os.environ["OMP_WAIT_POLICY"] = policy.upper()
    from concurrent.futures import ThreadPoolExecutor

    from cloud_worker.main import keep_tokenizers_serial

    keep_tokenizers_serial()  # as the worker does: the ceiling is not handicapped by the tokenizer's pool

    from cloud_worker.config import RuntimeSettings
    from cloud_worker.reference import ReferenceRuntime

    settings = RuntimeSettings(device="cpu", intra_op_threads=max(1, threads // instances), instances=instances,
                               encoder=encoder)
    runtime = ReferenceRuntime(settings=settings, max_rows=32)

    def calls(batch: int, stop_at: float, offset: int) -> list[float]:
        latencies = []
        index = offset
        while True:
            chunk = [texts[(index + i) % len(texts)] for i in range(batch)]
            start = time.perf_counter()
            runtime.embed(chunk)
            latencies.append(time.perf_counter() - start)
            index += batch
            if time.perf_counter() >= stop_at:
                return latencies

    with ThreadPoolExecutor(instances) as pool:  # like the worker's instance threads, one of which loads
        pool.submit(runtime.load).result()  # (OpenMP keeps a thread team per calling thread)
        texts = sentences(runtime.tokenizer)
        conn.send("ready")
        while (job := conn.recv()) is not None:
            batch, seconds = job
            begin = time.perf_counter()
            parts = list(pool.map(calls, [batch] * instances, [begin + seconds] * instances,
                                  [7 * i for i in range(instances)]))
            latencies = [latency for part in parts for latency in part]
            conn.send((latencies, len(latencies) * batch, time.perf_counter() - begin))
    runtime.close()


# ---------------------------------------------------------------------------------------------
# measuring


@dataclass
class Series:
    """One configuration's samples, accumulated over rounds."""

    latencies: list[float] = field(default_factory=list)
    items: int = 0
    elapsed: float = 0.0
    errors: int = 0

    @property
    def throughput(self) -> float:
        return self.items / self.elapsed if self.elapsed else 0.0

    def row(self, name: str, **extra) -> dict:
        stats = summarize(self.latencies)
        return {"config": name, **extra, "throughput_per_s": self.throughput, "p50_ms": stats["p50_ms"],
                "p99_ms": stats["p99_ms"], "n": stats["n"], "errors": self.errors}


async def load_segment(channel: grpc.aio.Channel, requests: list[bytes], concurrency: int, seconds: float,
                       series: Series) -> None:
    """Closed loop: ``concurrency`` clients each send, await the answer, send again, for ``seconds``."""
    call = channel.unary_unary(INFER_METHOD)  # bytes in, bytes out: the client costs as little as it can
    stop_at = time.perf_counter() + seconds
    done = 0

    async def client(offset: int) -> None:
        nonlocal done
        index = offset
        while time.perf_counter() < stop_at:
            start = time.perf_counter()
            try:
                await call(requests[index % len(requests)], timeout=60)
            except grpc.aio.AioRpcError:
                series.errors += 1
                continue
            series.latencies.append(time.perf_counter() - start)
            done += 1
            index += concurrency

    begin = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(concurrency)))
    series.elapsed += time.perf_counter() - begin
    series.items += done


async def paired_segment(channels: dict[str, grpc.aio.Channel], requests: list[bytes], seconds: float,
                         series: dict[str, Series]) -> None:
    """Concurrency 1, request by request in turn: a bare gRPC round trip (ServerLive), then one
    request to each worker, so their p50s come from the same moments of a noisy machine."""
    calls = {name: channel.unary_unary(INFER_METHOD) for name, channel in channels.items()}
    live = next(iter(channels.values())).unary_unary(LIVE_METHOD)
    stop_at = time.perf_counter() + seconds
    index = 0
    while time.perf_counter() < stop_at:
        start = time.perf_counter()
        await live(b"", timeout=60)  # the gRPC round trip alone: the floor of what a server adds
        series["rtt"].latencies.append(time.perf_counter() - start)
        for name, call in calls.items():
            start = time.perf_counter()
            await call(requests[index % len(requests)], timeout=60)
            elapsed = time.perf_counter() - start
            series[name].latencies.append(elapsed)
            series[name].items += 1
            series[name].elapsed += elapsed
        index += 1


async def compute_segment(conn, batch: int, seconds: float, series: Series) -> None:
    conn.send((batch, seconds))
    latencies, items, elapsed = await asyncio.to_thread(conn.recv)
    series.latencies.extend(latencies)
    series.items += items
    series.elapsed += elapsed


def encoded_requests(texts: list[str]) -> list[bytes]:
    from protos import inference_pb2 as pb

    out = []
    for text in texts:
        msg = pb.ModelInferRequest(model_name=MODEL)
        msg.inputs.add(name="text", datatype="BYTES", shape=[1])
        msg.raw_input_contents.append(serialize_bytes([text.encode()]))
        out.append(msg.SerializeToString())
    return out


async def served_embedding(channel: grpc.aio.Channel, request: bytes) -> np.ndarray:
    from protos import inference_pb2 as pb

    response = pb.ModelInferResponse.FromString(await channel.unary_unary(INFER_METHOD)(request, timeout=60))
    return np.frombuffer(response.raw_output_contents[0], dtype="<f4").reshape(tuple(response.outputs[0].shape))


# ---------------------------------------------------------------------------------------------
# the run


async def main_async(args) -> dict:
    ctx = multiprocessing.get_context("spawn")
    encoders = list(dict.fromkeys(args.encoders))
    layouts = list(dict.fromkeys(args.instances))
    # worker variants "encoder/omp/iN": the first is the one the targets are for
    variants = [f"{encoder}/{omp}/i{instances}" for instances in layouts for encoder in encoders
                for omp in dict.fromkeys(args.worker_omp)]
    counts = [instances for instances in layouts if instances != "auto"] or [1]
    computes = [f"{encoder}/i{instances}" for instances in dict.fromkeys(counts + [1, 2]) for encoder in encoders]
    primary = variants[0]
    children = []
    ports = {}
    pipes = {}
    channels: dict[str, grpc.aio.Channel] = {}  # "on torchscript/brief", "off eager/passive", ...
    try:
        for variant in variants:
            encoder, omp, instances = variant.split("/")
            for mode, batching in (("on", True), ("off", False)):
                key = f"{mode} {variant}"
                ports[key] = ctx.Queue()
                config = worker_config(batching, args.threads, omp, encoder, _instances(instances))
                children.append(ctx.Process(target=_serve_process, daemon=True, args=(config, ports[key])))
        floor = f"floor {primary}"
        encoder, omp, _ = primary.split("/")
        ports[floor] = ctx.Queue()
        children.append(ctx.Process(target=serve_floor, daemon=True,
                                    args=(args.threads, int(counts[0]), omp, encoder, ports[floor])))
        for compute in computes:
            encoder, instances = compute.split("/")
            for policy in ("passive", "default"):
                parent, child = ctx.Pipe()
                pipes[f"{policy} {compute}"] = parent
                children.append(ctx.Process(target=_compute_process, daemon=True,
                                            args=(policy, args.threads, encoder, int(instances[1:]), child)))
        for process in children:
            process.start()
        for key, ready in ports.items():
            port = await asyncio.to_thread(ready.get, True, START_TIMEOUT_S)
            channels[key] = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        for pipe in pipes.values():
            if not await asyncio.to_thread(pipe.poll, START_TIMEOUT_S) or pipe.recv() != "ready":
                raise RuntimeError("a compute process did not start")

        texts = bench_sentences()
        requests = encoded_requests(texts)
        served = {key: await served_embedding(channel, requests[0]) for key, channel in channels.items()}

        paired = {"rtt": Series(), **{key: Series() for key in channels}}

        async def segment(name: str, seconds: float, into: Series | None) -> None:
            kind, what, arg, encoder = name.split()
            if kind == "paired":
                await paired_segment(channels, requests, seconds,
                                     paired if into is not None else {k: Series() for k in paired})
            elif kind == "compute":
                await compute_segment(pipes[f"{arg} {encoder}"], int(what[1:]), seconds, into)
            else:  # "encoder" is a variant here
                await load_segment(channels[f"{what} {encoder}"], requests, int(arg[1:]), seconds, into)

        plan = [f"compute b{batch} {policy} {compute}" for compute in computes for batch in (1, 32)
                for policy in ("passive", "default")]
        plan += [f"batching {mode} c{conc} {variant}" for conc in args.concurrency for variant in variants
                 for mode in ("on", "off")]
        plan += [f"batching floor c{conc} {primary}" for conc in args.concurrency]
        plan.append("paired c1 in-turn all")
        for name in plan:  # warm-up, unrecorded
            await segment(name, min(1.0, args.seconds), None if name.startswith("paired") else Series())
        series = {name: Series() for name in plan}
        for round_index in range(args.rounds):
            for name in plan if round_index % 2 == 0 else reversed(plan):
                await segment(name, args.seconds, series[name])
            print(f"round {round_index + 1}/{args.rounds} done", flush=True)
    finally:
        for channel in channels.values():
            await channel.close()
        for pipe in pipes.values():
            try:
                pipe.send(None)
            except OSError:
                pass
        for process in children:
            if process.is_alive():
                process.terminate()
        for process in children:
            process.join(timeout=30)

    rows = []
    for compute in computes:
        for batch in (1, 32):
            for policy in ("passive", "default"):
                rows.append(series[f"compute b{batch} {policy} {compute}"].row(
                    f"compute ({policy} omp)", encoder=compute, batch=batch, concurrency="-"))
    for conc in args.concurrency:
        for variant in variants:
            for mode in ("on", "off"):
                rows.append(series[f"batching {mode} c{conc} {variant}"].row(
                    f"batching {mode}", encoder=variant, batch="dyn" if mode == "on" else 1, concurrency=conc))
    for conc in args.concurrency:
        rows.append(series[f"batching floor c{conc} {primary}"].row(
            "floor (minimal server)", encoder=primary, batch="dyn", concurrency=conc))
    for variant in variants:
        for mode in ("on", "off"):
            rows.append(paired[f"{mode} {variant}"].row(f"batching {mode}, in turn", encoder=variant,
                                                        batch="dyn" if mode == "on" else 1, concurrency="1 in turn"))
    rows.append(paired[f"floor {primary}"].row("floor, in turn", encoder=primary, batch="dyn", concurrency="1 in turn"))

    def best(batch: int, key: str, encoder: str):
        """The best in-process figure for ``encoder`` over OpenMP policies and thread layouts."""
        candidates = [series[f"compute b{batch} {policy} {compute}"] for policy in ("passive", "default")
                      for compute in computes if compute.startswith(f"{encoder}/")]
        if key == "throughput":
            return max(s.throughput for s in candidates)
        return min(summarize(s.latencies)["p50_ms"] for s in candidates)

    def p50(samples: Series) -> float:
        return summarize(samples.latencies)["p50_ms"]

    top = max(args.concurrency)
    targets = {}
    for variant in variants:
        encoder = variant.split("/")[0]
        tag = "" if variant == primary else f" [{variant}]"
        on_top, off_top = series[f"batching on c{top} {variant}"], series[f"batching off c{top} {variant}"]
        targets[f"on/off throughput at c{top} (>= 2.5){tag}"] = ratio(on_top.throughput, off_top.throughput)
        targets[f"on c{top} / best compute b32 throughput (>= 0.85){tag}"] = ratio(
            on_top.throughput, best(32, "throughput", encoder))
        if 1 in args.concurrency:
            targets[f"on c1 p50 - best compute b1 p50, ms (<= 1.5){tag}"] = (
                p50(series[f"batching on c1 {variant}"]) - best(1, "p50", encoder))
            targets[f"off c1 p50 - best compute b1 p50, ms{tag}"] = (
                p50(series[f"batching off c1 {variant}"]) - best(1, "p50", encoder))
        targets[f"in turn: on p50 - off p50, ms{tag}"] = p50(paired[f"on {variant}"]) - p50(paired[f"off {variant}"])
    floor_top = series[f"batching floor c{top} {primary}"]
    targets[f"floor c{top} / best compute b32 throughput (what a minimal server attains here)"] = ratio(
        floor_top.throughput, best(32, "throughput", primary.split("/")[0]))
    targets[f"on c{top} / floor c{top} throughput"] = ratio(
        series[f"batching on c{top} {primary}"].throughput, floor_top.throughput)
    if 1 in args.concurrency:
        targets["floor c1 p50 - best compute b1 p50, ms"] = (p50(series[f"batching floor c1 {primary}"])
                                                             - best(1, "p50", primary.split("/")[0]))
    targets["in turn: bare gRPC round trip (ServerLive) p50, ms"] = p50(paired["rtt"])
    for variant in variants[1:]:
        targets[f"on c{top}: {primary} / {variant} throughput"] = ratio(
            series[f"batching on c{top} {primary}"].throughput, series[f"batching on c{top} {variant}"].throughput)
        targets[f"in turn: on p50, {primary} - {variant}, ms"] = (p50(paired[f"on {primary}"])
                                                                  - p50(paired[f"on {variant}"]))
    reference = served[f"on {primary}"]
    return {
        "rows": rows,
        "targets": targets,
        "served_vs_primary_on_max_abs_diff": {key: float(np.abs(value - reference).max())
                                              for key, value in served.items()},
        "embedding_norm": float(np.linalg.norm(reference)),
        "settings": {"seconds_per_segment": args.seconds, "rounds": args.rounds, "threads": args.threads,
                     "sentence_tokens": TOKENS, "variants": variants,
                     "worker_on": worker_config(True, args.threads, *_variant_settings(primary)),
                     "worker_off": worker_config(False, args.threads, *_variant_settings(primary))},
    }


def _variant_settings(variant: str) -> tuple[str, str, int | str]:
    """``worker_config``'s (omp, encoder, instances) of a variant ``encoder/omp/iN`` (or ``iauto``)."""
    encoder, omp, instances = variant.split("/")
    return omp, encoder, _instances(instances)


def _instances(tag: str) -> int | str:
    """``runtime.instances`` of a variant's ``iN`` / ``iauto`` part."""
    return "auto" if tag == "iauto" else int(tag[1:])


def _instances_arg(text: str) -> int | str:
    if text == "auto":
        return text
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected auto or a count of at least 1")
    return int(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cloud", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.5, help="length of one measured segment")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds over all configurations")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1), help="torch intra-op threads")
    parser.add_argument("--encoders", nargs="+", choices=["torchscript", "eager"], default=["torchscript"],
                        help="runtime.encoder of the workers and compute processes; the first is the one the "
                             "targets are for, the others are measured beside it in the same rounds (A/B)")
    parser.add_argument("--worker-omp", nargs="+", choices=["brief", "passive", "active", "inherit"],
                        default=["brief"], help="the workers' runtime.openmp_wait_policy; several are measured "
                                                "side by side (every encoder with every policy), all alive at once, "
                                                "so a policy that spins while idle (active) skews the others: "
                                                "compare policies with bench.cloud_omp")
    parser.add_argument("--instances", type=_instances_arg, nargs="+", default=["auto", 1, 2],
                        help="runtime.instances of the workers (auto, or a count: threads / instances torch threads "
                             "each), and the counts' thread layouts (always 1 and 2) in the compute processes; the "
                             "first is the one the targets are for")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    result = asyncio.run(main_async(args))
    result["wall_s"] = time.perf_counter() - started
    print_table(result["rows"], title="cloud worker over gRPC (batching on/off) vs the runtime called directly; "
                                      "per-request latency")
    print_table([{"target": k, "value": v} for k, v in result["targets"].items()], title="targets")
    diff = max(result["served_vs_primary_on_max_abs_diff"].values())
    print(f"served embeddings, max |diff| across workers = {diff:.2e}; wall {result['wall_s']:.0f} s")
    print(f"wrote {write_result('cloud', result)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
