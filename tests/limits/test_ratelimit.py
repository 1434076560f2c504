"""Per-user sliding-window rate limit, in-process and shared through Redis."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import cast

import pytest
from redis.asyncio import Redis

from mpchat.limits import Decision, Rate, RateLimiter, parse_rate

RedisFactory = Callable[[], Redis]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("5/minute", Rate(5, 60.0)),
        ("5 per minute", Rate(5, 60.0)),
        ("3/second", Rate(3, 1.0)),
        ("100/hours", Rate(100, 3600.0)),
        ("1000 / DAY", Rate(1000, 86400.0)),
        ("10/30 seconds", Rate(10, 30.0)),
    ],
)
def test_parse_rate(text: str, expected: Rate) -> None:
    assert parse_rate(text) == expected


@pytest.mark.parametrize("text", ["", "5", "five/minute", "0/minute", "5/fortnight"])
def test_parse_rate_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_rate(text)


def _check_refusals(decisions: list[Decision], *, allowed: int, window: float) -> None:
    assert sum(d.allowed for d in decisions) == allowed
    for d in decisions:
        if d.allowed:
            assert d.retry_after is None
        else:
            assert d.retry_after is not None and 0 < d.retry_after <= window + 0.01
            assert d.remaining == 0


async def test_in_process_exactly_n_of_many_concurrent() -> None:
    limiter = RateLimiter("5/minute")
    decisions = await asyncio.gather(*(limiter.hit("u1") for _ in range(50)))
    _check_refusals(decisions, allowed=5, window=60)
    other = await limiter.hit("u2")
    assert other.allowed and other.remaining == 4


async def test_peek_consumes_nothing() -> None:
    limiter = RateLimiter("5/minute")
    first = await limiter.peek("u")
    assert first.allowed and first.remaining == 5 and first.reset_s == 0
    await limiter.hit("u")
    after = await limiter.peek("u")
    assert after.remaining == 4 and 59 < after.reset_s <= 60.01
    assert (await limiter.peek("u")).remaining == 4


class Clock:
    """An injected monotonic clock that moves only when a test moves it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


Advance = Callable[[float], Awaitable[None]]


async def _retry_after_is_exact(limiters: list[RateLimiter], advance: Advance) -> None:
    """3/second: refused hits say when to come back, and coming back then works."""
    hits = [limiters[i % len(limiters)].hit("user") for i in range(12)]
    decisions = await asyncio.gather(*hits)
    _check_refusals(decisions, allowed=3, window=1.0)
    retry = max(d.retry_after or 0 for d in decisions)
    # Slightly early is refused (the window really is sliding, not reset early)...
    await advance(max(0.0, retry - 0.15))
    early = await limiters[0].hit("user")
    assert not early.allowed and early.retry_after is not None and early.retry_after <= 0.2
    # ...and waiting the announced time is accepted, on whichever instance.
    await advance(early.retry_after)
    assert (await limiters[-1].hit("user")).allowed


async def test_in_process_retry_after_is_exact() -> None:
    clock = Clock()

    async def advance(seconds: float) -> None:
        clock.now += seconds

    await _retry_after_is_exact([RateLimiter("3/second", clock=clock)], advance)


async def test_in_process_window_slides_on_the_injected_clock() -> None:
    clock = Clock()
    limiter = RateLimiter("2/minute", clock=clock)
    assert (await limiter.hit("u")).allowed
    clock.now += 30
    assert (await limiter.hit("u")).allowed
    refused = await limiter.hit("u")
    assert not refused.allowed and refused.retry_after == pytest.approx(30.001)
    clock.now += 30.001  # the first hit leaves the window, the second stays
    again = await limiter.hit("u")
    assert again.allowed and again.remaining == 0
    assert (await limiter.peek("u")).reset_s == pytest.approx(30.0)  # the second hit's turn


async def test_redis_three_instances_share_exactly(
    redis_factory: RedisFactory, prefix: str
) -> None:
    limiters = [RateLimiter("5/minute", redis=redis_factory(), prefix=prefix) for _ in range(3)]
    decisions = await asyncio.gather(*(limiters[i % 3].hit("alice") for i in range(30)))
    _check_refusals(decisions, allowed=5, window=60)
    assert not any(limiter.degraded for limiter in limiters)
    peek = await limiters[1].peek("alice")
    assert not peek.allowed and peek.remaining == 0 and peek.retry_after is not None
    assert (await limiters[2].hit("bob")).allowed


async def test_redis_retry_after_is_exact(redis_factory: RedisFactory, prefix: str) -> None:
    limiters = [RateLimiter("3/second", redis=redis_factory(), prefix=prefix) for _ in range(3)]
    key = f"{prefix}rl:user"
    ager = redis_factory()

    async def advance(seconds: float) -> None:
        # Redis decides on its own clock, which a test cannot move: move the log back instead.
        hits = cast(list[tuple[bytes, float]], await ager.zrange(key, 0, -1, withscores=True))
        shift = round(seconds * 1_000_000)
        await ager.zadd(key, {member: score - shift for member, score in hits})

    await _retry_after_is_exact(limiters, advance)
