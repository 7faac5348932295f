"""Embed a few sentences through the gateway (or an edge agent) with the blocking client.

    python examples/embed.py --address 127.0.0.1:8001

Prints the embeddings' shape, where the answer was served and why, and which sentences are
most alike (the embeddings are L2-normalized, so a dot product is the cosine similarity).
"""

from __future__ import annotations

import argparse
import sys

from gateway.client import Client, InferenceError

SENTENCES = [
    "The cat sat on the mat.",
    "A kitten was resting on the rug.",
    "Stock markets fell sharply on Monday.",
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", default="127.0.0.1:8001", help="gateway host:port")
    parser.add_argument("--api-key", default=None, help="sent as 'authorization: Bearer <key>'")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per call, retries included")
    args = parser.parse_args(argv)

    try:
        with Client(args.address, api_key=args.api_key, timeout_s=args.timeout) as client:
            result = client.embed(SENTENCES)
    except InferenceError as exc:
        print(f"error ({exc.kind.value}): {exc}", file=sys.stderr)
        return 1

    embeddings = result.embeddings
    print(f"embeddings: shape {embeddings.shape}, dtype {embeddings.dtype}")
    print(f"served by: {result.served_by or 'unspecified'} (reason: {result.route_reason or '-'}, "
          f"variant: {result.variant or '-'})")
    similarity = embeddings @ embeddings.T
    for i in range(len(SENTENCES)):
        for j in range(i + 1, len(SENTENCES)):
            print(f"similarity {similarity[i, j]:+.3f}  {SENTENCES[i]!r} ~ {SENTENCES[j]!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
