"""Admission to a route: what a request that never reached the provider gives back."""

from __future__ import annotations

import asyncio

from mpchat.chat.upstream import Route, Upstream
from mpchat.limits import BreakerState, CircuitBreaker, ProviderBudget, UpstreamGate
from mpchat.metrics import Metrics
from mpchat.providers.demo import DemoModel
from mpchat.providers.retry import RetryPolicy


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _upstream(breaker: CircuitBreaker, budget: ProviderBudget) -> Upstream:
    route = Route(DemoModel(), UpstreamGate("demo", max_concurrency=1, queue_size=1,
                                            queue_timeout=5), budget, breaker)
    return Upstream([route], retry=RetryPolicy(attempts=1), metrics=Metrics(),
                    sleep=asyncio.sleep)


async def test_an_unsent_admission_gives_back_its_probe_and_budget() -> None:
    """Released before its request was sent: the half-open probe and the budget share return."""
    clock = Clock()
    breaker = CircuitBreaker("demo", failure_threshold=1, cooldown=5, clock=clock)
    budget = ProviderBudget("demo", requests_per_minute=10, tokens_per_minute=1000)
    upstream = _upstream(breaker, budget)
    breaker.record_failure()
    clock.now += 5
    assert breaker.state is BreakerState.HALF_OPEN
    before = budget._local.requests
    admission = await upstream.admit("u1", tokens=100)
    assert admission.probe and not breaker.allow()
    await admission.release()  # e.g. the input check refused it, or its client left
    assert breaker.allow()  # the next request probes at once
    assert budget._local.requests >= before - 0.01  # the request share came back
    assert budget._local.tokens >= 1000 - 0.01
    await upstream.aclose()


async def test_a_sent_admission_keeps_its_budget_share() -> None:
    """Released after the provider was called without usage: the estimate stays spent."""
    budget = ProviderBudget("demo", requests_per_minute=10, tokens_per_minute=1000)
    upstream = _upstream(CircuitBreaker("demo"), budget)
    admission = await upstream.admit("u1", tokens=100)
    admission.reached = True
    await admission.release()
    assert budget._local.tokens <= 900 + 1  # refills a little with time, never the 100
    assert budget._local.requests <= 9 + 0.1
    await upstream.aclose()
