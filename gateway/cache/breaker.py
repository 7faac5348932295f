"""A circuit breaker for the cache's remote backend.

Contract (``CircuitBreaker``), on an injected monotonic clock:
- CLOSED: commands go to the backend. ``consecutive_failures`` independent failures in a row
  (no success between) open it. A failure is independent when its command started after the
  last counted failure was recorded (``record_failure(started_at)``): the commands that were in
  flight together when one stall hit (a gateway descheduled for longer than the socket timeout,
  a GC pause) count once, not once each — so a loaded gateway does not open its own breaker on a
  healthy Redis, while a dead or frozen one, which fails command after command, still opens it
  within ``consecutive_failures`` socket timeouts.
- OPEN: ``allows_requests()`` is false, so requests neither read nor write the cache. Once
  ``open_s`` has passed since it opened, ``try_probe()`` returns true to exactly one caller and the
  breaker becomes HALF_OPEN.
- HALF_OPEN: still no requests; the one probe's outcome decides: success closes it, failure opens
  it again for another ``open_s``.
- A success reported while OPEN (a command that started before it opened) changes nothing; only
  the probe closes an open breaker. A failure reported while OPEN changes nothing either.
- Every state change calls ``on_change(old, new)`` once (the cache logs one line and sets a gauge).

Contract (``NodeBreakers``): one breaker per backend node, made CLOSED on first use, so a Redis
Cluster master that dies stops requests for its slots only; the other masters' keys keep their
cache. A standalone Redis is one node, ``""``. When a failover moves slots to a promoted replica,
their keys map to that node's breaker (closed) at once. ``worst()`` is the most severe state of
any breaker (open, then half-open, then closed), for the gauge.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

from edgecloud.clock import Clock

__all__ = ["BreakerState", "CircuitBreaker", "NodeBreakers"]


class BreakerState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    def __init__(self, consecutive_failures: int, open_s: float, clock: Clock,
                 on_change: Callable[[BreakerState, BreakerState], None] | None = None):
        if consecutive_failures < 1 or open_s <= 0:
            raise ValueError("consecutive_failures must be >= 1 and open_s > 0")
        self.consecutive_failures = consecutive_failures
        self.open_s = open_s
        self._clock = clock
        self._on_change = on_change
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._last_failure_at = float("-inf")

    @property
    def state(self) -> BreakerState:
        return self._state

    def allows_requests(self) -> bool:
        """True when requests may use the backend (CLOSED)."""
        return self._state is BreakerState.CLOSED

    def try_probe(self) -> bool:
        """True for the one caller that should probe now (OPEN and the cool-down is over)."""
        if self._state is BreakerState.OPEN and self._clock.now() - self._opened_at >= self.open_s:
            self._set(BreakerState.HALF_OPEN)
            return True
        return False

    def record_success(self) -> None:
        if self._state is BreakerState.CLOSED:
            self._failures = 0
        elif self._state is BreakerState.HALF_OPEN:
            self._failures = 0
            self._set(BreakerState.CLOSED)

    def record_failure(self, started_at: float | None = None) -> None:
        """A command failed; ``started_at`` (on the breaker's clock) is when it was sent, if known."""
        if self._state is BreakerState.CLOSED:
            if started_at is not None and started_at < self._last_failure_at:
                return  # it overlapped a failure already counted
            self._last_failure_at = self._clock.now()
            self._failures += 1
            if self._failures >= self.consecutive_failures:
                self._open()
        elif self._state is BreakerState.HALF_OPEN:
            self._open()

    def reconfigure(self, consecutive_failures: int, open_s: float) -> None:
        self.consecutive_failures = consecutive_failures
        self.open_s = open_s

    def _open(self) -> None:
        self._opened_at = self._clock.now()
        self._failures = 0
        self._set(BreakerState.OPEN)

    def _set(self, state: BreakerState) -> None:
        old, self._state = self._state, state
        if old is not state and self._on_change is not None:
            self._on_change(old, state)


_SEVERITY = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}


class NodeBreakers:
    def __init__(self, consecutive_failures: int, open_s: float, clock: Clock,
                 on_change: Callable[[str, BreakerState, BreakerState], None] | None = None):
        self.consecutive_failures = consecutive_failures
        self.open_s = open_s
        self._clock = clock
        self._on_change = on_change
        self._breakers: dict[str, CircuitBreaker] = {}

    def get(self, node: str = "") -> CircuitBreaker:
        breaker = self._breakers.get(node)
        if breaker is None:
            on_change = self._on_change
            breaker = CircuitBreaker(self.consecutive_failures, self.open_s, self._clock,
                                     on_change=None if on_change is None else
                                     lambda old, new: on_change(node, old, new))
            self._breakers[node] = breaker
        return breaker

    def reconfigure(self, consecutive_failures: int, open_s: float) -> None:
        self.consecutive_failures = consecutive_failures
        self.open_s = open_s
        for breaker in self._breakers.values():
            breaker.reconfigure(consecutive_failures, open_s)

    def worst(self) -> BreakerState:
        return max((b.state for b in self._breakers.values()), key=_SEVERITY.__getitem__,
                   default=BreakerState.CLOSED)
