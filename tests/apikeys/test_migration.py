"""Migration 0004 creates exactly the `api_keys` table of `tables.py`, and goes back down."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from mpchat.storage.migrations import upgrade
from mpchat.storage.tables import metadata


def _api_key_differences(sync: Any) -> list[Any]:
    context = MigrationContext.configure(sync, opts={"compare_type": True})
    return [d for d in compare_metadata(context, metadata) if "api_keys" in repr(d)]


async def test_the_migration_matches_the_table(engine: Any) -> None:
    async with engine.connect() as conn:
        assert await conn.run_sync(_api_key_differences) == []
        unique = await conn.run_sync(
            lambda sync: inspect(sync).get_unique_constraints("api_keys"))
    assert [u["column_names"] for u in unique] == [["secret_hash"]]


async def test_down_and_up_again(engine: Any) -> None:
    async with engine.begin() as conn:
        await conn.run_sync(_downgrade_to_0003)
        assert "api_keys" not in await conn.run_sync(lambda s: inspect(s).get_table_names())
    await upgrade(engine)
    async with engine.connect() as conn:
        assert "api_keys" in await conn.run_sync(lambda s: inspect(s).get_table_names())


def _downgrade_to_0003(sync: Any) -> None:
    from alembic import command

    from mpchat.storage.migrations import _config

    command.downgrade(_config(sync), "0003")
