"""Fixtures for the integration tests: a dedicated Redis db, a fresh PostgreSQL schema."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest

from tests.conftest import PG_URL, flushed_redis_db, require_service, reset_postgres

# A Redis database number of their own, flushed before and after each test, so these tests
# never touch keys of other tests (which use db 0 with their own prefixes).
REDIS_DB = int(os.environ.get("MPCHAT_TEST_INTEGRATION_REDIS_DB", "13"))
REDIS_HOST_URL = os.environ.get("MPCHAT_TEST_REDIS_HOST", "redis://127.0.0.1:6379")


@pytest.fixture
async def redis_url() -> AsyncIterator[str]:
    async with flushed_redis_db(f"{REDIS_HOST_URL}/{REDIS_DB}") as url:
        yield url


@pytest.fixture
async def pg_url() -> str:
    require_service(PG_URL, 5432, "PostgreSQL")
    await reset_postgres(PG_URL)
    return PG_URL
