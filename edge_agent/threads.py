"""Thread and concurrency defaults derived from the cores this process may use.

Contract: ``usable_cores()`` is the number of CPUs this process may run on (its affinity mask;
``os.cpu_count()`` where there is none). ``resolve(task, concurrency, intra_op_threads)`` fills in
the zeros (0 = automatic) and returns ``(concurrency, intra_op_threads)``:

- encoders, classifiers and generic ONNX models (short requests): ``concurrency`` 0 -> one request
  per usable core, at most ``MAX_AUTO_CONCURRENCY``; ``intra_op_threads`` 0 -> the cores left to
  each request (``cores // concurrency``, at least 1). On a 2-core box: 2 requests at once with one
  thread each, which is what a minimal onnxruntime backend does, and no operator thread pool
  that spins between requests.
- generative models: ``concurrency`` 0 -> 1 (one generation at a time; more wait their turn, the
  cloud is the one that batches); ``intra_op_threads`` 0 -> every usable core.

Values set explicitly are kept as they are.

``resolve_lone(task, lone_request_threads, intra_op_threads)`` -> ``(threads, auto)`` for the
session a request arriving alone runs on (``edge_agent.lone``): 0 -> every usable core, kept only
if measured faster at load (``auto``); 1 -> off; N -> N threads, always. Off (1) for generative
models and wherever it would have no more threads than the shared session.
"""

from __future__ import annotations

import os

__all__ = ["MAX_AUTO_CONCURRENCY", "resolve", "resolve_lone", "usable_cores"]

MAX_AUTO_CONCURRENCY = 8
GENERATIVE_TASK = "text-generation"


def usable_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def resolve(task: str, concurrency: int = 0, intra_op_threads: int = 0, *,
            cores: int | None = None) -> tuple[int, int]:
    cores = usable_cores() if cores is None else cores
    if task == GENERATIVE_TASK:
        concurrency = concurrency or 1
        return concurrency, intra_op_threads or cores
    concurrency = concurrency or min(cores, MAX_AUTO_CONCURRENCY)
    return concurrency, intra_op_threads or max(1, cores // concurrency)


def resolve_lone(task: str, lone_request_threads: int = 0, intra_op_threads: int = 1, *,
                 cores: int | None = None) -> tuple[int, bool]:
    cores = usable_cores() if cores is None else cores
    threads, auto = (cores, True) if lone_request_threads == 0 else (lone_request_threads, False)
    if task == GENERATIVE_TASK or threads <= max(1, intra_op_threads):
        return 1, False
    return threads, auto
