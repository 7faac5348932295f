"""Admission control: a hard cap on requests in flight, shedding the excess at once.

Contract: ``with admission.admit():`` enters when fewer than ``limit`` requests are in flight and
raises ``Overloaded`` (RESOURCE_EXHAUSTED / HTTP 503, with ``retry_after_s``) otherwise, without
waiting — so in-flight work never exceeds the limit, accepted work is never dropped, and the
excess learns within microseconds that it should retry elsewhere or later.
"""

from __future__ import annotations

import contextlib

from edgecloud.errors import Overloaded


class Admission:
    def __init__(self, limit: int, retry_after_s: float = 0.1):
        self.limit = limit
        self.retry_after_s = retry_after_s
        self.in_flight = 0
        self.shed = 0
        self.peak = 0

    @contextlib.contextmanager
    def admit(self):
        if self.in_flight >= self.limit:
            self.shed += 1
            raise Overloaded(f"server is at capacity ({self.limit} requests in flight); retry later",
                             retry_after_s=self.retry_after_s)
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            yield
        finally:
            self.in_flight -= 1
