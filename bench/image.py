"""The image classifier, side by side in one run: ``python -m bench.image [--quick]``.

(a) runtimes in process, one thread each, called in turn: torch FP32, ORT FP32 and ORT INT8 at
    batch 1 and 8 (p50 / p99, and INT8's speed-up over ORT FP32);
(b) the servers as processes (edge: onnxruntime INT8, one session thread; cloud: torch FP32 with
    dynamic batching, one thread) at concurrency 1 and 16 with closed-loop gRPC clients sending
    JPEG uploads: images/s, p50 / p99;
(c) ``edgecloud tune confidence`` on tuning crops of the bundled photographs (one seed): the
    recommended bar (``min_confidence`` or ``min_margin``, whichever escalates less);
(d) the gateway with escalation at that bar, on held-out crops (another seed): share escalated,
    p50 / p99 of escalated and of edge-answered requests, and how often the returned answer agrees
    with the cloud's (target: >= 99.5% while escalating <= 20%).
(c) and (d) run on two image sets: crops of all 24 bundled images (textures, charts and micrographs
included: most are unsure even in FP32) and crops of the 10 photographs of objects ImageNet knows.
Prints tables and writes ``bench/results/image.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import print_table, ratio, stop_all, summarize, write_result
from edgecloud_tools.stack import cloud_config, edge_config, free_port, gateway_config, launch, wait_ready

MINILM_DIR = Path("models/all-MiniLM-L6-v2")
IMAGE_DIR = Path("models/efficientnet-lite0")
MODEL = "efficientnet-lite0"
TUNING_SEED, GATEWAY_SEED = 99, 1234


def runtimes_part(iterations: int, images: np.ndarray) -> list[dict]:
    from edge_agent.build.image import ort_runner, torch_runner
    from edge_agent.build.latency import interleaved
    from edgecloud.image_model import load_torch_classifier
    import torch

    torch.set_num_threads(1)
    runners = {"torch fp32": torch_runner(load_torch_classifier()),
               "onnx fp32": ort_runner(IMAGE_DIR / "model.fp32.onnx"),
               "onnx int8": ort_runner(IMAGE_DIR / "model.int8.onnx")}
    rows = []
    for batch in (1, 8):
        chunk = np.ascontiguousarray(images[:batch])
        samples = interleaved({n: (lambda r=r: r(chunk)) for n, r in runners.items()},
                              iterations if batch == 1 else max(8, iterations // 4))
        stats = {name: summarize(values) for name, values in samples.items()}
        for name, s in stats.items():
            rows.append({"batch": batch, "runtime": name, "p50_ms": s["p50_ms"], "p99_ms": s["p99_ms"],
                         "images_per_s": batch * 1000 / s["p50_ms"],
                         "x_vs_onnx_fp32": ratio(stats["onnx fp32"]["p50_ms"], s["p50_ms"])})
    return rows


def _request(jpeg: bytes, k: int = 0):
    from edgecloud.codec import serialize_bytes
    from protos import inference_pb2 as pb

    msg = pb.ModelInferRequest(model_name=MODEL)
    msg.inputs.add(name="image", datatype="BYTES", shape=[1])
    msg.raw_input_contents.append(serialize_bytes([jpeg]))
    if k:
        msg.outputs.add(name="probabilities").parameters["classification"].int64_param = k
    return msg


async def closed_loop(address: str, uploads: list[bytes], concurrency: int, duration_s: float) -> dict:
    import grpc

    from protos import inference_pb2_grpc as pb_grpc

    requests = [_request(jpeg, 1) for jpeg in uploads]
    latencies: list[float] = []
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        for request in requests[:4]:
            await stub.ModelInfer(request)
        stop = time.perf_counter() + duration_s

        async def client(offset: int) -> None:
            index = offset
            while time.perf_counter() < stop:
                started = time.perf_counter()
                await stub.ModelInfer(requests[index % len(requests)], timeout=60)
                latencies.append(time.perf_counter() - started)
                index += concurrency

        started = time.perf_counter()
        await asyncio.gather(*(client(i) for i in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {"images_per_s": len(latencies) / elapsed, **summarize(latencies)}


def servers_part(edge_address: str, cloud_address: str, uploads: list[bytes], duration_s: float) -> list[dict]:
    rows = []
    for name, address in (("edge (onnx int8)", edge_address), ("cloud (torch fp32)", cloud_address)):
        for concurrency in (1, 16):
            r = asyncio.run(closed_loop(address, uploads, concurrency, duration_s))
            rows.append({"server": name, "concurrency": concurrency, "images_per_s": r["images_per_s"],
                         "p50_ms": r["p50_ms"], "p99_ms": r["p99_ms"], "n": r["n"]})
    return rows


def gateway_part(gateway_address: str, cloud_address: str, uploads: list[bytes]) -> dict:
    from gateway.client import Client

    escalated, on_edge, kept, agree = [], [], 0, 0
    with Client(gateway_address, timeout_s=60) as gateway, Client(cloud_address, timeout_s=60) as cloud:
        for jpeg in uploads[:4]:
            gateway.classify([jpeg], top_k=1, parameters={"no_cache": True})
        for jpeg in uploads:
            started = time.perf_counter()
            answer = gateway.classify([jpeg], top_k=1, parameters={"no_cache": True})
            took = time.perf_counter() - started
            (escalated if answer.route_reason == "low_confidence" else on_edge).append(took)
            kept += answer.route_reason == "low_confidence_kept"
            agree += answer.top[0].index == cloud.classify([jpeg], top_k=1).top[0].index
    n = len(uploads)
    return {"images": n, "escalated_share": len(escalated) / n, "agreement_with_cloud": agree / n,
            "kept_unsure": kept, "escalated": summarize(escalated), "edge": summarize(on_edge)}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iterations", type=int, default=100, help="batch-1 rounds in (a)")
    parser.add_argument("--duration-s", type=float, default=10.0, help="each closed-loop run in (b)")
    parser.add_argument("--tuning-images", type=int, default=600)
    parser.add_argument("--gateway-images", type=int, default=600)
    parser.add_argument("--target", type=float, default=0.995)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.iterations, args.duration_s, args.tuning_images, args.gateway_images = 10, 2.0, 60, 40
    if not (IMAGE_DIR / "model.json").exists():
        print(f"{IMAGE_DIR} is missing: run `make model`", file=sys.stderr)
        return 2
    from edge_agent.build.image_corpus import OBJECT_PHOTOS, SOURCE_FILES, augmented, encoded
    from gateway.tuning.confidence import RULES, best_rule, evaluate, measure, recommend

    result: dict = {"config": vars(args)}
    held = augmented(max(16, args.gateway_images), GATEWAY_SEED)
    rows = runtimes_part(args.iterations, held)
    print_table(rows, "(a) runtimes, one thread each, interleaved")
    result["runtimes"] = rows
    uploads = [encoded(image, "JPEG") for image in held[:args.gateway_images]]
    workdir = Path(tempfile.mkdtemp(prefix="bench-image-"))
    services = []
    try:
        edge = launch("edge", edge_config(MINILM_DIR.resolve(), free_port(), threads=1,
                                          image_model_dir=IMAGE_DIR.resolve()), workdir)
        cloud = launch("cloud", cloud_config(free_port(), threads=1, image=True), workdir)
        services += [edge, cloud]
        for service in services:
            wait_ready(service, 180)
        servers = servers_part(edge.address, cloud.address, uploads, args.duration_s)
        print_table(servers, "(b) servers, closed loop, JPEG uploads")
        result["servers"] = servers

        b1 = {row["runtime"]: row for row in rows if row["batch"] == 1}
        targets = {"int8 batch-1 p50 >= 2x onnx fp32": b1["onnx int8"]["x_vs_onnx_fp32"] >= 2.0}
        for set_name, sources in (("all bundled images", SOURCE_FILES), ("object photos", OBJECT_PHOTOS)):
            tuning = [encoded(image, "JPEG") for image in augmented(args.tuning_images, TUNING_SEED, sources)]
            pairs = measure(edge.address, cloud.address, tuning)
            rule, bar, share, agreement = best_rule(pairs, args.target)
            tuned = {"images": len(pairs), "rule": RULES[rule], "bar": bar, "escalated": share,
                     "agreement": agreement, "agreement_without_escalation": evaluate(pairs, 0.0)[1]}
            for other in RULES:
                other_bar, other_share, _ = recommend(pairs, args.target, other)
                tuned[f"{RULES[other]}_alone"] = {"bar": other_bar, "escalated": other_share}
            print_table([{k: v for k, v in tuned.items() if not k.endswith("_alone")}],
                        f"(c) edgecloud tune confidence on tuning crops: {set_name}")
            routing = {"escalation": {MODEL: {RULES[rule]: bar}}, "threshold_ms": 60_000}
            gw = launch("gateway", gateway_config(free_port(), edge.address, [cloud.address], routing=routing),
                        workdir, name=f"gateway-{len(services)}")
            services.append(gw)
            wait_ready(gw, 120)
            held_uploads = [encoded(image, "JPEG") for image in augmented(args.gateway_images, GATEWAY_SEED, sources)]
            gateway = gateway_part(gw.address, cloud.address, held_uploads)
            result.setdefault("escalation", {})[set_name] = {"tuning": tuned, "gateway": gateway}
            print_table([{"images": gateway["images"], "escalated": gateway["escalated_share"],
                          "agree_with_cloud": gateway["agreement_with_cloud"], "kept_unsure": gateway["kept_unsure"],
                          "edge_p50_ms": gateway["edge"]["p50_ms"], "edge_p99_ms": gateway["edge"]["p99_ms"],
                          "escalated_p50_ms": gateway["escalated"]["p50_ms"],
                          "escalated_p99_ms": gateway["escalated"]["p99_ms"]}],
                        f"(d) gateway, escalation at {RULES[rule]} {bar}, held-out crops: {set_name}")
            targets[f"{set_name}: agree with the cloud >= {args.target:.1%}"] = \
                gateway["agreement_with_cloud"] >= args.target
            targets[f"{set_name}: escalated <= 20%"] = gateway["escalated_share"] <= 0.20
        result["targets"] = targets
        print_table([{"target": k, "met": v} for k, v in targets.items()], "targets")
        path = write_result("image" if not args.quick else "image_quick", result)
        print(f"\nwrote {path}")
        return 0
    finally:
        stop_all(services)


if __name__ == "__main__":
    sys.exit(main())
