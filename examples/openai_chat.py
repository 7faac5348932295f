"""The unmodified ``openai`` package against the gateway's OpenAI-compatible API, streaming.

    python examples/openai_chat.py --base-url http://127.0.0.1:8000/v1 [--message "Hello"]

Prints the answer as it streams, then where the gateway served it (the ``edgecloud`` field of
the last chunk: served_by, route_reason).
"""

from __future__ import annotations

import argparse
import sys

import openai

MODEL = "smollm2-135m-instruct"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", default="http://127.0.0.1:8000/v1")
    parser.add_argument("--api-key", default="none", help="an API key when the gateway has auth on")
    parser.add_argument("--message", default="Name three colours.")
    parser.add_argument("--max-tokens", type=int, default=48)
    args = parser.parse_args(argv)
    client = openai.OpenAI(base_url=args.base_url, api_key=args.api_key, max_retries=0)
    try:
        stream = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": args.message}],
                                                max_tokens=args.max_tokens, temperature=0, stream=True)
        where = {}
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                print(chunk.choices[0].delta.content, end="", flush=True)
            where = (chunk.model_extra or {}).get("edgecloud", where)
    except openai.APIError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print()
    print(f"served by {where.get('served_by', 'unspecified')} ({where.get('route_reason', '-')})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
