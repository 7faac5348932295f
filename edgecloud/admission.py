"""Admission control: a hard cap on requests in flight, shedding the excess at once.

Contract: ``with admission.admit():`` enters when fewer than ``limit`` requests are in flight and
raises ``Overloaded`` (RESOURCE_EXHAUSTED / HTTP 503, with ``retry_after_s``) otherwise, without
waiting — so in-flight work never exceeds the limit, accepted work is never dropped, and the
excess learns within microseconds that it should retry elsewhere or later.
"""

from __future__ import annotations

from edgecloud.errors import Overloaded


class Admission:
    def __init__(self, limit: int, retry_after_s: float = 0.1):
        self.limit = limit
        self.retry_after_s = retry_after_s
        self.in_flight = 0
        self.shed = 0
        self.peak = 0

    def admit(self) -> _Admitted:
        """A context manager holding one place while its block runs (raises ``Overloaded`` when
        there is none). A plain object, not a generator: it is on every request's path."""
        if self.in_flight >= self.limit:
            self.shed += 1
            raise Overloaded(f"server is at capacity ({self.limit} requests in flight); retry later",
                             retry_after_s=self.retry_after_s)
        self.in_flight += 1
        if self.in_flight > self.peak:
            self.peak = self.in_flight
        return _Admitted(self)


class _Admitted:
    __slots__ = ("_admission",)

    def __init__(self, admission: Admission):
        self._admission = admission

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc_info) -> None:
        self._admission.in_flight -= 1
