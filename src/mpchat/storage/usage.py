"""Usage records: one row per answer, for the operator's console; never any text.

Who (the user's id), which route (provider, model, profile), how it ended (status, error
code), tokens, cost units (when quotas are on) and the answer's timings (ms, `chat.timings`).
A chat refused before its answer (rate limit, quota, busy, content) leaves a row too, with
status ``refused`` and its error code. Written off the answer's path by a `BatchWriter`;
purged after ``MPCHAT_USAGE_RETENTION_DAYS`` by the retention task. The admin API's
summaries and series (`mpchat.api.routes.admin_usage`) are computed from these rows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from mpchat.storage.batches import BatchWriter
from mpchat.storage.tables import usage_records, utc_now

if TYPE_CHECKING:
    from mpchat.chat.answer import Answer

__all__ = ["Cost", "UsageLog", "purge_usage", "read_usage", "write_usage"]

# (model, prompt tokens, completion tokens) -> cost units (the quota's prices)
Cost = Callable[[str, int, int], int]
_PURGE_BATCH = 1000
_COLUMNS = (usage_records.c.created_at, usage_records.c.user_id, usage_records.c.provider,
            usage_records.c.model, usage_records.c.profile, usage_records.c.status,
            usage_records.c.error_code, usage_records.c.prompt_tokens,
            usage_records.c.completion_tokens, usage_records.c.cost, usage_records.c.timings)


class UsageLog:
    """Records usage rows without waiting: `record_answer`, `record_refusal` never raise."""

    def __init__(self, engine: AsyncEngine, *, cost: Cost | None = None) -> None:
        self._engine = engine
        self._cost = cost
        # One row per answer: gathered for a second, so a busy instance writes them in one
        # transaction a second, not one per answer beside the answers' own writes.
        self._writer: BatchWriter[dict[str, Any]] = BatchWriter(
            self._write, what="usage records", batch=1000, linger=1.0)

    async def _write(self, rows: Sequence[dict[str, Any]]) -> None:
        await write_usage(self._engine, rows)

    def record_answer(self, answer: Answer, *, profile: str) -> None:
        usage = answer.usage
        prompt = usage.get("prompt_tokens", 0)
        # Nothing said, nothing produced (the estimate of "" is not 0).
        completion = usage.get("completion_tokens", 0) if answer.status != "unanswered" else 0
        cost = None
        if answer.quota is not None and self._cost is not None:
            # What the quota charged: nothing for an answer that said nothing.
            cost = self._cost(answer.model, prompt, completion) if answer.content else 0
        self._writer.record({
            "created_at": utc_now(), "user_id": answer.user_id[:32],
            "message_id": answer.message_id[:32], "provider": (answer.provider or "")[:64],
            "model": answer.model[:128], "profile": profile[:64], "status": answer.status[:16],
            "error_code": answer.failure.code if answer.failure is not None else None,
            "prompt_tokens": prompt, "completion_tokens": completion, "cost": cost,
            "timings": answer.timings or None,
        })

    def record_refusal(self, *, user_id: str, code: str, profile: str | None = None) -> None:
        self._writer.record({
            "created_at": utc_now(), "user_id": user_id[:32], "message_id": "",
            "provider": "", "model": "", "profile": (profile or "")[:64], "status": "refused",
            "error_code": code[:32], "prompt_tokens": 0, "completion_tokens": 0, "cost": None,
            "timings": None,
        })

    async def flush(self) -> None:
        await self._writer.flush()

    async def aclose(self) -> None:
        await self._writer.aclose()


async def write_usage(engine: AsyncEngine, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        async with engine.begin() as conn:
            await conn.execute(insert(usage_records), list(rows))


async def read_usage(engine: AsyncEngine, *, since: datetime, until: datetime,
                     user_id: str | None = None) -> list[dict[str, Any]]:
    """The rows of ``[since, until)`` (oldest first), as mappings of `_COLUMNS`."""
    query = select(*_COLUMNS).where(usage_records.c.created_at >= since,
                                    usage_records.c.created_at < until)
    if user_id is not None:
        query = query.where(usage_records.c.user_id == user_id)
    query = query.order_by(usage_records.c.created_at, usage_records.c.seq)
    async with engine.connect() as conn:
        return [dict(row._mapping) for row in await conn.execute(query)]


async def purge_usage(engine: AsyncEngine, *, days: int, now: datetime | None = None) -> int:
    """Roll up, then delete, the rows of the whole UTC days older than ``days``, in batches;
    returns how many rows were deleted."""
    from mpchat.storage.usage_daily import day_of, roll_up  # it reads through this module

    cutoff = day_of((now or datetime.now(UTC)) - timedelta(days=days))
    await roll_up(engine, before=cutoff)
    deleted = 0
    while True:
        async with engine.begin() as conn:
            seqs = list((await conn.execute(
                select(usage_records.c.seq).where(usage_records.c.created_at < cutoff)
                .order_by(usage_records.c.seq).limit(_PURGE_BATCH))).scalars())
            if not seqs:
                return deleted
            result = await conn.execute(delete(usage_records)
                                        .where(usage_records.c.seq.in_(seqs)))
            deleted += max(result.rowcount, 0)
