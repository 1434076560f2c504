"""Migration 0009 indexes `sessions.expires_at` as `tables.py` has it (the retention job's
purge of expired sessions reads by it), and goes back down."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from mpchat.storage.migrations import upgrade
from mpchat.storage.tables import metadata


def _indexes(sync: Any) -> dict[str, list[str]]:
    return {ix["name"]: ix["column_names"] for ix in inspect(sync).get_indexes("sessions")}


def _session_differences(sync: Any) -> list[Any]:
    context = MigrationContext.configure(sync, opts={"compare_type": True})
    return [d for d in compare_metadata(context, metadata) if "sessions" in repr(d)]


def _downgrade_to_0008(sync: Any) -> None:
    from alembic import command

    from mpchat.storage.migrations import _config

    command.downgrade(_config(sync), "0008")


async def test_the_index_exists_after_migrating(engine: Any) -> None:
    async with engine.connect() as conn:
        assert (await conn.run_sync(_indexes))["ix_sessions_expires_at"] == ["expires_at"]
        assert await conn.run_sync(_session_differences) == []


async def test_down_and_up_again(engine: Any) -> None:
    async with engine.begin() as conn:
        await conn.run_sync(_downgrade_to_0008)
        assert "ix_sessions_expires_at" not in await conn.run_sync(_indexes)
    await upgrade(engine)
    async with engine.connect() as conn:
        assert "ix_sessions_expires_at" in await conn.run_sync(_indexes)


async def test_the_purge_reads_by_the_index_on_sqlite(engine: Any) -> None:
    if engine.dialect.name != "sqlite":
        return  # PostgreSQL's planner scans a table this small whatever its indexes
    async with engine.connect() as conn:
        plan = (await conn.execute(text(
            "EXPLAIN QUERY PLAN SELECT id FROM sessions WHERE expires_at < :cutoff LIMIT 1000"),
            {"cutoff": "2030-01-01"})).all()
    assert any("ix_sessions_expires_at" in str(row[-1]) for row in plan), plan
