"""Migration 0007 adds `audit_events.detail` as `tables.py` has it, and goes back down."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from mpchat.storage.migrations import upgrade
from mpchat.storage.tables import metadata


def _audit_differences(sync: Any) -> list[Any]:
    context = MigrationContext.configure(sync, opts={"compare_type": True})
    return [d for d in compare_metadata(context, metadata) if "audit_events" in repr(d)]


def _columns(sync: Any) -> list[str]:
    return [c["name"] for c in inspect(sync).get_columns("audit_events")]


def _downgrade_to_0006(sync: Any) -> None:
    from alembic import command

    from mpchat.storage.migrations import _config

    command.downgrade(_config(sync), "0006")


async def test_the_migration_matches_the_table(engine: Any) -> None:
    async with engine.connect() as conn:
        assert await conn.run_sync(_audit_differences) == []


async def test_down_and_up_again(engine: Any) -> None:
    async with engine.begin() as conn:
        await conn.run_sync(_downgrade_to_0006)
        assert "detail" not in await conn.run_sync(_columns)
    await upgrade(engine)
    async with engine.connect() as conn:
        assert "detail" in await conn.run_sync(_columns)
