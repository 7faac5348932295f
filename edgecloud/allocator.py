"""glibc's allocator, set for servers that receive large messages.

Contract: ``release_large_buffers(threshold_bytes)`` fixes glibc malloc's mmap threshold
(``M_MMAP_THRESHOLD``), so every block above it is mapped on its own and given back to the OS when
freed. It returns whether it applied (False where the C library is not glibc). Called once per
server process, before serving (``edgecloud.lifecycle.run_until_signal``), with
``THRESHOLD_BYTES`` (128 KiB) by default, or ``COMPUTE_THRESHOLD_BYTES`` (32 MiB) in a process
whose model runs on torch's CPU allocator (the cloud worker).

``HeapTrimmer.after(size)``: a front calls it once it has handled a message of ``size`` bytes;
from ``min_bytes`` up, glibc's ``malloc_trim(0)`` runs ``delay_s`` later on a worker thread (at most
one pending at a time), handing back the free pages inside every malloc arena. A large gRPC
message arrives in many small slices allocated from the C-core threads' arenas, below the mmap
threshold; freed, they leave holes that stay resident until a trim.

``HeapTrimmer.after_compute()``: a torch model calls it after each model call; once the process has
made no model call for ``idle_s`` (1 s), one trim runs (the same one-pending rule). Under the
compute threshold the heap keeps what a burst of large batches grew it by (measured: a worker at
c=64 with batches of 1-32 long texts plateaus at ~690 MiB RSS instead of ~500); an idle worker
hands that back (one trim: 702 -> 496 MiB), and the next burst pays its page faults once, not per
tensor. Nothing happens where the C library is not glibc.

Why: by default glibc raises the threshold after the first large block is freed (up to 32 MiB);
from then on a 12 MiB gRPC message or a 60 MB decode is carved from the heap and its pages stay
resident after it is freed. Measured on the gateway (``python -m tests.hostile.large_payloads``:
a million-element BYTES tensor and a 12 MiB element over gRPC plus a million-element JSON body,
10 passes, RSS growth after the first pass): 500 MiB before this change set, 67 MiB once a refused
request's exception no longer held its bytes (``edgecloud.grpc_server.translate_errors``), 15-24
MiB with this as well, +1.7 MiB with the ``HeapTrimmer`` below (and requests refused from their
shapes before decoding, and large JSON parsed in a helper process).
"""

from __future__ import annotations

import asyncio
import ctypes

__all__ = ["COMPUTE_THRESHOLD_BYTES", "HeapTrimmer", "M_MMAP_THRESHOLD", "THRESHOLD_BYTES", "heap_trimmer",
           "release_large_buffers"]

M_MMAP_THRESHOLD = -3
"""glibc's ``mallopt`` parameter number (malloc.h)."""
THRESHOLD_BYTES = 128 * 1024
"""For a server whose own large blocks are messages: they go back to the OS as soon as freed."""
COMPUTE_THRESHOLD_BYTES = 32 * 1024 * 1024
"""For a process that runs torch on the CPU. Torch keeps no cache of CPU memory: every intermediate
tensor is a ``malloc`` and a ``free``. Above the threshold each one is a fresh mapping, paid for in
page faults on first touch and in ``munmap`` (a TLB shoot-down on every core running one of the
process's threads) when freed. With 128 KiB, the reference encoder's batch-32 throughput fell by
23-25% (in-process, 2 cores: 889 -> 686 sentences/s with two 1-thread instances, 660 -> 497 with
one 2-thread instance; 1 MiB: 817; 4 MiB: 885; 32 MiB: 906). 32 MiB is glibc's own ceiling for its
dynamic threshold, fixed from the start: tensors come from the heap, and a message or decode over
32 MiB is still mapped and given back at once; smaller freed messages are handed back by the
``HeapTrimmer``. ONNX Runtime allocates from its own arena and does not care."""


def release_large_buffers(threshold_bytes: int = THRESHOLD_BYTES) -> bool:
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, threshold_bytes))


def _malloc_trim():
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


class HeapTrimmer:
    def __init__(self, min_bytes: int = 1024 * 1024, delay_s: float = 0.05, idle_s: float = 1.0):
        self.min_bytes = min_bytes
        self.delay_s = delay_s
        self.idle_s = idle_s
        self._trim = _malloc_trim()
        # The process's trimmer outlives event loops (restarts, tests): what is pending or armed
        # belongs to one loop, and a loop that closed first never runs it, so it counts on that
        # loop only.
        self._pending_on: asyncio.AbstractEventLoop | None = None
        self._idle_timer_on: asyncio.AbstractEventLoop | None = None
        self._computed_at = 0.0
        self.trims = 0

    def after(self, size: int) -> None:
        if size < self.min_bytes or self._trim is None:
            return
        self._trim_after(asyncio.get_running_loop(), self.delay_s)

    def after_compute(self) -> None:
        if self._trim is None:
            return
        loop = asyncio.get_running_loop()
        self._computed_at = loop.time()
        if self._idle_timer_on is not loop:
            self._idle_timer_on = loop
            loop.call_later(self.idle_s, self._when_idle)

    def _when_idle(self) -> None:
        loop = asyncio.get_running_loop()
        quiet = loop.time() - self._computed_at
        if quiet < self.idle_s:  # a model call since: wait out the rest of the quiet period
            loop.call_later(self.idle_s - quiet, self._when_idle)
            return
        self._idle_timer_on = None
        self._trim_after(loop, 0.0)

    def _trim_after(self, loop: asyncio.AbstractEventLoop, delay_s: float) -> None:
        """One trim ``delay_s`` from now, unless one is already pending on ``loop``."""
        if self._pending_on is not loop:
            self._pending_on = loop
            loop.call_later(delay_s, self._start)

    def _start(self) -> None:
        # ctypes lets go of the GIL for the call: the loop goes on while the heap is walked.
        future = asyncio.get_running_loop().run_in_executor(None, self._trim, 0)
        future.add_done_callback(self._done)

    def _done(self, future: asyncio.Future) -> None:
        self._pending_on = None
        self.trims += 1
        future.exception()  # retrieved: a failed trim is nothing to report


heap_trimmer = HeapTrimmer()
"""The process's one trimmer (the heap is the process's): the gRPC and REST fronts share it."""
