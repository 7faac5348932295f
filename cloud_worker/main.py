"""``edgecloud serve cloud --config FILE``: run one cloud worker until SIGINT/SIGTERM.

Contract: ``run(config_path)`` loads the config (env prefix ``EDGECLOUD_CLOUD_``; a bad one raises
``ConfigError`` naming the field, for the CLI to print), serves until a signal, stops gracefully
(NOT_SERVING, drain for ``server.grace_s``, close) and returns the exit status. ``serve`` is the
same for a config already loaded; ``edgecloud.lifecycle.run_until_signal`` is the one owner of the
signal handlers. ``ready(worker)`` is called once the worker answers (ports bound). Both apply the
process-wide ``runtime.openmp_wait_policy`` before torch loads, the tokenizer's serial mode
(``keep_tokenizers_serial``) and glibc's mmap threshold for a torch process
(``edgecloud.allocator.COMPUTE_THRESHOLD_BYTES``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Callable

from cloud_worker.config import CloudConfig, load_cloud_config
from cloud_worker.worker import CloudWorker
from edgecloud.allocator import COMPUTE_THRESHOLD_BYTES
from edgecloud.lifecycle import configure_logging, run_until_signal

log = logging.getLogger(__name__)


BRIEF_SPIN_COUNT = 300_000
"""libgomp busy-wait iterations before a waiting thread sleeps, for ``openmp_wait_policy: brief``
(libgomp's own default when ``OMP_WAIT_POLICY`` is unset, pinned here so the environment cannot
change it): a few milliseconds. A request that finds the worker idle wakes the threads once, and
they stay awake through its forward. At 3,000 (tens of microseconds), a lone request every ~50 ms
took 16.1 ms instead of 11.7 ms (p50, ``bench.cloud_omp``, 2-core VM), for 16% less CPU per
back-to-back request: most likely a thread on a virtual CPU fell asleep again while its partner
was still waking, many times in one forward."""

_OPENMP_ENV = {
    "brief": {"OMP_WAIT_POLICY": None, "GOMP_SPINCOUNT": str(BRIEF_SPIN_COUNT)},
    "passive": {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": None},
    "active": {"OMP_WAIT_POLICY": "ACTIVE", "GOMP_SPINCOUNT": None},
}


def apply_openmp_wait_policy(policy: str) -> None:
    """Export ``OMP_WAIT_POLICY`` / ``GOMP_SPINCOUNT`` for ``runtime.openmp_wait_policy`` (None:
    unset); OpenMP reads them once, when torch loads, so this only takes effect in a process that has
    not imported torch yet."""
    if policy == "inherit":
        return
    wanted = _OPENMP_ENV[policy]
    if "torch" in sys.modules:
        if any(os.environ.get(name) != value for name, value in wanted.items()):
            log.warning("runtime.openmp_wait_policy=%s has no effect: torch is already loaded", policy)
        return
    for name, value in wanted.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def keep_tokenizers_serial() -> None:
    """``TOKENIZERS_PARALLELISM=false`` unless already set (the operator's value is kept): a batch's
    texts are tokenized on the model instance's own thread, instead of waking the tokenizer's pool
    of one thread per core on every batch. Those threads took cores from torch's under load:
    602-616 -> 648-654 sentences/s at c=64 (one 2-thread instance, 2-core VM). A request's few
    texts gain nothing from a pool."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


async def serve(config: CloudConfig, *, ready: Callable[[CloudWorker], None] | None = None,
                stop_event: asyncio.Event | None = None) -> None:
    apply_openmp_wait_policy(config.runtime.openmp_wait_policy)
    keep_tokenizers_serial()
    worker = CloudWorker(config)
    await run_until_signal(
        [worker],
        config.server.grace_s,
        on_started=(lambda: ready(worker)) if ready is not None else None,
        stop_event=stop_event,
        mmap_threshold_bytes=COMPUTE_THRESHOLD_BYTES,  # torch's tensors come from the heap, not fresh mappings
    )


def run(config_path: str | None) -> int:
    configure_logging()
    config = load_cloud_config(config_path)
    asyncio.run(serve(config))
    return 0


__all__ = ["BRIEF_SPIN_COUNT", "apply_openmp_wait_policy", "keep_tokenizers_serial", "run", "serve"]
