"""When a cached answer is fresh, expired, or due for an early refresh (XFetch).

Contract (``Freshness``): ``expired(entry, now)`` is true from ``expires_at`` on (Redis expires
the key at the same time; this guards the LRU and clock skew). ``refresh_early(entry, now)``
implements XFetch (Vattani, Chierichetti, Lowenstein, "Optimal Probabilistic Cache Stampede
Prevention", VLDB 2015): refresh when ``now - compute_s * beta * ln(U) >= expires_at`` with
``U`` uniform in (0, 1] — the probability grows as expiry nears and with how long the answer took
to compute, so one request refreshes a hot key before it expires instead of a stampede of misses
after it does. ``beta`` 0 disables early refresh; ``rand`` is injectable for tests.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

from gateway.cache.envelope import Entry

__all__ = ["Freshness"]


class Freshness:
    def __init__(self, beta: float, rand: Callable[[], float] = random.random):
        self.beta = beta
        self._rand = rand

    @staticmethod
    def expired(entry: Entry, now: float) -> bool:
        return now >= entry.expires_at

    def refresh_early(self, entry: Entry, now: float) -> bool:
        if self.beta <= 0:
            return False
        u = 1.0 - self._rand()  # (0, 1]: ln is defined
        return now - entry.compute_s * self.beta * math.log(u) >= entry.expires_at
