"""Shared fixtures: settings on a temp dir, the database backends, a fake provider.

The suite runs in parallel (pytest-xdist; docs/architecture.md, "Dependencies and tests"): each
worker is a process with its own PostgreSQL database (made beside MPCHAT_TEST_DATABASE_URL's,
dropped at its end) and its own Redis database number for the tests that flush one
(`worker_redis_db`); everything else on Redis is under keys of one test's own. Ports are free
ones, temp dirs per worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import shutil
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
# "gw0", "gw1", ... in a pytest-xdist worker; "" in a run without workers (-p no:xdist, -n 0).
WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")


def worker_redis_db(default: int) -> int:
    """The Redis database number for tests that flush a whole database (FLUSHDB).

    ``default`` in a run without workers. Each xdist worker has one number of its own instead,
    shared by all such tests of that worker (they run one at a time there): never 0 or
    MPCHAT_TEST_REDIS_URL's database, where tests keep keys under their own prefixes.
    """
    if not WORKER:
        return default
    shared = {0, int(urlparse(REDIS_URL).path.lstrip("/") or 0)}
    numbers = [n for n in (12, 13, 14, 15, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1) if n not in shared]
    index = int(WORKER.removeprefix("gw"))
    if index >= len(numbers):
        pytest.fail(f"worker {WORKER}: Redis has no database number left for it; use fewer -n")
    return numbers[index]


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


@pytest.fixture(autouse=True)
def _demo_model_without_pauses(monkeypatch: pytest.MonkeyPatch) -> None:
    """The demo model (an app without a provider) answers at once in tests.

    Its 30 ms between chunks are a show for a person trying `make run`; in the few hundred
    tests that chat with it they only added up. A test about its pace can patch it back.
    """
    from mpchat.providers import registry
    from mpchat.providers.demo import DemoModel

    monkeypatch.setattr(registry, "DemoModel", functools.partial(DemoModel, chunk_delay=0))


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

    Two suites on one machine (a developer's and CI's, or parallel helpers), or two xdist
    workers of one run (each has its own session), then never drop each other's tables.
    """
    require_service(PG_URL, 5432, "PostgreSQL")
    name = f"mpchat_test_{WORKER or 'main'}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
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
    """Every storage test runs on SQLite and on PostgreSQL: an empty database at head each time.

    The migrations run from nothing once per run (per xdist worker) on each backend; each test
    then gets a copy of that SQLite file, or the PostgreSQL tables emptied (TRUNCATE), instead of
    running Alembic again: its apps find the schema at head. Starting from nothing is still
    tested, by the first test here and by the integration tests' `mpchat serve` processes.
    """
    if request.param == "sqlite":
        path = tmp_path / "test.db"
        shutil.copyfile(request.getfixturevalue("migrated_sqlite"), path)
        yield f"sqlite+aiosqlite:///{path}"
        return
    url = request.getfixturevalue("private_pg_url")
    asyncio.run(empty_postgres(url))
    yield url


@pytest.fixture(scope="session")
def migrated_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An SQLite database migrated to head (its WAL folded in on close): copied per test."""
    path = tmp_path_factory.mktemp("migrated") / "head.db"
    asyncio.run(_migrate(f"sqlite+aiosqlite:///{path}"))
    return path


async def _migrate(url: str) -> None:
    from mpchat.storage.engine import create_engine
    from mpchat.storage.migrations import upgrade

    engine = create_engine(url)
    try:
        await upgrade(engine)
    finally:
        await engine.dispose()


# PostgreSQL databases this process migrated to head and nobody reset since.
_AT_HEAD: set[str] = set()


async def empty_postgres(url: str) -> None:
    """No rows, the schema at head: tables truncated if this process migrated it, else rebuilt.

    TRUNCATE of the handful of tables takes a third of the time of DROP SCHEMA + Alembic (and
    less CPU). A lock that a failed test left held fails it after 10 s: that test's connections
    are ended, and the schema is rebuilt instead.
    """
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    from mpchat.storage.engine import create_engine

    if url in _AT_HEAD:
        engine = create_engine(url)
        try:
            async with engine.begin() as conn:
                await conn.execute(text("SET LOCAL lock_timeout = '10s'"))
                tables = (await conn.execute(text(
                    "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
                    " AND tablename <> 'alembic_version'"))).scalars().all()
                names = ", ".join(f'"{name}"' for name in tables)
                await conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
            return
        except DBAPIError:
            await _admin_sql(url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                                  " WHERE datname = current_database() AND pid <> pg_backend_pid()")
        finally:
            await engine.dispose()
    await reset_postgres(url)
    await _migrate(url)
    _AT_HEAD.add(url)


async def unmigrated(url: str) -> None:
    """The test's database with no schema at all (for what runs before migrations)."""
    if url.startswith("sqlite"):
        await asyncio.to_thread(Path(url.split("///", 1)[1]).unlink, missing_ok=True)
    else:
        await reset_postgres(url)  # the next test's database_url migrates it again


async def reset_postgres(url: str) -> None:
    """An empty public schema, so migrations and tests start from nothing."""
    from sqlalchemy import text

    from mpchat.storage.engine import create_engine

    _AT_HEAD.discard(url)
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


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """`configure_logging` (run by the CLI and the server) replaces the root handlers; put
    pytest's back afterwards."""
    import logging

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    alembic = logging.getLogger("alembic").level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.getLogger("alembic").setLevel(alembic)
