"""A retry budget: extra attempts stay within a fixed share of original requests.

Contract: every original request deposits ``ratio`` tokens (up to ``burst``); a retry spends one
token and is refused when less than one is left. Over any long run, retries <= ratio * requests
+ burst. Never consulted for non-retryable errors (INVALID_ARGUMENT and the like).
"""

from __future__ import annotations


class RetryBudget:
    def __init__(self, ratio: float = 0.2, burst: float = 20):
        self.ratio = ratio
        self.burst = burst
        self._tokens = burst
        self.spent = 0
        self.refused = 0

    def reconfigure(self, ratio: float, burst: float) -> None:
        self.ratio, self.burst = ratio, burst
        self._tokens = min(self._tokens, burst)

    def on_request(self) -> None:
        self._tokens = min(self.burst, self._tokens + self.ratio)

    def try_spend(self) -> bool:
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            self.spent += 1
            return True
        self.refused += 1
        return False

    @property
    def tokens(self) -> float:
        return self._tokens
