"""Embed several batches concurrently over one connection with the asyncio client.

    python examples/embed_async.py --address 127.0.0.1:8001

Checks the server is ready, sends the batches at once, and prints each answer's shape and where
it was served.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from gateway.client import AsyncClient, InferenceError

BATCHES = [
    ["Edge inference keeps latency low."],
    ["The cloud has bigger GPUs.", "The gateway routes between them."],
    ["Cached answers come back fastest.", "Deadlines bound every call.", "Retries back off with jitter."],
]


async def run(address: str, api_key: str | None, timeout_s: float) -> int:
    async with AsyncClient(address, api_key=api_key, timeout_s=timeout_s) as client:
        if not await client.server_ready():
            print("the server is not ready", file=sys.stderr)
            return 1
        results = await asyncio.gather(*(client.embed(batch) for batch in BATCHES))
    for batch, result in zip(BATCHES, results, strict=True):
        print(f"{len(batch)} texts -> {result.embeddings.shape} served by {result.served_by or 'unspecified'} "
              f"(variant {result.variant or '-'})")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", default="127.0.0.1:8001", help="gateway host:port")
    parser.add_argument("--api-key", default=None, help="sent as 'authorization: Bearer <key>'")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per call, retries included")
    args = parser.parse_args(argv)
    try:
        return asyncio.run(run(args.address, args.api_key, args.timeout))
    except InferenceError as exc:
        print(f"error ({exc.kind.value}): {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
