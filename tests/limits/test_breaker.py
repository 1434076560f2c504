"""Circuit breaker state transitions."""

from __future__ import annotations

from mpchat.limits import BreakerState, CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_opens_after_consecutive_failures_then_probes_and_closes() -> None:
    clock = Clock()
    changes: list[BreakerState] = []
    breaker = CircuitBreaker(
        "p", failure_threshold=3, cooldown=10, clock=clock, on_change=changes.append
    )
    assert breaker.state is BreakerState.CLOSED and breaker.allow()
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success()  # resets the streak: failures must be consecutive
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN and not breaker.allow()
    assert breaker.retry_after() == 10
    clock.now += 9.9
    assert not breaker.allow()
    clock.now += 0.1
    assert breaker.state is BreakerState.HALF_OPEN and breaker.retry_after() == 0
    assert breaker.allow()  # the one probe
    assert not breaker.allow()  # nobody else while it runs
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED and breaker.allow()
    assert changes == [BreakerState.OPEN, BreakerState.HALF_OPEN, BreakerState.CLOSED]


def test_failed_probe_reopens_for_a_full_cooldown() -> None:
    clock = Clock()
    breaker = CircuitBreaker("p", failure_threshold=1, cooldown=5, clock=clock)
    breaker.record_failure()
    clock.now += 5
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN and not breaker.allow()
    clock.now += 4.9
    assert breaker.state is BreakerState.OPEN
    clock.now += 0.1
    assert breaker.state is BreakerState.HALF_OPEN


def test_a_lost_probe_is_forgotten_after_a_cooldown() -> None:
    clock = Clock()
    breaker = CircuitBreaker("p", failure_threshold=1, cooldown=5, clock=clock)
    breaker.record_failure()
    clock.now += 5
    assert breaker.allow()  # this caller never reports back
    clock.now += 4
    assert not breaker.allow()
    clock.now += 1
    assert breaker.allow()


def test_a_probe_never_sent_is_given_back_at_once() -> None:
    clock = Clock()
    breaker = CircuitBreaker("p", failure_threshold=1, cooldown=5, clock=clock)
    breaker.record_failure()
    clock.now += 5
    assert breaker.allow()  # handed to a request that then never reached the provider
    assert not breaker.allow()
    breaker.forget_probe()
    assert breaker.allow() and breaker.state is BreakerState.HALF_OPEN
