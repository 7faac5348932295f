"""Retrying a call on UNAVAILABLE with jittered exponential backoff, inside one deadline.

Contract: ``RetryPolicy`` decides how long to wait before retry ``n``; ``Attempts`` tracks one
call: the gRPC timeout each attempt gets (what is left of the call's deadline, so the total time
across retries never exceeds it) and whether to try again after an error. Only ``Unavailable``
is retried (the server was not reached or is going away; inference is idempotent), never
INVALID_ARGUMENT, NOT_FOUND, DEADLINE_EXCEEDED or anything else. Time and randomness are injected
(``clock``, ``RetryPolicy.rand``), so tests run without sleeping.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from edgecloud.errors import DeadlineExceeded, ErrorKind, InferenceError

__all__ = ["DEFAULT_RETRY", "Attempts", "Jitter", "RetryPolicy"]


class Jitter(enum.Enum):
    """How a backoff ``cap`` becomes a delay (see the AWS "Exponential Backoff and Jitter" note)."""

    FULL = "full"
    """uniform in [0, cap): spreads a herd of clients the most."""
    EQUAL = "equal"
    """cap/2 + uniform in [0, cap/2)."""
    NONE = "none"
    """exactly cap."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When and how long to wait before retrying a call that failed with UNAVAILABLE.

    Retry ``n`` (1 for the first retry) waits ``jitter(min(max_backoff_s,
    initial_backoff_s * multiplier ** (n - 1)))``. ``max_attempts`` counts the first try, so
    ``RetryPolicy(max_attempts=1)`` never retries.
    """

    max_attempts: int = 3
    """Tries per call, the first included (>= 1)."""
    initial_backoff_s: float = 0.05
    """Backoff cap before the first retry."""
    max_backoff_s: float = 1.0
    """Largest backoff cap."""
    multiplier: float = 2.0
    """Growth of the cap per retry (>= 1)."""
    jitter: Jitter = Jitter.FULL
    """How the cap becomes a delay."""
    rand: Callable[[], float] = field(default=random.random, compare=False, repr=False)
    """Uniform random in [0, 1); injected by tests."""

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if self.initial_backoff_s < 0 or self.max_backoff_s < self.initial_backoff_s:
            raise ValueError("need 0 <= initial_backoff_s <= max_backoff_s")
        if self.multiplier < 1:
            raise ValueError(f"multiplier must be >= 1, got {self.multiplier}")
        if not isinstance(self.jitter, Jitter):
            object.__setattr__(self, "jitter", Jitter(self.jitter))

    def cap_s(self, retry: int) -> float:
        """The backoff cap before retry ``retry`` (1-based), before jitter."""
        if retry < 1:
            raise ValueError("retries are numbered from 1")
        # Stop multiplying once past the cap so a large retry count cannot overflow.
        cap = self.initial_backoff_s
        for _ in range(retry - 1):
            if cap >= self.max_backoff_s:
                break
            cap *= self.multiplier
        return min(cap, self.max_backoff_s)

    def backoff_s(self, retry: int) -> float:
        """The delay before retry ``retry`` (1-based), jitter applied."""
        cap = self.cap_s(retry)
        if self.jitter is Jitter.FULL:
            return cap * self.rand()
        if self.jitter is Jitter.EQUAL:
            return cap / 2 + cap / 2 * self.rand()
        return cap

    @staticmethod
    def retryable(error: InferenceError) -> bool:
        """Only UNAVAILABLE is worth another try."""
        return error.kind is ErrorKind.UNAVAILABLE


DEFAULT_RETRY = RetryPolicy()
"""3 attempts, 50 ms doubling to at most 1 s, full jitter."""


class Attempts:
    """The attempts of one call: per-attempt timeouts inside one deadline, and retry decisions.

    ``timeout_s`` None means no deadline (attempts get no gRPC timeout; retries are bounded by
    ``max_attempts`` only). A retry is refused when its delay would reach the deadline: the caller
    then raises the last error rather than sleeping into a certain DEADLINE_EXCEEDED.
    """

    def __init__(self, policy: RetryPolicy, timeout_s: float | None, clock: Callable[[], float]):
        self._policy = policy
        self._clock = clock
        self._deadline = None if timeout_s is None else clock() + timeout_s
        self._timeout_s = timeout_s
        self.attempt = 0
        """Attempts started so far."""

    def next_timeout(self) -> float | None:
        """Start an attempt: the gRPC timeout it gets (None: no deadline).

        Raises ``DeadlineExceeded`` when nothing is left of the deadline.
        """
        self.attempt += 1
        if self._deadline is None:
            return None
        remaining = self._deadline - self._clock()
        if remaining <= 0:
            raise DeadlineExceeded(f"deadline of {self._timeout_s:g}s exceeded after {self.attempt - 1} attempts")
        return remaining

    def retry_delay(self, error: InferenceError) -> float | None:
        """Seconds to wait before the next attempt after ``error``, or None to give up.

        A server's ``retry_after_s`` hint lengthens (never shortens) the backoff.
        """
        if not self._policy.retryable(error) or self.attempt >= self._policy.max_attempts:
            return None
        delay = self._policy.backoff_s(self.attempt)
        if error.retry_after_s:
            delay = max(delay, error.retry_after_s)
        if self._deadline is not None and self._clock() + delay >= self._deadline:
            return None
        return delay
