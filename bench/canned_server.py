"""A server with its model call answered from memory, for ``bench.overhead``.

    PYTHONPATH=CHECKOUT python bench/canned_server.py edge|gateway CONFIG_FILE
    PYTHONPATH=CHECKOUT python bench/canned_server.py floor PORT MODEL_DIR

The real server of the checkout on ``PYTHONPATH`` (run as a file, so another checkout's code is
the one imported), with ``SentenceEmbeddingModel.embed_texts`` (or ``bench.edge_floor``'s
``Floor._embed``) returning a fixed embedding and no warm-up: what it then spends per request is
its own work. Imports nothing of this checkout at module level.
"""

from __future__ import annotations

import os
import sys

if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    del sys.path[0]  # this folder's modules (bench/gateway.py) would shadow the packages of the same name

import numpy as np  # noqa: E402


def main(argv: list[str]) -> int:
    kind = argv[1]
    embedding = np.full((1, 384), 1 / np.sqrt(384), np.float32)
    if kind == "floor":
        from bench import edge_floor

        edge_floor.Floor._embed = lambda self, raw, count: embedding
        sys.argv = [argv[0], "--port", argv[2], "--model-dir", argv[3]]
        edge_floor.main()
        return 0
    from edge_agent import models

    models.SentenceEmbeddingModel.embed_texts = lambda self, texts: embedding
    models.SentenceEmbeddingModel.warm_up = lambda self: None
    if kind == "edge":
        from edge_agent.main import run
    else:
        from gateway.main import run
    return run(argv[2])


if __name__ == "__main__":
    sys.exit(main(sys.argv))
