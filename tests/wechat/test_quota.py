"""CallQuota: the msgSecCheck call budget, shared through Redis or kept locally."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from mpchat.wechat import CallQuota
from tests.wechat.conftest import Clock


async def test_quota_falls_back_to_a_local_window() -> None:
    broken = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    clock = Clock()
    try:
        quota = CallQuota(redis=broken, limit=2, period=60, clock=clock, sleep=clock.sleep)
        await quota.acquire()
        await quota.acquire()
        assert quota.degraded and clock.slept == []
        await quota.acquire()  # queued until the window allows it, not failed
        assert clock.slept == [pytest.approx(60.001)]
    finally:
        await broken.aclose()
