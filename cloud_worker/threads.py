"""How one model's batches share the CPUs: ``runtime.instances`` and ``intra_op_threads`` as a plan.

Contract: ``thread_plan`` turns the settings into a ``ThreadPlan`` for a device: a fixed count of
instances shares the CPUs out evenly; ``instances: auto`` on a CPU with two threads or more
``splits``: a batch alone runs on ``wide`` threads, one beside another on ``narrow`` threads.
``use_threads`` sets the calling thread's own torch intra-op count before each batch (OpenMP's
thread count is per calling thread). Importing this module does not import torch.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


@dataclass(frozen=True, slots=True)
class ThreadPlan:
    """How one model's batches share the CPUs."""

    instances: int
    """Batches that may run at the same time (each on its own runner thread)."""
    wide: int
    """torch threads of a batch that runs alone (every batch, unless the plan ``splits``)."""
    narrow: int
    """torch threads of a batch that runs beside another (``splits`` only; else ``wide``)."""

    @property
    def splits(self) -> bool:
        return self.narrow != self.wide

    def __str__(self) -> str:
        if self.splits:
            return f"{_threads(self.wide)} for a batch alone, {self.narrow} each for two at once"
        if self.instances == 1:
            return f"one batch at a time on {_threads(self.wide)}"
        return f"{self.instances} batches at a time on {_threads(self.wide)} each"


def _threads(count: int) -> str:
    return f"{count} torch thread{'' if count == 1 else 's'}"


def thread_plan(instances: int | str, intra_op: int | None, device_type: str) -> ThreadPlan:
    """``runtime.instances`` and ``intra_op_threads`` on a ``device_type`` (torch's: cpu, cuda): a
    fixed count of instances shares the CPUs out evenly (or takes ``intra_op`` threads each);
    ``auto`` on a CPU runs two instances that split ``intra_op`` threads (default: every CPU) when
    both are busy, one on a GPU or where there is only one thread to split."""
    if instances != "auto":
        count = int(instances)
        threads = intra_op or max(1, available_cpus() // count)
        return ThreadPlan(count, threads, threads)
    wide = intra_op or available_cpus()
    if device_type != "cpu" or wide < 2:
        return ThreadPlan(1, wide, wide)
    return ThreadPlan(2, wide, wide // 2)


_this_thread = threading.local()


def use_threads(count: int) -> None:
    """Run the calling thread's next torch operators on ``count`` intra-op threads (OpenMP's thread
    count is the calling thread's own; a call that changes nothing costs nothing). torch also keeps
    the last count set anywhere for threads that have not run an operator yet: every runtime loads
    and warms up, at the plan's ``wide`` count, before any batch runs narrow."""
    current = getattr(_this_thread, "count", None)
    if current == count:
        return
    import torch  # the worker's config and front need no torch: only a runtime's threads call this

    if current is None:
        torch.get_num_threads()  # torch's own first-use set-up of this thread, which would undo ours later
    torch.set_num_threads(count)
    _this_thread.count = count


__all__ = ["ThreadPlan", "available_cpus", "thread_plan", "use_threads"]
