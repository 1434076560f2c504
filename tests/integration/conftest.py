"""Fixtures for the integration tests: a dedicated Redis db, a fresh PostgreSQL schema."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from tests.conftest import PG_URL, require_service, reset_postgres

# A Redis database number of their own, flushed before and after each test, so these tests
# never touch keys of other tests (which use db 0 with their own prefixes).
REDIS_DB = int(os.environ.get("MPCHAT_TEST_INTEGRATION_REDIS_DB", "13"))
REDIS_HOST_URL = os.environ.get("MPCHAT_TEST_REDIS_HOST", "redis://127.0.0.1:6379")


@pytest.fixture
async def redis_url() -> AsyncIterator[str]:
    url = f"{REDIS_HOST_URL}/{REDIS_DB}"
    require_service(url, 6379, "Redis")
    client = Redis.from_url(url)
    try:
        await client.flushdb()
        yield url
        await client.flushdb()
    finally:
        await client.aclose()


@pytest.fixture
async def pg_url() -> str:
    require_service(PG_URL, 5432, "PostgreSQL")
    await reset_postgres(PG_URL)
    return PG_URL
