"""The circuit breaker on a fake clock."""

from __future__ import annotations

import pytest

from edgecloud.clock import FakeClock
from gateway.cache.breaker import BreakerState, CircuitBreaker


def make(n=3, open_s=1.0):
    clock = FakeClock()
    changes = []
    breaker = CircuitBreaker(n, open_s, clock, on_change=lambda old, new: changes.append((old, new)))
    return breaker, clock, changes


def test_opens_after_n_consecutive_failures_only():
    breaker, _, changes = make(3)
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success()  # resets the run
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED and breaker.allows_requests()
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN and not breaker.allows_requests()
    assert changes == [(BreakerState.CLOSED, BreakerState.OPEN)]


def test_one_probe_after_the_cool_down_and_success_closes():
    breaker, clock, changes = make(1, open_s=1.0)
    breaker.record_failure()
    clock.advance(0.99)
    assert not breaker.try_probe()
    clock.advance(0.01)
    assert breaker.try_probe()
    assert breaker.state is BreakerState.HALF_OPEN and not breaker.allows_requests()
    assert not breaker.try_probe()  # exactly one probe at a time
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED and breaker.allows_requests()
    assert [new for _, new in changes] == [BreakerState.OPEN, BreakerState.HALF_OPEN, BreakerState.CLOSED]


def test_failed_probe_reopens_for_another_cool_down():
    breaker, clock, _ = make(1, open_s=2.0)
    breaker.record_failure()
    clock.advance(2.0)
    assert breaker.try_probe()
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    clock.advance(1.9)
    assert not breaker.try_probe()
    clock.advance(0.1)
    assert breaker.try_probe()


def test_stale_outcomes_while_open_change_nothing():
    breaker, clock, changes = make(1)
    breaker.record_failure()
    breaker.record_success()  # a command that started before the breaker opened
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN and len(changes) == 1


def test_reconfigure_and_bad_arguments():
    breaker, _, _ = make(5)
    breaker.reconfigure(1, 0.5)
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    with pytest.raises(ValueError):
        CircuitBreaker(0, 1.0, FakeClock())


def test_commands_that_failed_together_count_once():
    breaker, clock, _ = make(3)
    started = clock.now()
    clock.advance(0.03)  # one stall: every command in flight times out at once
    for _ in range(50):
        breaker.record_failure(started)
    assert breaker.state is BreakerState.CLOSED
    for _ in range(2):  # a dead backend fails command after command: each one counts
        started = clock.now()
        clock.advance(0.03)
        breaker.record_failure(started)
    assert breaker.state is BreakerState.OPEN


def test_node_breakers_open_per_node_and_report_the_worst():
    from gateway.cache.breaker import NodeBreakers

    clock = FakeClock()
    changes = []
    breakers = NodeBreakers(2, 1.0, clock, on_change=lambda node, old, new: changes.append((node, new)))
    assert breakers.worst() is BreakerState.CLOSED
    dead, alive = breakers.get("10.0.0.1:6379"), breakers.get("10.0.0.2:6379")
    dead.record_failure()
    clock.advance(0.01)
    dead.record_failure()
    assert dead.state is BreakerState.OPEN and alive.allows_requests()
    assert breakers.get("10.0.0.1:6379") is dead and breakers.worst() is BreakerState.OPEN
    assert changes == [("10.0.0.1:6379", BreakerState.OPEN)]
    breakers.reconfigure(5, 0.5)
    clock.advance(0.5)
    assert dead.try_probe() and breakers.worst() is BreakerState.HALF_OPEN
    dead.record_success()
    assert breakers.worst() is BreakerState.CLOSED and breakers.get("new").consecutive_failures == 5
