"""Classify photographs through the gateway and print where each was answered and why.

    python examples/classify.py --address 127.0.0.1:8001 [FILE ...]

Without files it classifies the photographs scikit-image ships (a cat, a coffee cup, an astronaut,
a rocket, a motorcycle). Each answer says who served it: the edge's INT8 model when it is sure,
the cloud when the edge was unsure (``route_reason: low_confidence``) or slow, or the cache.
"""

from __future__ import annotations

import argparse
import sys
from importlib.util import find_spec
from pathlib import Path

from gateway.client import Client, InferenceError

BUNDLED = ("chelsea.png", "coffee.png", "astronaut.png", "rocket.jpg", "motorcycle_left.png")


def bundled_photos() -> list[Path]:
    spec = find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        return []
    folder = Path(next(iter(spec.submodule_search_locations))) / "data"
    return [folder / name for name in BUNDLED if (folder / name).is_file()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", help="JPEG / PNG / WebP files (default: scikit-image's photos)")
    parser.add_argument("--address", default="127.0.0.1:8001", help="gateway host:port")
    parser.add_argument("--top", type=int, default=3, help="classes to show per photo")
    parser.add_argument("--api-key", default=None, help="sent as 'authorization: Bearer <key>'")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per call, retries included")
    args = parser.parse_args(argv)
    files = [Path(f) for f in args.files] or bundled_photos()
    if not files:
        print("no photos: pass files, or install scikit-image for its bundled ones", file=sys.stderr)
        return 2
    try:
        with Client(args.address, api_key=args.api_key, timeout_s=args.timeout) as client:
            for path in files:
                result = client.classify([str(path)], top_k=args.top)
                classes = ", ".join(f"{c.label} {c.score:.2f}" for c in result.classes[0])
                print(f"{path.name:24} {classes}")
                print(f"{'':24} served by {result.served_by} ({result.route_reason}, {result.variant})")
    except InferenceError as exc:
        print(f"error ({exc.kind.value}): {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
