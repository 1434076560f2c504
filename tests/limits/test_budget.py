"""Provider budgets: requests/tokens per period and the fleet-wide 429 pause."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
from redis.asyncio import Redis

from mpchat.errors import Busy
from mpchat.limits import ProviderBudget

RedisFactory = Callable[[], Redis]


@pytest.fixture(params=["memory", "redis"])
def make_budget(request: pytest.FixtureRequest, prefix: str) -> Callable[..., ProviderBudget]:
    """Budgets on one shared state: in-process, or one Redis client per instance."""
    factory: RedisFactory | None = None
    if request.param == "redis":
        factory = request.getfixturevalue("redis_factory")
    shared: list[ProviderBudget] = []

    def make(**kwargs: object) -> ProviderBudget:
        if factory is None:
            if not shared:  # in-process state is per object: "instances" share one object
                shared.append(ProviderBudget("prov", **kwargs))  # type: ignore[arg-type]
            return shared[0]
        return ProviderBudget("prov", redis=factory(), prefix=prefix, **kwargs)  # type: ignore[arg-type]

    return make


async def test_request_budget_defers_instead_of_exceeding(
    make_budget: Callable[..., ProviderBudget],
) -> None:
    a = make_budget(requests_per_minute=3, period=1.0)
    b = make_budget(requests_per_minute=3, period=1.0)
    await a.reserve()
    await b.reserve()
    await a.reserve()
    with pytest.raises(Busy) as exc:
        await b.reserve(max_wait=0)  # "not now": the caller can say when to retry
    assert exc.value.retry_after is not None and 0 < exc.value.retry_after <= 0.34
    started = time.monotonic()
    await b.reserve(max_wait=2)  # or wait a bounded time for the budget to refill
    assert time.monotonic() - started >= 0.2


async def test_concurrent_callers_are_spread_over_time(
    make_budget: Callable[..., ProviderBudget],
) -> None:
    budgets = [make_budget(requests_per_minute=4, period=1.0) for _ in range(2)]
    started = time.monotonic()

    async def call(i: int) -> float:
        await budgets[i % 2].reserve(max_wait=3)
        return time.monotonic() - started

    times = sorted(await asyncio.gather(*(call(i) for i in range(7))))
    assert sum(t < 0.2 for t in times) == 4  # the burst allowance...
    assert times[-1] >= 0.7  # ...then one per 0.25 s, never more


async def test_tokens_are_reserved_then_settled(
    make_budget: Callable[..., ProviderBudget],
) -> None:
    a = make_budget(tokens_per_minute=100, period=60.0)
    b = make_budget(tokens_per_minute=100, period=60.0)
    reservation = await a.reserve(80)
    with pytest.raises(Busy):
        await b.reserve(30, max_wait=0)
    await reservation.commit(20)  # used less than estimated: 60 tokens come back
    await reservation.commit(20)  # settling twice changes nothing
    await b.reserve(30, max_wait=0)
    more = await b.reserve(40, max_wait=0)
    await more.commit(90)  # used more: the bucket goes into debt
    with pytest.raises(Busy):
        await a.reserve(1, max_wait=0)


async def test_pause_is_seen_by_every_instance(
    make_budget: Callable[..., ProviderBudget],
) -> None:
    a = make_budget(requests_per_minute=1000)
    b = make_budget(requests_per_minute=1000)
    assert await b.paused_for() == 0
    await a.pause(2.0)  # a 429 with Retry-After: 2
    await a.pause(0.5)  # a shorter one never shortens the pause
    paused = await b.paused_for()
    assert 1.5 < paused <= 2.0
    with pytest.raises(Busy) as exc:
        await b.reserve(max_wait=0.1)
    assert exc.value.retry_after is not None and 1.5 < exc.value.retry_after <= 2.0
