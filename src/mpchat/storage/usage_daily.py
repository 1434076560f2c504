"""Usage records rolled up per UTC day, before the retention task deletes them.

A day is rolled up once, whole, from its raw rows (so its percentiles are exact): one row per
model (tokens, cost, chats) and one for the whole day, model ``*`` (chats, refusals, errors
by code, p50/p95 per phase over all its answers). The console's daily series read these for
days whose raw rows are gone (`mpchat.storage.usage_stats.merge_daily`). Safe with several
instances: the day and model are the key, and a day already rolled up is skipped.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from mpchat.storage.tables import usage_daily, usage_records
from mpchat.storage.usage import read_usage
from mpchat.storage.usage_stats import PLOTTED_PHASES, summary

__all__ = ["ALL", "day_of", "read_daily", "roll_up"]

ALL = "*"  # the model of a day's whole row
_DAY = timedelta(days=1)


def day_of(moment: datetime) -> datetime:
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


def _row(day: datetime, model: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    s = summary(rows, top=0)
    return {"day": day, "model": model, "chats": s["chats"], "refused": s["refused"],
            "errors": s["errors"], "prompt_tokens": s["prompt_tokens"],
            "completion_tokens": s["completion_tokens"], "cost": s["cost"],
            "p50_ms": {p: s["phases_ms"][p]["p50"] for p in PLOTTED_PHASES},
            "p95_ms": {p: s["phases_ms"][p]["p95"] for p in PLOTTED_PHASES}}


async def roll_up(engine: AsyncEngine, *, before: datetime) -> int:
    """Roll up every whole day before ``before`` (a day's start) that has raw rows and no
    roll-up yet; returns how many days were rolled up here."""
    async with engine.connect() as conn:
        oldest = (await conn.execute(select(func.min(usage_records.c.created_at))
                                     .where(usage_records.c.created_at < before))).scalar()
    if oldest is None:
        return 0
    done, day = 0, day_of(oldest)
    while day + _DAY <= before:
        async with engine.connect() as conn:
            rolled = (await conn.execute(select(usage_daily.c.day)
                                         .where(usage_daily.c.day == day).limit(1))).first()
        rows = [] if rolled else await read_usage(engine, since=day, until=day + _DAY)
        if rows:
            models = sorted({r["model"] for r in rows})
            values = [_row(day, ALL, rows)] + [
                _row(day, m, [r for r in rows if r["model"] == m]) for m in models]
            try:
                async with engine.begin() as conn:
                    await conn.execute(insert(usage_daily), values)
                done += 1
            except IntegrityError:
                pass  # another instance rolled it up meanwhile
        day += _DAY
    return done


async def read_daily(engine: AsyncEngine, *, since: datetime,
                     until: datetime) -> list[dict[str, Any]]:
    query = (select(usage_daily).where(usage_daily.c.day >= day_of(since),
                                       usage_daily.c.day < until)
             .order_by(usage_daily.c.day, usage_daily.c.model))
    async with engine.connect() as conn:
        return [dict(row._mapping) for row in await conn.execute(query)]
