"""WeChat Pay orders: created pending, then paid (once) or closed.

``mark_paid`` runs inside the caller's transaction, beside the ledger's grant, so an
order is paid and credited together or not at all.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import Connection, RowMapping, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from mpchat.storage.tables import payment_orders

__all__ = [
    "StoredOrder",
    "close_order",
    "count_recent",
    "get_order",
    "insert_order",
    "mark_paid",
    "read_order",
    "set_prepay",
]


@dataclass(frozen=True, slots=True)
class StoredOrder:
    id: str
    user_id: str
    plan_id: str
    title: str
    price_fen: int
    credits: int
    status: str  # pending | paid | closed
    prepay_id: str | None
    transaction_id: str | None
    created_at: dt.datetime
    expires_at: dt.datetime
    paid_at: dt.datetime | None


async def insert_order(engine: AsyncEngine, *, order_id: str, user_id: str, plan_id: str,
                       title: str, price_fen: int, credits: int, created_at: dt.datetime,
                       expires_at: dt.datetime) -> None:
    async with engine.begin() as conn:
        await conn.execute(insert(payment_orders).values(
            id=order_id, user_id=user_id, plan_id=plan_id, title=title, price_fen=price_fen,
            credits=credits, status="pending", created_at=created_at, expires_at=expires_at,
        ))


async def set_prepay(engine: AsyncEngine, *, order_id: str, prepay_id: str) -> None:
    async with engine.begin() as conn:
        await conn.execute(update(payment_orders).where(payment_orders.c.id == order_id)
                           .values(prepay_id=prepay_id))


async def get_order(engine: AsyncEngine, *, order_id: str) -> StoredOrder | None:
    async with engine.connect() as conn:
        row = (await conn.execute(
            select(payment_orders).where(payment_orders.c.id == order_id)
        )).mappings().first()
    return None if row is None else _order(row)


async def count_recent(engine: AsyncEngine, *, user_id: str, since: dt.datetime) -> int:
    """Orders the user created since ``since`` (a bound on order spam)."""
    o = payment_orders.c
    async with engine.connect() as conn:
        found = await conn.scalar(select(func.count()).select_from(payment_orders)
                                  .where(o.user_id == user_id, o.created_at >= since))
    return int(found or 0)


def read_order(conn: Connection, order_id: str) -> StoredOrder | None:
    row = conn.execute(
        select(payment_orders).where(payment_orders.c.id == order_id).with_for_update()
    ).mappings().first()
    return None if row is None else _order(row)


def mark_paid(conn: Connection, *, order_id: str, transaction_id: str,
              paid_at: dt.datetime) -> bool:
    """Pending (or closed here while WeChat Pay took the money) -> paid; False if it was."""
    o = payment_orders.c
    done = conn.execute(
        update(payment_orders)
        .where(o.id == order_id, o.status.in_(("pending", "closed")))
        .values(status="paid", transaction_id=transaction_id[:64], paid_at=paid_at)
    )
    return done.rowcount == 1


async def close_order(engine: AsyncEngine, *, order_id: str) -> bool:
    """Pending -> closed (WeChat Pay closed it, or it expired unpaid)."""
    o = payment_orders.c
    async with engine.begin() as conn:
        done = await conn.execute(update(payment_orders)
                                  .where(o.id == order_id, o.status == "pending")
                                  .values(status="closed"))
    return done.rowcount == 1


def _order(row: RowMapping) -> StoredOrder:
    return StoredOrder(**{k: row[k] for k in StoredOrder.__slots__})
