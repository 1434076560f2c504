"""admit and record_usage: per-key requests and tokens per minute, quota, usage accounting."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from typing import Any

import pytest

from mpchat.apikeys import ApiKey, ApiKeys
from mpchat.errors import QuotaExceeded, RateLimited
from mpchat.storage.engine import create_engine
from tests.apikeys.conftest import Clocks, make_keys
from tests.conftest import flushed_redis_db

REDIS_URL = os.environ.get("MPCHAT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


async def _refused(keys: ApiKeys, key: ApiKey, tokens: int = 0) -> RateLimited:
    with pytest.raises(RateLimited) as caught:
        await keys.admit(key, tokens=tokens)
    return caught.value


async def test_requests_per_minute_with_an_exact_retry_after(
    keys: ApiKeys, clocks: Clocks
) -> None:
    key, _ = await keys.create(name="rpm", rpm=2)
    other, _ = await keys.create(name="other", rpm=2)
    await keys.admit(key, tokens=10)
    clocks.advance(20)
    await keys.admit(key, tokens=10)
    refused = await _refused(keys, key, 10)
    assert refused.retry_after == pytest.approx(40.001)  # when the first request leaves
    assert refused.to_dict()["retry_after"] == 41 and "请求次数" in refused.message
    await keys.admit(other, tokens=10)  # each key has its own window
    clocks.advance(40.001)
    await keys.admit(key, tokens=10)


async def test_tokens_per_minute_weigh_each_request(keys: ApiKeys, clocks: Clocks) -> None:
    key, _ = await keys.create(name="tpm", tpm=1000)
    await keys.admit(key, tokens=600)
    clocks.advance(10)
    await keys.admit(key, tokens=300)
    refused = await _refused(keys, key, 200)  # 900 + 200 > 1000: the 600 must leave first
    assert refused.retry_after == pytest.approx(50.001) and "token" in refused.message
    await keys.admit(key, tokens=100)  # exactly the rest still fits
    await keys.admit(key, tokens=0)  # a request that announces no tokens is not weighed
    clocks.advance(50.001)
    await keys.admit(key, tokens=600)


async def test_a_request_refused_for_tokens_still_counts_as_a_request(
    keys: ApiKeys, clocks: Clocks
) -> None:
    key, _ = await keys.create(name="both", rpm=2, tpm=100)
    await keys.admit(key, tokens=100)
    await _refused(keys, key, 1)  # tokens
    refused = await _refused(keys, key, 1)  # now requests
    assert "请求次数" in refused.message and refused.retry_after == pytest.approx(60.001)


async def test_unlimited_keys_are_never_refused(keys: ApiKeys) -> None:
    key, _ = await keys.create(name="free")
    for _ in range(100):
        await keys.admit(key, tokens=1_000_000)


async def test_quota_refuses_once_used_up(keys: ApiKeys, engine: Any) -> None:
    key, secret = await keys.create(name="quota", quota=100)
    await keys.admit(key, tokens=500)  # the quota is checked on what was used, not announced
    await keys.record_usage(key, tokens=99)
    key = await keys.authenticate(secret)  # this instance's cache knows at once
    assert key.used_tokens == 99
    await keys.admit(key, tokens=10)
    await keys.record_usage(key, tokens=10)  # an answer may overshoot
    key = await keys.authenticate(secret)
    with pytest.raises(QuotaExceeded) as caught:
        await keys.admit(key, tokens=1)
    assert caught.value.status == 402 and caught.value.code == "quota_exceeded"
    await keys.flush_usage()
    assert (await make_keys(engine, Clocks()).get(key.id)).used_tokens == 109


async def test_concurrent_usage_all_counts(keys: ApiKeys) -> None:
    key, _ = await keys.create(name="busy")
    await asyncio.gather(*(keys.record_usage(key, tokens=3) for _ in range(20)))
    await keys.record_usage(key, tokens=0)
    await keys.flush_usage()
    assert (await keys.get(key.id)).used_tokens == 60


async def test_usage_lost_to_a_database_failure_is_logged_not_raised(
    keys: ApiKeys, clocks: Clocks, caplog: pytest.LogCaptureFixture, tmp_path: Any
) -> None:
    key, secret = await keys.create(name="hiccup")
    broken = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}")  # no tables
    try:
        with caplog.at_level(logging.WARNING, logger="mpchat.apikeys"):
            hiccup = make_keys(broken, clocks)
            await hiccup.record_usage(key, tokens=5)
            await hiccup.flush_usage()
    finally:
        await broken.dispose()
    assert f"could not record 5 tokens of api key {key.id}" in caplog.text
    assert secret not in caplog.text and key.prefix not in caplog.text
    assert (await keys.get(key.id)).used_tokens == 0


@pytest.fixture
async def redis_url() -> AsyncIterator[str]:
    async with flushed_redis_db(REDIS_URL) as url:
        yield url


async def test_limits_are_shared_through_redis(
    engine: Any, clocks: Clocks, redis_url: str
) -> None:
    from redis.asyncio import Redis

    clients = [Redis.from_url(redis_url) for _ in range(2)]
    fleet = [make_keys(engine, clocks, redis=client) for client in clients]
    try:
        key, _ = await fleet[0].create(name="shared", rpm=3, tpm=50)
        outcomes = await asyncio.gather(
            *(fleet[i % 2].admit(key, tokens=10) for i in range(6)), return_exceptions=True)
        refused = [o for o in outcomes if isinstance(o, RateLimited)]
        assert len(refused) == 3 and outcomes.count(None) == 3
        assert all(59 < (r.retry_after or 0) <= 60.01 for r in refused)
        assert await clients[0].exists(f"mpchat:rl:key:{key.id}:rpm")  # beside users' logs
        hot, _ = await fleet[0].create(name="tokens", tpm=50)
        await fleet[0].admit(hot, tokens=40)
        tokens = await _refused(fleet[1], hot, 20)
        assert "token" in tokens.message and 59 < (tokens.retry_after or 0) <= 60.01
    finally:
        for store, client in zip(fleet, clients, strict=True):
            await store.aclose()
            await client.aclose()
