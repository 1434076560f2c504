"""Redis stopped mid-stream: limits keep serving locally, report it, and share again after."""

from __future__ import annotations

import asyncio
import logging

import pytest
from redis.asyncio import Redis

from mpchat.limits import ProviderBudget, RateLimiter, UpstreamGate
from tests.limits.limits_support import PrivateRedis
from tests.utils import wait_until


async def test_outage_and_recovery(
    private_redis: PrivateRedis, caplog: pytest.LogCaptureFixture
) -> None:
    await private_redis.start()
    clients = [Redis.from_url(private_redis.url) for _ in range(2)]
    fast = {"op_timeout": 0.3, "probe_interval": 0.1}
    changes: list[bool] = []
    limiter = RateLimiter("100000/minute", redis=clients[0], on_degraded=changes.append, **fast)
    other = RateLimiter("100000/minute", redis=clients[1], **fast)
    gate = UpstreamGate("p", max_concurrency=2, redis=clients[0], poll_interval=0.01, **fast)
    budget = ProviderBudget("p", requests_per_minute=100000, redis=clients[0], **fast)
    decisions = 0
    stop = asyncio.Event()

    async def stream() -> None:
        nonlocal decisions
        while not stop.is_set():
            assert (await limiter.hit("stream")).allowed
            lease = await gate.reserve("stream")
            async for _ in lease.wait():
                pass
            await lease.release()
            await budget.reserve(10, max_wait=0)
            decisions += 1
            await asyncio.sleep(0.005)  # pacing, so the stream does not starve the test

    caplog.set_level(logging.WARNING, logger="mpchat.limits")
    task = asyncio.create_task(stream())
    try:
        await wait_until(lambda: decisions > 10, timeout=5)
        assert (await other.peek("stream")).remaining < 100000  # shared before the outage
        assert not limiter.degraded

        await private_redis.stop()

        await wait_until(
            lambda: limiter.degraded and gate.degraded and budget.degraded, timeout=5
        )
        during = decisions
        await wait_until(lambda: decisions > during + 20, timeout=5)  # still serving

        await private_redis.start()

        await wait_until(
            lambda: not (limiter.degraded or gate.degraded or budget.degraded), timeout=10
        )
        assert not task.done()
    finally:
        stop.set()
        await task  # re-raises anything the stream hit
    assert changes == [True, False]  # one report per transition, not per request
    outages = [r for r in caplog.records if "redis unavailable for rate limit" in r.message]
    assert len(outages) == 1

    for _ in range(3):
        assert (await limiter.hit("after")).allowed

    async def shared_again() -> bool:
        return (await other.peek("after")).remaining == 100000 - 3

    await wait_until(shared_again, timeout=5)

    async def no_slot_leaked() -> bool:  # slots released during the outage were cleaned up
        lease = await gate.reserve("after")
        await lease.release()
        return await clients[0].zcard("mpchat:gate:p:leases") == 0

    await wait_until(no_slot_leaked, timeout=5)
    await gate.aclose()
    for client in clients:
        await client.aclose()
