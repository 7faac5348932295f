"""Text generation, edge vs cloud and continuous batching vs one at a time, over real gRPC streams.

    python -m bench.generate [--model-dir models/smollm2-135m-instruct] [--requests 8] [--max-tokens 64]
                             [--per-client 2] [--min-requests 8] [--concurrency 1 4 16] [--quick]

What it measures, side by side in one run. Three servers run in spawned child processes (started
together, then driven strictly one at a time, so each measurement has the machine to itself; an
idle server sleeps): the edge agent (``EdgeServer``, the model directory's INT4 onnxruntime-genai
variant, ``intra_op_threads`` 2) and two cloud workers (``CloudWorker``, the FP32 torch checkpoint,
``GenerativeModelSpec`` ``max_batch_size`` 16 = continuous batching, and 1 = one request at a time,
otherwise identical). This process is the load generator: ``grpc.aio`` clients, one
``ModelStreamInfer`` stream per request, requests serialised before the clock starts, greedy
decoding (``temperature`` 0), prompts chat-rendered (``<|im_start|>user ... <|im_start|>assistant``)
and distinct, ~30 tokens each, asking for long answers so that most generations run to
``max_tokens`` (token counts always come from the server's ``completion_tokens``).

1. Edge vs cloud (batching worker) at concurrency 1, requests alternating between the two:
   TTFT (send -> first response with text), inter-token latency (gaps between consecutive
   responses after the first), decode tokens/s per request ((completion_tokens - 1) / (last response
   - first text response)); then the edge process's RSS (/proc/PID/status VmRSS) and the edge
   model's size (bytes of the INT4 directory) against the FP32 checkpoint (its safetensors bytes).
2. Cloud continuous batching vs one at a time at each concurrency (closed loop: every client sends
   its next request as soon as the last one finished). Warm-up: each client's first request, whose
   ``max_tokens`` is staggered (client i of c asks for (i+1)/c of the length), so clients reach the
   steady state out of phase instead of in lock step. The measured window opens when every client
   has finished its warm-up and closes once every client has finished ``--per-client`` more requests
   and all of them at least ``--min-requests`` (every client stays busy all along); requests still
   running then are cancelled. Total tokens/s = completion tokens delivered inside the window (each
   response of a request weighted completion_tokens / responses) / window length; TTFT p50/p99
   over the requests sent inside the window that got text (a request cancelled before its first
   token is not a sample), and inter-token latency (a decode step with everyone running, and the
   prefills that cut in). Ratios: batching / one-at-a-time tokens/s at
   each concurrency, and batching's TTFT p99 at the top concurrency / at concurrency 1.

Targets (2-core CPU, printed met/MISS): edge TTFT p50 <= 150 ms; edge decode >= 30 tokens/s; edge
model <= 35% of the FP32 checkpoint; cloud batching at c=16 >= 3x the tokens/s of one at a time,
with its TTFT p99 at c=16 <= 2x its c=1 value. Prints tables and writes
``bench/results/generate.json``. ``--quick`` (a smoke test: 2 requests, 8 tokens, concurrency 1 and 4)
proves the plumbing, not the targets. Every server stops at the end, on error and on Ctrl-C too
(and on its own if this process dies).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import shlex
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np

from bench.common import RESULTS_DIR, print_table, ratio, summarize, write_result

DEFAULT_MODEL_DIR = Path("models/smollm2-135m-instruct")
STREAM_METHOD = "/inference.GRPCInferenceService/ModelStreamInfer"
START_TIMEOUT_S = 300
REQUEST_TIMEOUT_S = 600
CHAT = "<|im_start|>user\n{msg}<|im_end|>\n<|im_start|>assistant\n"
PROMPT_TOKENS = 30
THREADS = 2
BATCHING_SLOTS = 16

TARGET_EDGE_TTFT_P50_MS = 150.0
TARGET_EDGE_DECODE_TPS = 30.0
TARGET_EDGE_SIZE_SHARE = 0.35
TARGET_BATCHING_SPEEDUP = 3.0
TARGET_TTFT_P99_GROWTH = 2.0

_ASKS = ["Write a long, detailed essay about", "Explain in depth, step by step,", "Tell me a long story about",
         "Describe in great detail", "Give a thorough lecture on"]
_TOPICS = ["how rivers shape mountain valleys", "the history of the printing press", "why the sky is blue",
           "how a small bakery survives a hard winter", "the life of honey bees in a busy hive",
           "how trains changed travel across the country", "what makes a good garden in the north",
           "the way a lighthouse keeper spends the night", "how computers store numbers",
           "the journey of a letter through the post", "how clouds form and bring rain",
           "the first people who sailed across the ocean"]
_TAILS = ["for curious children.", "with many examples.", "for a school magazine.", "to a friend.",
          "for new students."]


def render(message: str) -> str:
    return CHAT.format(msg=message)


def prompt_pool(tokenizer_file: Path, count: int, tokens: int = PROMPT_TOKENS) -> list[str]:
    """``count`` distinct rendered prompts whose token count is as close to ``tokens`` as the pool allows."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    pool = [render(f"{ask} {topic} {tail}") for topic in _TOPICS for ask in _ASKS for tail in _TAILS]
    lengths = [len(e.ids) for e in tokenizer.encode_batch(pool, add_special_tokens=False)]
    order = sorted(range(len(pool)), key=lambda i: (abs(lengths[i] - tokens), i))
    chosen = order[:count]
    if len(chosen) < count:
        raise RuntimeError(f"only {len(chosen)} prompts in the pool, {count} wanted")
    # Spread the topics: consecutive requests never share one.
    per_topic = len(_ASKS) * len(_TAILS)
    chosen.sort(key=lambda i: (i % per_topic, i // per_topic))
    return [pool[i] for i in chosen]


def generation_request(model: str, prompt: str, max_tokens: int, request_id: str = "") -> bytes:
    """A serialised streaming ``ModelInferRequest`` (every input raw, BYTES length-prefixed)."""
    from edgecloud.codec import serialize_bytes
    from protos import inference_pb2 as pb

    msg = pb.ModelInferRequest(model_name=model, id=request_id)
    msg.inputs.add(name="text_input", datatype="BYTES", shape=[1])
    msg.raw_input_contents.append(serialize_bytes([prompt.encode()]))
    msg.inputs.add(name="stream", datatype="BOOL", shape=[1])
    msg.raw_input_contents.append(b"\x01")
    msg.inputs.add(name="sampling_parameters", datatype="BYTES", shape=[1])
    sampling = json.dumps({"max_tokens": max_tokens, "temperature": 0})
    msg.raw_input_contents.append(serialize_bytes([sampling.encode()]))
    return msg.SerializeToString()


def dir_bytes(path: Path, pattern: str = "*") -> int:
    return sum(p.stat().st_size for p in path.rglob(pattern) if p.is_file())


# ---------------------------------------------------------------------------------------------
# child processes


def _die_with_parent() -> None:
    """SIGTERM ourselves (a graceful stop) once the process that spawned us is gone."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _edge_process(model_dir: str, threads: int, ready) -> None:
    """The edge agent until SIGTERM; puts its port on ``ready``."""
    _die_with_parent()
    from edge_agent.config import EdgeConfig
    from edge_agent.server import EdgeServer
    from edgecloud.lifecycle import configure_logging, run_until_signal

    configure_logging("WARNING")
    config = EdgeConfig.model_validate(edge_config(model_dir, threads))
    server = EdgeServer(config)
    asyncio.run(run_until_signal([server], config.server.grace_s, on_started=lambda: ready.put(server.port)))


def _cloud_process(config: dict, ready) -> None:
    """One cloud worker until SIGTERM; puts its port on ``ready``."""
    _die_with_parent()
    from cloud_worker.config import CloudConfig
    from cloud_worker.main import serve
    from edgecloud.lifecycle import configure_logging

    configure_logging("WARNING")
    asyncio.run(serve(CloudConfig.model_validate(config), ready=lambda worker: ready.put(worker.port)))


def edge_config(model_dir: str, threads: int) -> dict:
    return {"server": {"host": "127.0.0.1", "port": 0, "grace_s": 1.0},
            "models": [{"path": str(model_dir), "intra_op_threads": threads}]}


def cloud_config(model_dir: str, max_batch_size: int, threads: int) -> dict:
    return {"server": {"host": "127.0.0.1", "port": 0, "metrics_port": None, "grace_s": 1.0},
            "runtime": {"device": "cpu", "intra_op_threads": threads, "openmp_wait_policy": "passive"},
            "models": [{"kind": "generative", "path": str(model_dir), "max_batch_size": max_batch_size}]}


@dataclass
class Server:
    name: str
    process: multiprocessing.Process
    ready: object
    port: int | None = None
    channel: grpc.aio.Channel | None = None


async def wait_started(server: Server) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while server.port is None:
        try:
            server.port = await asyncio.to_thread(server.ready.get, True, 1.0)
        except Exception:  # queue.Empty
            if not server.process.is_alive():
                raise RuntimeError(f"the {server.name} server exited with {server.process.exitcode} before serving")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the {server.name} server did not start in {START_TIMEOUT_S} s") from None
    server.channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")


def stop_servers(servers: list[Server]) -> None:
    for server in servers:
        if server.process.is_alive():
            server.process.terminate()  # SIGTERM: a graceful stop
    for server in servers:
        server.process.join(timeout=20)
        if server.process.is_alive():
            server.process.kill()
            server.process.join(timeout=10)


# ---------------------------------------------------------------------------------------------
# one streamed generation


@dataclass
class Record:
    """One request: when it was sent, when each response came and whether it carried text."""

    sent: float
    times: list[float] = field(default_factory=list)
    has_text: list[bool] = field(default_factory=list)
    completion_tokens: int | None = None
    prompt_tokens: int | None = None
    finish_reason: str = ""
    error: str | None = None
    cancelled: bool = False

    @property
    def complete(self) -> bool:
        return self.completion_tokens is not None and self.error is None

    @property
    def first_text(self) -> float | None:
        return next((t for t, text in zip(self.times, self.has_text) if text), None)

    @property
    def ttft(self) -> float | None:
        first = self.first_text
        return None if first is None else first - self.sent

    def gaps(self) -> list[float]:
        """Gaps between consecutive responses from the first one with text on."""
        first = self.first_text
        if first is None:
            return []
        after = [t for t in self.times if t >= first]
        return [b - a for a, b in zip(after, after[1:])]

    def decode_rate(self) -> float | None:
        first = self.first_text
        if not self.complete or first is None or self.completion_tokens < 2 or self.times[-1] <= first:
            return None
        return (self.completion_tokens - 1) / (self.times[-1] - first)

    def token_weights(self) -> list[float]:
        """Tokens each response stands for (a response may hold several tokens' text, and the end of
        sequence none): the completion spread over the responses; 1 each for an unfinished request."""
        if self.complete and self.times:
            return [self.completion_tokens / len(self.times)] * len(self.times)
        return [1.0] * len(self.times)


def _text(response) -> str:
    raw = bytes(response.raw_output_contents[0]) if response.raw_output_contents else b""
    if len(raw) >= 4:
        return raw[4:4 + int.from_bytes(raw[:4], "little")].decode("utf-8", "replace")
    if response.outputs and response.outputs[0].contents.bytes_contents:
        return response.outputs[0].contents.bytes_contents[0].decode("utf-8", "replace")
    return ""


async def stream_one(channel: grpc.aio.Channel, request: bytes, *, stop: asyncio.Event | None = None) -> Record:
    """Send ``request`` on its own ``ModelStreamInfer`` stream and read its responses to the end;
    ``stop`` set cancels it (the record is then marked cancelled)."""
    from protos import inference_pb2 as pb

    record = Record(sent=time.perf_counter())
    call = channel.stream_stream(STREAM_METHOD)([request], timeout=REQUEST_TIMEOUT_S)

    async def read() -> None:
        async for raw in call:
            now = time.perf_counter()
            message = pb.ModelStreamInferResponse.FromString(raw)
            if message.error_message:
                record.error = message.error_message
                return
            response = message.infer_response
            record.times.append(now)
            record.has_text.append(bool(_text(response)))
            params = response.parameters
            if params["triton_final_response"].bool_param:
                record.completion_tokens = int(params["completion_tokens"].int64_param)
                record.prompt_tokens = int(params["prompt_tokens"].int64_param)
                record.finish_reason = params["finish_reason"].string_param

    reader = asyncio.ensure_future(read())
    try:
        if stop is None:
            await reader
        else:
            stopper = asyncio.ensure_future(stop.wait())
            try:
                await asyncio.wait({reader, stopper}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopper.cancel()
            if not reader.done():
                record.cancelled = True
                call.cancel()
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)
            else:
                reader.result()
    except grpc.aio.AioRpcError as exc:
        record.error = f"{exc.code().name}: {exc.details()}"
    if record.error is None and not record.cancelled and record.completion_tokens is None:
        record.error = "the stream ended without a final response"
    return record


# ---------------------------------------------------------------------------------------------
# phase 1: edge vs cloud at concurrency 1


def latency_row(name: str, records: list[Record]) -> dict:
    done = [r for r in records if r.complete]
    ttft = summarize([r.ttft for r in done if r.ttft is not None])
    itl = summarize([g for r in done for g in r.gaps()])
    rates = [x for x in (r.decode_rate() for r in done) if x is not None]
    return {
        "server": name, "n": len(done), "errors": sum(r.error is not None for r in records),
        "prompt_tokens": float(np.median([r.prompt_tokens for r in done])) if done else float("nan"),
        "completion_tokens": float(np.median([r.completion_tokens for r in done])) if done else float("nan"),
        "ttft_p50_ms": ttft["p50_ms"], "ttft_p99_ms": ttft["p99_ms"],
        "itl_p50_ms": itl["p50_ms"], "itl_p99_ms": itl["p99_ms"],
        "decode_tok_s_p50": float(np.median(rates)) if rates else float("nan"),
        "decode_tok_s_min": float(min(rates)) if rates else float("nan"),
    }


async def phase_edge_vs_cloud(servers: dict[str, Server], model: str, prompts: list[str], requests: int,
                              warmup: int, max_tokens: int) -> dict[str, list[Record]]:
    records: dict[str, list[Record]] = {name: [] for name in servers}
    payloads = [generation_request(model, prompts[i % len(prompts)], max_tokens, f"p1-{i}")
                for i in range(warmup + requests)]
    names = list(servers)
    for index, payload in enumerate(payloads):
        order = names if index % 2 == 0 else names[::-1]  # alternate who goes first
        for name in order:
            record = await stream_one(servers[name].channel, payload)
            if record.error is not None:
                raise RuntimeError(f"{name}: {record.error}")
            if index >= warmup:
                records[name].append(record)
    return records


# ---------------------------------------------------------------------------------------------
# phase 2: closed loop at several concurrencies


@dataclass
class Level:
    records: list[Record]
    window_start: float
    window_end: float

    @property
    def seconds(self) -> float:
        return self.window_end - self.window_start

    def tokens_in_window(self) -> float:
        total = 0.0
        for record in self.records:
            for when, weight in zip(record.times, record.token_weights()):
                if self.window_start <= when <= self.window_end:
                    total += weight
        return total

    def measured(self) -> list[Record]:
        return [r for r in self.records if self.window_start <= r.sent < self.window_end]


async def closed_loop_level(channel: grpc.aio.Channel, model: str, prompts: list[str], concurrency: int,
                            per_client: int, min_requests: int, max_tokens: int, tag: str) -> Level:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    all_warm = asyncio.Event()
    warm = 0
    window_start = window_end = 0.0
    finished = [0] * concurrency
    records: list[Record] = []
    errors: list[str] = []
    counter = 0

    def next_payload(tokens: int) -> bytes:
        nonlocal counter
        counter += 1
        return generation_request(model, prompts[counter % len(prompts)], tokens, f"{tag}-{counter}")

    # Pre-serialised: the clock never runs while a client builds a request.
    payloads = [[next_payload(max_tokens) for _ in range(per_client + concurrency + 2)] for _ in range(concurrency)]

    async def client(index: int) -> None:
        nonlocal warm, window_start, window_end
        stagger = max(1, round(max_tokens * (index + 1) / concurrency))
        record = await stream_one(channel, next_payload(stagger), stop=stop)
        if record.error is not None:
            errors.append(record.error)
            stop.set()
            return
        warm += 1
        if warm == concurrency:
            window_start = time.perf_counter()
            all_warm.set()
        records.append(record)
        sent = 0
        while not stop.is_set():
            payload = payloads[index][sent % len(payloads[index])]
            sent += 1
            record = await stream_one(channel, payload, stop=stop)
            records.append(record)
            if record.cancelled:
                return
            if record.error is not None:
                errors.append(record.error)
                stop.set()
                return
            if all_warm.is_set():  # finished inside the window (every warm-up is over)
                finished[index] += 1
                if min(finished) >= per_client and sum(finished) >= min_requests and not stop.is_set():
                    window_end = time.perf_counter()
                    stop.set()

    clients = [loop.create_task(client(i)) for i in range(concurrency)]
    try:
        await asyncio.gather(*clients)
    finally:
        for task in clients:
            task.cancel()
        await asyncio.gather(*clients, return_exceptions=True)
    if errors:
        raise RuntimeError(f"{tag}: {errors[0]}")
    return Level(records, window_start, window_end)


def level_row(mode: str, concurrency: int, level: Level) -> dict:
    measured = level.measured()
    ttft = summarize([r.ttft for r in measured if r.ttft is not None])
    itl = summarize([g for r in measured for g in r.gaps()])
    return {
        "mode": mode, "concurrency": concurrency,
        "tokens_per_s": ratio(level.tokens_in_window(), level.seconds),
        "ttft_p50_ms": ttft["p50_ms"], "ttft_p99_ms": ttft["p99_ms"], "ttft_n": ttft["n"],
        "itl_p50_ms": itl["p50_ms"], "itl_p99_ms": itl["p99_ms"],
        "completed": sum(r.complete for r in measured), "cancelled": sum(r.cancelled for r in measured),
        "window_s": level.seconds,
    }


# ---------------------------------------------------------------------------------------------
# the run


def verdict(value: float, goal: float, at_most: bool) -> str:
    if value != value:  # nan
        return "n/a"
    return "met" if (value <= goal if at_most else value >= goal) else "MISS"


async def main_async(args) -> dict:
    model_dir = Path(args.model_dir)
    meta = json.loads((model_dir / "model.json").read_text())
    model = str(meta.get("name", model_dir.name))
    edge_dir = model_dir / meta["variants"][meta.get("default_variant") or next(iter(meta["variants"]))]
    cloud_dir = model_dir / meta["cloud"]
    prompts = prompt_pool(cloud_dir / "tokenizer.json", 48)

    ctx = multiprocessing.get_context("spawn")
    servers: dict[str, Server] = {}
    for name, target, target_args in (
        ("edge", _edge_process, (str(model_dir), THREADS)),
        ("cloud-batching", _cloud_process, (cloud_config(str(model_dir), BATCHING_SLOTS, THREADS),)),
        ("cloud-one-at-a-time", _cloud_process, (cloud_config(str(model_dir), 1, THREADS),)),
    ):
        ready = ctx.Queue()
        servers[name] = Server(name, ctx.Process(target=target, args=(*target_args, ready), daemon=True,
                                                 name=f"bench-{name}"), ready)
    started = time.perf_counter()
    try:
        for server in servers.values():
            server.process.start()
        for server in servers.values():
            await wait_started(server)
        startup_s = time.perf_counter() - started
        print(f"servers up in {startup_s:.0f} s (edge pid {servers['edge'].process.pid})", flush=True)

        # -- phase 1 -------------------------------------------------------------------------
        phase1 = await phase_edge_vs_cloud({"edge": servers["edge"], "cloud": servers["cloud-batching"]}, model,
                                           prompts, args.requests, args.warmup, args.max_tokens)
        edge_rss = _rss(servers["edge"].process.pid)
        print("phase 1 done", flush=True)

        # -- phase 2 -------------------------------------------------------------------------
        levels: dict[tuple[str, int], Level] = {}
        modes = ["cloud-batching", "cloud-one-at-a-time"]
        for index, concurrency in enumerate(args.concurrency):
            for mode in modes if index % 2 == 0 else modes[::-1]:
                begin = time.perf_counter()
                levels[(mode, concurrency)] = await closed_loop_level(
                    servers[mode].channel, model, prompts, concurrency, args.per_client, args.min_requests,
                    args.load_max_tokens, f"{mode}-c{concurrency}")
                print(f"phase 2: {mode} c={concurrency} done in {time.perf_counter() - begin:.0f} s", flush=True)
    finally:
        for server in servers.values():
            if server.channel is not None:
                await server.channel.close()
        stop_servers(list(servers.values()))

    rows1 = [latency_row(name, records) for name, records in phase1.items()]
    edge_bytes, fp32_bytes = dir_bytes(edge_dir), dir_bytes(cloud_dir, "*.safetensors")
    memory = {"edge_rss_mib": (edge_rss or 0) / 2**20, "edge_model_mib": edge_bytes / 2**20,
              "fp32_checkpoint_mib": fp32_bytes / 2**20, "edge_model_share_of_fp32": ratio(edge_bytes, fp32_bytes)}

    rows2 = []
    for concurrency in args.concurrency:
        for mode, label in (("cloud-batching", f"batching ({BATCHING_SLOTS} slots)"),
                            ("cloud-one-at-a-time", "one at a time")):
            rows2.append(level_row(label, concurrency, levels[(mode, concurrency)]))

    def tps(mode: str, concurrency: int) -> float:
        return next(r["tokens_per_s"] for r in rows2 if r["mode"].startswith(mode) and r["concurrency"] == concurrency)

    def ttft_p99(mode: str, concurrency: int) -> float:
        return next(r["ttft_p99_ms"] for r in rows2 if r["mode"].startswith(mode) and r["concurrency"] == concurrency)

    speedups = {f"c{c}": ratio(tps("batching", c), tps("one", c)) for c in args.concurrency}
    low, top = min(args.concurrency), max(args.concurrency)
    growth = ratio(ttft_p99("batching", top), ttft_p99("batching", low))
    edge_row = next(r for r in rows1 if r["server"] == "edge")
    targets = [
        {"target": "edge TTFT p50, ms", "value": edge_row["ttft_p50_ms"], "goal": f"<= {TARGET_EDGE_TTFT_P50_MS:g}",
         "status": verdict(edge_row["ttft_p50_ms"], TARGET_EDGE_TTFT_P50_MS, True)},
        {"target": "edge decode tokens/s (p50)", "value": edge_row["decode_tok_s_p50"],
         "goal": f">= {TARGET_EDGE_DECODE_TPS:g}",
         "status": verdict(edge_row["decode_tok_s_p50"], TARGET_EDGE_DECODE_TPS, False)},
        {"target": "edge model / FP32 checkpoint", "value": memory["edge_model_share_of_fp32"],
         "goal": f"<= {TARGET_EDGE_SIZE_SHARE:g}",
         "status": verdict(memory["edge_model_share_of_fp32"], TARGET_EDGE_SIZE_SHARE, True)},
        {"target": f"cloud batching / one-at-a-time tokens/s at c={top}", "value": speedups[f"c{top}"],
         "goal": f">= {TARGET_BATCHING_SPEEDUP:g}",
         "status": verdict(speedups[f"c{top}"], TARGET_BATCHING_SPEEDUP, False)},
        {"target": f"cloud batching TTFT p99 c={top} / c={low}", "value": growth,
         "goal": f"<= {TARGET_TTFT_P99_GROWTH:g}", "status": verdict(growth, TARGET_TTFT_P99_GROWTH, True)},
    ]
    return {
        "model": model,
        "model_dir": str(model_dir),
        "edge_vs_cloud": rows1,
        "memory": memory,
        "batching": rows2,
        "ratios": {"batching_vs_one_at_a_time_tokens_per_s": speedups,
                   f"batching_ttft_p99_c{top}_over_c{low}": growth},
        "targets": targets,
        "servers_startup_s": startup_s,
        "settings": {
            "quick": args.quick, "requests": args.requests, "warmup": args.warmup, "max_tokens": args.max_tokens,
            "load_max_tokens": args.load_max_tokens, "per_client": args.per_client,
            "min_requests": args.min_requests,
            "concurrency": args.concurrency, "prompt_example": prompts[0],
            "edge": edge_config(str(model_dir), THREADS),
            "cloud_batching": cloud_config(str(model_dir), BATCHING_SLOTS, THREADS),
            "cloud_one_at_a_time": cloud_config(str(model_dir), 1, THREADS),
        },
    }


def _rss(pid: int) -> int | None:
    from edgecloud_tools.stack import rss_bytes

    return rss_bytes(pid)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m bench.generate", description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR,
                        help=f"generative model directory (default {DEFAULT_MODEL_DIR})")
    parser.add_argument("--requests", type=int, default=8, help="phase 1: measured requests per server")
    parser.add_argument("--warmup", type=int, default=1, help="phase 1: unrecorded requests per server first")
    parser.add_argument("--max-tokens", type=int, default=64,
                        help="max_tokens per request (phase 1, and phase 2 unless --load-max-tokens)")
    parser.add_argument("--load-max-tokens", type=int, default=None,
                        help="phase 2: max_tokens per request (default: --max-tokens)")
    parser.add_argument("--per-client", type=int, default=2, help="phase 2: measured requests per client (at least)")
    parser.add_argument("--min-requests", type=int, default=8,
                        help="phase 2: measured requests per level (at least; matters at low concurrency)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16], help="phase 2 concurrencies")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: 2 requests of 8 tokens, concurrency 1 and 4, 1 request per client")
    parser.add_argument("--name", default="generate", help="result name (bench/results/NAME.json)")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR, help="where the JSON goes")
    args = parser.parse_args(argv)
    if args.quick:
        args.requests, args.warmup, args.max_tokens, args.load_max_tokens = 2, 1, 8, 8
        args.per_client, args.min_requests, args.concurrency = 1, 2, [1, 4]
    if args.load_max_tokens is None:
        args.load_max_tokens = args.max_tokens
    args.concurrency = sorted(set(args.concurrency))
    if not (args.model_dir / "model.json").is_file():
        parser.error(f"{args.model_dir}: no model.json (build it with: edgecloud model build --model smollm2 "
                     f"--out {args.model_dir})")

    started = time.perf_counter()
    load_before = os.getloadavg()
    result = asyncio.run(main_async(args))
    result["wall_s"] = time.perf_counter() - started
    result["load_average"] = {"before": load_before, "after": os.getloadavg()}
    result["command"] = shlex.join(["python", "-m", "bench.generate", *argv])

    print_table(result["edge_vs_cloud"], title=f"1. edge (INT4, onnxruntime-genai) vs cloud (FP32 torch, batching "
                                               f"worker), concurrency 1, max_tokens {args.max_tokens}, gRPC stream")
    print_table([result["memory"]], title="edge memory and model size (MiB)")
    print_table(result["batching"], title=f"2. cloud continuous batching vs one at a time, closed loop, max_tokens "
                                          f"{args.load_max_tokens}")
    print_table(result["targets"], title="targets")
    after = tuple(round(x, 2) for x in result["load_average"]["after"])
    print(f"\nwall {result['wall_s']:.0f} s; load average before {tuple(round(x, 2) for x in load_before)}, "
          f"after {after}")
    print(f"wrote {write_result(args.name, result, args.results_dir)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
