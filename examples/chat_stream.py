"""Stream a chat answer token by token with the asyncio SDK, and say where it was served.

    python examples/chat_stream.py --address 127.0.0.1:8001 [--message "Name three colours."]

Prints the text as it arrives, then the time to the first token, the token count, and where each
part was served (edge, cloud, cache; ``edge+cloud`` when the gateway continued it mid-answer).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

from gateway.client import AsyncClient, InferenceError

MODEL = "smollm2-135m-instruct"


async def run(address: str, message: str, max_tokens: int, api_key: str | None) -> int:
    async with AsyncClient(address, api_key=api_key, timeout_s=60.0) as client:
        started = time.perf_counter()
        first_token_s = None
        last = None
        async for chunk in client.chat(MODEL, [{"role": "user", "content": message}], max_tokens=max_tokens,
                                       temperature=0):
            if chunk.text and first_token_s is None:
                first_token_s = time.perf_counter() - started
            print(chunk.text, end="", flush=True)
            last = chunk
    print()
    ttft = f"{first_token_s * 1000:.0f} ms" if first_token_s is not None else "n/a"
    print(f"first token after {ttft}; {last.completion_tokens} tokens ({last.finish_reason}); "
          f"served by {last.served_by or 'unspecified'} ({last.route_reason or '-'})")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", default="127.0.0.1:8001", help="gateway (or edge/cloud) host:port")
    parser.add_argument("--message", default="Name three colours.")
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--api-key", default=None, help="sent as 'authorization: Bearer <key>'")
    args = parser.parse_args(argv)
    try:
        return asyncio.run(run(args.address, args.message, args.max_tokens, args.api_key))
    except InferenceError as exc:
        print(f"error ({exc.kind.value}): {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
