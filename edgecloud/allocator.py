"""glibc's allocator, set for servers that receive large messages.

Contract: ``release_large_buffers()`` fixes glibc malloc's mmap threshold (``M_MMAP_THRESHOLD``) at
128 KiB, so every block above it is mapped on its own and given back to the OS when freed. It
returns whether it applied (False where the C library is not glibc). Called once per server
process, before serving (``edgecloud.lifecycle.run_until_signal``).

Why: by default glibc raises the threshold after the first large block is freed (up to 32 MiB);
from then on a 12 MiB gRPC message or a 60 MB decode is carved from the heap and its pages stay
resident after it is freed. Measured on the gateway (``python -m tests.hostile.large_payloads``:
a million-element BYTES tensor and a 12 MiB element over gRPC plus a million-element JSON body,
10 passes, RSS growth after the first pass): 500 MiB before this change set, 67 MiB once a refused
request's exception no longer held its bytes (``edgecloud.grpc_server.translate_errors``), 15-24
MiB with this as well.
"""

from __future__ import annotations

import ctypes

__all__ = ["M_MMAP_THRESHOLD", "release_large_buffers"]

M_MMAP_THRESHOLD = -3
"""glibc's ``mallopt`` parameter number (malloc.h)."""
THRESHOLD_BYTES = 128 * 1024


def release_large_buffers(threshold_bytes: int = THRESHOLD_BYTES) -> bool:
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, threshold_bytes))
