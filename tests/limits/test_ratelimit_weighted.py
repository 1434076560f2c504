"""Weighted hits (tokens per minute) and per-call rates on the sliding-window limiter."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import cast

import pytest
from redis.asyncio import Redis

from mpchat.limits import Rate, RateLimiter

RedisFactory = Callable[[], Redis]
Advance = Callable[[float], Awaitable[None]]
TPM = Rate(100, 60.0)


class Clock:
    """An injected monotonic clock that moves only when a test moves it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _local(clock: Clock) -> tuple[RateLimiter, Advance]:
    async def advance(seconds: float) -> None:
        clock.now += seconds

    return RateLimiter("5/minute", clock=clock), advance


def _aged(redis: Redis, prefix: str, key: str) -> Advance:
    """Redis decides on its own clock, which a test cannot move: move the log back instead."""

    async def advance(seconds: float) -> None:
        log = f"{prefix}rl:{key}"
        hits = cast(list[tuple[bytes, float]], await redis.zrange(log, 0, -1, withscores=True))
        shift = round(seconds * 1_000_000)
        if hits:
            await redis.zadd(log, {member: score - shift for member, score in hits})

    return advance


async def _weighted_window(limiter: RateLimiter, advance: Advance, *, tol: float) -> None:
    """100 tokens a minute: refusals say exactly when enough tokens have left the window."""
    for cost in (40, 30, 20):  # at 0 s, 10 s and 20 s
        d = await limiter.hit("k", cost=cost, rate=TPM)
        assert d.allowed and d.retry_after is None
        await advance(10)
    # 90 used at 30 s: 30 more needs the first hit (40) gone, at 60 s: 30 s from now.
    refused = await limiter.hit("k", cost=30, rate=TPM)
    assert not refused.allowed and refused.remaining == 10
    assert refused.retry_after == pytest.approx(30.001, abs=tol)
    assert (await limiter.hit("k", cost=10, rate=TPM)).allowed  # what is left still fits
    # 100 used: 60 more needs the first two hits (40 + 30) gone; the second leaves at 70 s.
    big = await limiter.peek("k", cost=60, rate=TPM)
    assert not big.allowed and big.remaining == 0
    assert big.retry_after is not None and big.retry_after == pytest.approx(40.001, abs=tol)
    await advance(big.retry_after - 0.2)  # slightly early: only the first has left
    early = await limiter.hit("k", cost=60, rate=TPM)
    assert not early.allowed and early.remaining == 40
    assert early.retry_after is not None and early.retry_after <= 0.2 + tol
    await advance(early.retry_after)
    assert (await limiter.hit("k", cost=60, rate=TPM)).allowed


async def _oversized_cost(limiter: RateLimiter, advance: Advance, *, tol: float) -> None:
    """A cost above the whole limit passes an empty window, then fills it for a full window."""
    assert (await limiter.hit("o", cost=10, rate=TPM)).allowed
    await advance(5)
    waits = await limiter.hit("o", cost=250, rate=TPM)  # needs the whole window: the 10 gone
    assert not waits.allowed and waits.retry_after is not None
    assert waits.retry_after == pytest.approx(55.001, abs=tol)
    await advance(waits.retry_after)
    big = await limiter.hit("o", cost=250, rate=TPM)
    assert big.allowed and big.remaining == 0
    later = await limiter.hit("o", cost=1, rate=TPM)
    assert not later.allowed and later.retry_after == pytest.approx(60.001, abs=tol)


async def test_in_process_weighted_window() -> None:
    await _weighted_window(*_local(Clock()), tol=1e-9)


async def test_in_process_oversized_cost() -> None:
    await _oversized_cost(*_local(Clock()), tol=1e-9)


async def test_redis_weighted_window(redis_factory: RedisFactory, prefix: str) -> None:
    limiter = RateLimiter("5/minute", redis=redis_factory(), prefix=prefix)
    await _weighted_window(limiter, _aged(redis_factory(), prefix, "k"), tol=0.05)
    assert not limiter.degraded


async def test_redis_oversized_cost(redis_factory: RedisFactory, prefix: str) -> None:
    limiter = RateLimiter("5/minute", redis=redis_factory(), prefix=prefix)
    await _oversized_cost(limiter, _aged(redis_factory(), prefix, "o"), tol=0.05)


async def test_redis_weights_are_shared_exactly(redis_factory: RedisFactory, prefix: str) -> None:
    limiters = [RateLimiter("5/minute", redis=redis_factory(), prefix=prefix) for _ in range(3)]
    hits = [limiters[i % 3].hit("shared", cost=7, rate=TPM) for i in range(30)]
    decisions = await asyncio.gather(*hits)
    assert sum(d.allowed for d in decisions) == 14  # 14 * 7 = 98 <= 100 < 15 * 7
    assert (await limiters[0].peek("shared", cost=2, rate=TPM)).allowed
    assert not (await limiters[1].peek("shared", cost=3, rate=TPM)).allowed


async def test_redis_rebuilds_a_missing_total(redis_factory: RedisFactory, prefix: str) -> None:
    """Members without a weight (as earlier versions wrote) weigh 1; a lost sum is recounted."""
    limiter = RateLimiter("5/minute", redis=redis_factory(), prefix=prefix)
    raw = redis_factory()
    assert (await limiter.hit("legacy", cost=3, rate=TPM)).remaining == 97
    now_us = int((await raw.time())[0]) * 1_000_000
    await raw.zadd(f"{prefix}rl:legacy", {"old-a": now_us, "old-b": now_us})
    await raw.delete(f"{prefix}rlw:legacy")
    assert (await limiter.peek("legacy", rate=TPM)).remaining == 95


@pytest.mark.parametrize("cost", [0, -5])
async def test_a_hit_costs_at_least_one(cost: int) -> None:
    with pytest.raises(ValueError):
        await RateLimiter("5/minute").hit("u", cost=cost)


async def test_per_call_rates_leave_the_default_alone() -> None:
    clock = Clock()
    limiter = RateLimiter("2/minute", clock=clock)
    strict = Rate(1, 10.0)
    assert (await limiter.hit("key:rpm:a", rate=strict)).allowed
    refused = await limiter.hit("key:rpm:a", rate=strict)
    assert not refused.allowed and refused.limit == 1
    assert refused.retry_after == pytest.approx(10.001)
    assert [(await limiter.hit("user")).allowed for _ in range(3)] == [True, True, False]
    clock.now += 10.001
    assert (await limiter.hit("key:rpm:a", rate=strict)).allowed
