"""Bad images, many rounds, through the gateway to the edge and the cloud: every answer checked, and
each process's resident memory after every round (does decoding garbage leak?).

    .venv/bin/python -m tests.hostile.bad_images [--rounds 20]

Each round sends every case of ``BAD_IMAGES`` (not an image, truncated, corrupt, zero-size, a
decompression bomb, pixels of the wrong shape) through the gateway once with the edge answering and
once asking for the cloud (``quality: cloud``), then one good photo each way. Prints a table a round
and writes bench/results/hostile_images.json.
"""

from __future__ import annotations

import argparse
import io
import struct
import tempfile
import zlib
from pathlib import Path

import numpy as np

from bench.common import machine_facts, print_table, write_result
from edgecloud.errors import InferenceError
from edgecloud_tools.stack import cloud_config, edge_config, free_port, gateway_config, launch, wait_ready
from tests.conftest import IMAGE_MODEL_DIR, MODEL_DIR
from tests.hostile.servers import memory

MIB = 2**20


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")


def _photo() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8)).save(buffer, format="JPEG")
    return buffer.getvalue()


def bad_images() -> dict[str, tuple[object, str]]:
    """Case name -> (what to send to ``classify``, the error kind expected)."""
    photo = _photo()
    corrupt = bytearray(photo)
    corrupt[20:600] = bytes(580)  # the quantization and Huffman tables (damage further in mostly decodes: JPEG
    # decoders paint over broken entropy data, as browsers do)
    return {
        "not an image": ([b"GIF? no, plain text " * 50], "invalid_argument"),
        "truncated jpeg": ([photo[: len(photo) // 3]], "invalid_argument"),
        "corrupt jpeg": ([bytes(corrupt)], "invalid_argument"),
        "zero-size png": ([_png_header_only(0, 0)], "invalid_argument"),
        "empty": ([b""], "invalid_argument"),
        "bomb 40000x40000": ([_png_header_only(40_000, 40_000)], "resource_exhausted"),
        "pixels 100x100": (np.zeros((1, 100, 100, 3), np.uint8), "invalid_argument"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    from gateway.client import Client, RetryPolicy

    workdir = Path(tempfile.mkdtemp(prefix="hostile-images-"))
    edge = launch("edge", edge_config(MODEL_DIR, free_port(), threads=1, image_model_dir=IMAGE_MODEL_DIR), workdir)
    cloud = launch("cloud", cloud_config(free_port(), threads=1, image=True), workdir)
    services = [edge, cloud]
    try:
        for service in services:
            wait_ready(service, 180)
        gateway = launch("gateway", gateway_config(free_port(), edge.address, [cloud.address]), workdir)
        services.append(gateway)
        wait_ready(gateway, 60)
        cases, photo, rows = bad_images(), _photo(), []
        pids = {service.name: service.proc.pid for service in services}
        with Client(gateway.address, timeout_s=60, retry=RetryPolicy(max_attempts=1)) as client:
            for quality in ("auto", "cloud"):  # warm both paths before the first measurement
                client.classify([photo], parameters={"quality": quality, "no_cache": True})
            start = {name: memory(pid)["VmRSS"] for name, pid in pids.items()}
            for number in range(1, args.rounds + 1):
                wrong = []
                for name, (images, kind) in cases.items():
                    for quality in ("auto", "cloud"):
                        try:
                            client.classify(images, parameters={"quality": quality, "no_cache": True})
                            wrong.append(f"{name}/{quality}: answered")
                        except InferenceError as exc:
                            if exc.kind.value != kind:
                                wrong.append(f"{name}/{quality}: {exc.kind.value}")
                    for quality in ("auto", "cloud"):
                        client.classify([photo], parameters={"quality": quality, "no_cache": True})
                row = {"round": number, "wrong": len(wrong)}
                for name, pid in pids.items():
                    row[f"{name} MiB"] = memory(pid)["VmRSS"] / MIB
                rows.append(row)
                print("  ".join(f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()),
                      flush=True)
                if wrong:
                    print("  " + "; ".join(wrong))
        growth = {name: rows[-1][f"{name} MiB"] - start[name] / MIB for name in pids}
        print_table([{"process": name, "start MiB": start[name] / MIB, "end MiB": rows[-1][f"{name} MiB"],
                      "growth MiB": growth[name]} for name in pids], "resident memory")
        path = write_result("hostile_images", {"machine": machine_facts(), "rounds": rows,
                                               "start_mib": {k: v / MIB for k, v in start.items()},
                                               "growth_mib": growth, "cases": list(cases)})
        print(f"wrote {path}")
    finally:
        for service in reversed(services):
            service.stop()


if __name__ == "__main__":
    main()
