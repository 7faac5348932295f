"""RetryPolicy's backoff schedule and Attempts' decisions, on injected randomness and a fake clock
(no sleeping)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgecloud.errors import DeadlineExceeded, InvalidArgument, NotFound, Unavailable
from gateway.client.retry import Attempts, Jitter, RetryPolicy


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_default_policy_is_the_documented_one():
    policy = RetryPolicy()
    assert (policy.max_attempts, policy.initial_backoff_s, policy.max_backoff_s, policy.multiplier, policy.jitter) \
        == (3, 0.05, 1.0, 2.0, Jitter.FULL)


def test_caps_grow_exponentially_then_stop_at_the_maximum():
    policy = RetryPolicy(initial_backoff_s=0.05, max_backoff_s=1.0, multiplier=2)
    assert [policy.cap_s(n) for n in range(1, 8)] == pytest.approx([0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0])
    assert policy.cap_s(10_000) == 1.0  # no overflow on absurd retry counts


def test_full_jitter_scales_the_cap_by_the_random_draw():
    draws = iter([0.0, 0.5, 0.999])
    policy = RetryPolicy(rand=lambda: next(draws))
    assert [policy.backoff_s(n) for n in (1, 2, 3)] == pytest.approx([0.0, 0.05, 0.2 * 0.999])


def test_equal_and_no_jitter():
    assert RetryPolicy(jitter=Jitter.EQUAL, rand=lambda: 0.5).backoff_s(2) == pytest.approx(0.075)
    assert RetryPolicy(jitter="none", rand=lambda: 0.0).backoff_s(3) == pytest.approx(0.2)


@given(retry=st.integers(1, 200), draw=st.floats(0, 1, exclude_max=True))
def test_full_jitter_delay_is_within_zero_and_the_cap(retry, draw):
    policy = RetryPolicy(rand=lambda: draw)
    assert 0 <= policy.backoff_s(retry) <= policy.cap_s(retry) <= policy.max_backoff_s


@pytest.mark.parametrize("kwargs", [
    {"max_attempts": 0}, {"initial_backoff_s": -1}, {"initial_backoff_s": 2, "max_backoff_s": 1},
    {"multiplier": 0.5},
])
def test_invalid_policies_are_refused(kwargs):
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)


def test_only_unavailable_is_retried_up_to_max_attempts():
    clock = FakeClock()
    attempts = Attempts(RetryPolicy(max_attempts=3, rand=lambda: 1.0, jitter=Jitter.NONE), None, clock)
    assert attempts.next_timeout() is None
    assert attempts.retry_delay(InvalidArgument("bad")) is None
    assert attempts.retry_delay(NotFound("gone")) is None
    assert attempts.retry_delay(DeadlineExceeded("late")) is None
    assert attempts.retry_delay(Unavailable("down")) == pytest.approx(0.05)
    attempts.next_timeout()
    assert attempts.retry_delay(Unavailable("down")) == pytest.approx(0.1)
    attempts.next_timeout()
    assert attempts.retry_delay(Unavailable("down")) is None  # third attempt was the last


def test_each_attempt_gets_what_is_left_of_the_deadline():
    clock = FakeClock()
    attempts = Attempts(RetryPolicy(max_attempts=10, jitter=Jitter.NONE), 1.0, clock)
    assert attempts.next_timeout() == pytest.approx(1.0)
    clock.now += 0.3                                   # the first attempt took 0.3 s
    delay = attempts.retry_delay(Unavailable("down"))
    assert delay == pytest.approx(0.05)
    clock.now += delay
    assert attempts.next_timeout() == pytest.approx(0.65)


def test_total_time_never_exceeds_the_deadline():
    """Simulate a server that fails every attempt after 0.07 s: attempts + sleeps stay in budget."""
    clock = FakeClock()
    start = clock.now
    attempts = Attempts(RetryPolicy(max_attempts=100, jitter=Jitter.NONE), 0.5, clock)
    while True:
        timeout = attempts.next_timeout()
        clock.now += min(0.07, timeout)
        delay = attempts.retry_delay(Unavailable("down"))
        if delay is None:
            break
        clock.now += delay
    assert clock.now - start <= 0.5
    assert attempts.attempt >= 3


def test_no_retry_when_the_backoff_would_reach_the_deadline():
    clock = FakeClock()
    attempts = Attempts(RetryPolicy(initial_backoff_s=0.5, max_backoff_s=0.5, jitter=Jitter.NONE), 0.6, clock)
    attempts.next_timeout()
    clock.now += 0.2
    assert attempts.retry_delay(Unavailable("down")) is None


def test_an_exhausted_deadline_raises_before_an_attempt():
    clock = FakeClock()
    attempts = Attempts(RetryPolicy(), 0.1, clock)
    attempts.next_timeout()
    clock.now += 0.2
    with pytest.raises(DeadlineExceeded):
        attempts.next_timeout()


def test_a_server_retry_after_hint_lengthens_the_backoff():
    attempts = Attempts(RetryPolicy(rand=lambda: 0.0), None, FakeClock())
    attempts.next_timeout()
    error = Unavailable("busy", retry_after_s=0.25)
    assert attempts.retry_delay(error) == pytest.approx(0.25)
