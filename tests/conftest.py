"""Shared fixtures: settings on a temp dir, the database backends, a fake provider."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

from mpchat.fakes.upstream import FakeUpstream
from mpchat.settings import Settings

PG_URL = os.environ.get(
    "MPCHAT_TEST_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("MPCHAT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
IN_CI = os.environ.get("CI", "").lower() == "true"


def reachable(url: str, default_port: int) -> bool:
    parsed = urlparse(url.replace("+asyncpg", ""))
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or default_port),
                                      timeout=1):
            return True
    except OSError:
        return False


def require_service(url: str, default_port: int, what: str) -> None:
    """Skip on a laptop without the service; fail in CI, where it must be there."""
    if reachable(url, default_port):
        return
    message = f"{what} is unreachable at {url}"
    if IN_CI:
        pytest.fail(message + " (CI=true: services are required)")
    pytest.skip(message)


@pytest.fixture(autouse=True)
def _no_mpchat_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's ``MPCHAT_*`` variables cannot change a test's result.

    ``MPCHAT_TEST_*`` (where the test services are, docs/configuration.md) are not settings
    and stay; PG_URL and REDIS_URL above have read them already anyway.
    """
    for name in list(os.environ):
        if name.startswith("MPCHAT_") and not name.startswith("MPCHAT_TEST_"):
            monkeypatch.delenv(name)


@contextlib.asynccontextmanager
async def flushed_redis_db(url: str) -> AsyncIterator[str]:
    """A Redis database of one test's own (``url`` names its number), flushed around it."""
    from redis.asyncio import Redis

    require_service(url, 6379, "Redis")
    client = Redis.from_url(url)
    try:
        await client.flushdb()
        yield url
        await client.flushdb()
    finally:
        await client.aclose()


@pytest.fixture(scope="session")
def private_pg_url() -> Iterator[str]:
    """A database of this test run's own, beside the configured one, dropped at the end.

    Two suites on one machine (a developer's and CI's, or parallel helpers) then never
    drop each other's tables mid-test.
    """
    require_service(PG_URL, 5432, "PostgreSQL")
    name = f"mpchat_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    asyncio.run(_admin_sql(PG_URL, f'CREATE DATABASE "{name}"'))
    base, _, _ = PG_URL.rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        asyncio.run(_admin_sql(PG_URL, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _admin_sql(url: str, statement: str) -> None:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(text(statement))
    finally:
        await engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Every storage test runs on SQLite and on PostgreSQL (a fresh schema each time)."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'test.db'}"
        return
    url = request.getfixturevalue("private_pg_url")
    asyncio.run(reset_postgres(url))
    yield url


async def reset_postgres(url: str) -> None:
    """An empty public schema, so migrations and tests start from nothing."""
    from sqlalchemy import text

    from mpchat.storage.engine import create_engine

    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("DROP SCHEMA public CASCADE"))
            await conn.execute(text("CREATE SCHEMA public"))
    finally:
        await engine.dispose()


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[Any]:
    """A migrated engine on each backend, for tests of storage functions."""
    from mpchat.storage.engine import create_engine
    from mpchat.storage.migrations import upgrade

    engine = create_engine(database_url)
    await upgrade(engine)
    yield engine
    await engine.dispose()


@pytest.fixture
def settings_factory(tmp_path: Path, database_url: str):  # type: ignore[no-untyped-def]
    def make(**overrides: object) -> Settings:
        values: dict[str, object] = {
            "data_dir": tmp_path / "data",
            "database_url": database_url,
            "upstream_retry_initial": 0.01,
            "upstream_retry_max_wait": 0.05,
            "rate_limit": "1000/minute",  # tests about the limit set their own
            "login_rate_limit": "1000/minute",
        }
        values.update(overrides)
        return Settings(_env_file=None, **values)  # type: ignore[call-arg]

    return make


@pytest.fixture
async def fake_upstream() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream() as fake:
        yield fake


@pytest.fixture
async def tx(engine: Any) -> AsyncIterator[Any]:
    """`Transactions` on the test's engine, closed before the engine is disposed."""
    from mpchat.storage.transactions import Transactions

    transactions = Transactions(engine)
    yield transactions
    await transactions.aclose()
