"""RedisGuard: a failing or hung Redis costs one timeout per probe interval, not per call."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from mpchat.limits._redis import UNAVAILABLE, RedisGuard


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def unused_redis() -> AsyncIterator[Redis]:
    """A client the operations below never touch (they stand in for Redis themselves)."""
    client = Redis(host="127.0.0.1", port=1)
    yield client
    await client.aclose()


async def test_hung_operation_times_out_once_then_local_until_the_probe(
    unused_redis: Redis,
) -> None:
    clock = Clock()
    changes: list[bool] = []
    guard = RedisGuard(unused_redis, name="test", op_timeout=0.05, probe_interval=2.0,
                       on_change=changes.append, clock=clock)
    calls = 0
    never = asyncio.Event()

    async def hang(_: Redis) -> int:
        nonlocal calls
        calls += 1
        await never.wait()
        return 1

    assert await guard.run(hang) is UNAVAILABLE
    assert guard.degraded and not guard.shared and changes == [True] and calls == 1
    for _ in range(10):  # inside the probe interval: not even tried
        assert await guard.run(hang) is UNAVAILABLE
    assert calls == 1
    clock.now += 2.0  # the interval has passed: exactly one probe
    assert await guard.run(hang) is UNAVAILABLE
    assert calls == 2 and changes == [True]  # still degraded, no second report

    async def ok(_: Redis) -> int:
        return 7

    assert await guard.run(ok) is UNAVAILABLE  # the failed probe restarted the interval
    clock.now += 2.0
    assert await guard.run(ok) == 7
    assert not guard.degraded and guard.shared and changes == [True, False]


async def test_only_one_caller_probes_at_a_time(unused_redis: Redis) -> None:
    clock = Clock()
    guard = RedisGuard(unused_redis, name="test", op_timeout=5, clock=clock)

    async def refused(_: Redis) -> int:
        raise RedisConnectionError("refused")

    assert await guard.run(refused) is UNAVAILABLE
    clock.now += guard.probe_interval
    started, release = asyncio.Event(), asyncio.Event()
    probes = 0

    async def slow(_: Redis) -> int:
        nonlocal probes
        probes += 1
        started.set()
        await release.wait()
        return 1

    probe = asyncio.create_task(guard.run(slow))
    await started.wait()
    others = await asyncio.gather(*(guard.run(slow) for _ in range(5)))
    assert others == [UNAVAILABLE] * 5 and probes == 1  # they did not wait on the probe
    release.set()
    assert await probe == 1 and not guard.degraded


async def test_without_redis_nothing_is_shared() -> None:
    guard = RedisGuard(None, name="test")

    async def op(_: Redis) -> int:
        raise AssertionError("must not run")

    assert await guard.run(op) is UNAVAILABLE
    assert not guard.degraded and not guard.shared
