"""Migration 0006 creates exactly the quota and order tables of `tables.py`, and goes back."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import insert, inspect
from sqlalchemy.exc import IntegrityError

from mpchat.storage.migrations import upgrade
from mpchat.storage.tables import metadata, quota_accounts

TABLES = {"quota_accounts", "quota_reservations", "quota_ledger", "payment_orders"}


def _differences(sync: Any) -> list[Any]:
    context = MigrationContext.configure(sync, opts={"compare_type": True})
    return [d for d in compare_metadata(context, metadata)
            if any(t in repr(d) for t in TABLES)]


async def test_the_migration_matches_the_tables(engine: Any) -> None:
    async with engine.connect() as conn:
        assert await conn.run_sync(_differences) == []


async def test_balances_cannot_go_below_zero_in_the_schema(engine: Any) -> None:
    at = datetime(2030, 1, 1, tzinfo=UTC)
    for credits, free_used in [(-1, 0), (0, -1)]:
        with pytest.raises(IntegrityError):
            async with engine.begin() as conn:
                await conn.execute(insert(quota_accounts).values(
                    user_id="u", credits=credits, free_used=free_used, period_start=at,
                    updated_at=at))


async def test_down_and_up_again(engine: Any) -> None:
    async with engine.begin() as conn:
        await conn.run_sync(_downgrade_to_0005)
        names = await conn.run_sync(lambda s: inspect(s).get_table_names())
        assert not TABLES & set(names) and "api_requests" in names
    await upgrade(engine)
    async with engine.connect() as conn:
        assert TABLES <= set(await conn.run_sync(lambda s: inspect(s).get_table_names()))


def _downgrade_to_0005(sync: Any) -> None:
    from alembic import command

    from mpchat.storage.migrations import _config

    command.downgrade(_config(sync), "0005")
