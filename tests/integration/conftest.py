"""Fixtures for the integration tests: a dedicated Redis db, a fresh PostgreSQL schema."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest

from tests.conftest import flushed_redis_db, reset_postgres, worker_redis_db

# A Redis database number of their own, flushed before and after each test, so these tests
# never touch keys of other tests (which use MPCHAT_TEST_REDIS_URL's db with their own
# prefixes). In a parallel run each worker has its own number instead (`worker_redis_db`).
REDIS_DB = int(os.environ.get("MPCHAT_TEST_INTEGRATION_REDIS_DB", "13"))
REDIS_HOST_URL = os.environ.get("MPCHAT_TEST_REDIS_HOST", "redis://127.0.0.1:6379")


@pytest.fixture
async def redis_url() -> AsyncIterator[str]:
    async with flushed_redis_db(f"{REDIS_HOST_URL}/{worker_redis_db(REDIS_DB)}") as url:
        yield url


@pytest.fixture
async def pg_url(private_pg_url: str) -> str:
    """This run's (this worker's) own database, its schema emptied."""
    await reset_postgres(private_pg_url)
    return private_pg_url
