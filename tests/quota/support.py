"""Helpers of the quota tests: the ledger's sums read straight from the tables."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from mpchat.storage.tables import quota_accounts, quota_ledger, quota_reservations


async def ledger_sum(engine: Any, user_id: str) -> int:
    async with engine.connect() as conn:
        total = await conn.scalar(
            select(func.coalesce(func.sum(quota_ledger.c.amount), 0))
            .where(quota_ledger.c.user_id == user_id))
    return int(total)


async def stored_credits(engine: Any, user_id: str) -> int:
    async with engine.connect() as conn:
        value = await conn.scalar(
            select(quota_accounts.c.credits).where(quota_accounts.c.user_id == user_id))
    return int(value or 0)


async def open_count(engine: Any) -> int:
    async with engine.connect() as conn:
        value = await conn.scalar(select(func.count()).select_from(quota_reservations)
                                  .where(quota_reservations.c.status == "open"))
    return int(value or 0)


async def assert_consistent(engine: Any, user_id: str) -> None:
    """The invariant: a user's ledger sums to their credits, which are never negative."""
    credits = await stored_credits(engine, user_id)
    assert credits >= 0
    assert await ledger_sum(engine, user_id) == credits
