"""Totals of the ledger and of paid orders between two instants, for the operator.

Days are local days of the quota's timezone, so their bounds are computed by the caller
and each day is two indexed range queries (``created_at``, ``paid_at``): portable across
backends, where grouping by a local date would need each backend's own time-zone SQL.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from mpchat.storage.tables import payment_orders, quota_ledger

__all__ = ["Totals", "totals_between"]

_USE = ("reserve", "settle", "release")


@dataclass(frozen=True, slots=True)
class Totals:
    answers: int
    free_used: int
    credits_spent: int
    credits_purchased: int
    credits_granted: int
    orders_paid: int
    revenue_fen: int


async def totals_between(
    engine: AsyncEngine, spans: list[tuple[dt.datetime, dt.datetime]]
) -> list[Totals]:
    """One `Totals` per ``[start, end)`` span, in the same order."""
    led, o = quota_ledger.c, payment_orders.c
    out: list[Totals] = []
    async with engine.connect() as conn:
        for start, end in spans:
            by_kind = (await conn.execute(
                select(led.kind, func.coalesce(func.sum(led.amount), 0),
                       func.coalesce(func.sum(led.free_amount), 0), func.count())
                .where(led.created_at >= start, led.created_at < end)
                .group_by(led.kind)
            )).all()
            sums = {kind: (int(a), int(f), int(n)) for kind, a, f, n in by_kind}
            paid = (await conn.execute(
                select(func.count(), func.coalesce(func.sum(o.price_fen), 0))
                .where(o.status == "paid", o.paid_at >= start, o.paid_at < end)
            )).one()
            out.append(Totals(
                answers=sums.get("settle", (0, 0, 0))[2],
                free_used=-sum(sums.get(k, (0, 0, 0))[1] for k in _USE),
                credits_spent=-sum(sums.get(k, (0, 0, 0))[0] for k in _USE),
                credits_purchased=sums.get("purchase", (0, 0, 0))[0],
                credits_granted=sums.get("grant", (0, 0, 0))[0],
                orders_paid=int(paid[0]),
                revenue_fen=int(paid[1]),
            ))
    return out
