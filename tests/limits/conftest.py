"""Fixtures for the limits tests: clients on the shared Redis, and a private redis-server."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from redis.asyncio import Redis

from tests.conftest import REDIS_URL
from tests.limits.limits_support import IN_CI, PrivateRedis

RedisFactory = Callable[[], Redis]


async def _require_redis(url: str) -> None:
    client = Redis.from_url(url)
    try:
        await client.ping()
    except Exception as exc:  # any failure means "not there"
        message = f"Redis is unreachable at {url}: {exc!r}"
        if IN_CI:
            pytest.fail(message + " (CI=true: services are required)")
        pytest.skip(message)
    finally:
        await client.aclose()


@pytest.fixture
def prefix() -> str:
    """A key prefix no other test (or helper) uses."""
    return f"mpchat-test-limits:{uuid.uuid4().hex[:12]}:"


@pytest.fixture
async def redis_factory(prefix: str) -> AsyncIterator[RedisFactory]:
    """Makes separate clients (one per simulated instance); deletes this test's keys after."""
    await _require_redis(REDIS_URL)
    clients: list[Redis] = []

    def make() -> Redis:
        client = Redis.from_url(REDIS_URL)
        clients.append(client)
        return client

    yield make
    cleaner = Redis.from_url(REDIS_URL)
    try:
        keys = [key async for key in cleaner.scan_iter(match=prefix + "*")]
        if keys:
            await cleaner.delete(*keys)
    finally:
        await cleaner.aclose()
        for client in clients:
            await client.aclose()


@pytest.fixture
async def private_redis(tmp_path: Path) -> AsyncIterator[PrivateRedis]:
    server = PrivateRedis(tmp_path)
    yield server
    await server.kill()
