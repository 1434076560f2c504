"""Retention: conversations untouched for ``MPCHAT_RETENTION_DAYS`` are deleted, rows and all;
the OpenAI-compatible surface's request log (when on) after ``MPCHAT_OPENAI_LOG_DAYS``; content
safety records after ``MPCHAT_AUDIT_RETENTION_DAYS``; usage records after
``MPCHAT_USAGE_RETENTION_DAYS``; expired login sessions always.

Safe with several instances: every delete is idempotent and batched (short transactions,
no long locks), so two instances purging at once only repeat each other's no-ops. With
Redis, a ``SET NX PX`` lock lets one instance run a pass per interval; without Redis each
instance runs its own, which is merely redundant.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncEngine

from mpchat.storage.audit import purge_events
from mpchat.storage.request_log import purge_requests
from mpchat.storage.tables import conversations, messages
from mpchat.storage.usage import purge_usage
from mpchat.storage.users import purge_expired_sessions

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["LOCK_KEY", "purge_expired", "retention_pass", "run_retention"]

log = logging.getLogger("mpchat.retention")

LOCK_KEY = "mpchat:retention:lock"
_CONVERSATION_BATCH = 100
_MESSAGE_BATCH = 500


async def purge_expired(
    engine: AsyncEngine,
    *,
    days: int,
    now: datetime | None = None,
    conversation_batch: int = _CONVERSATION_BATCH,
    message_batch: int = _MESSAGE_BATCH,
) -> int:
    """Delete conversations whose ``updated_at`` is older than ``days``; returns how many.

    Messages go first, in batches, so no transaction touches more than a batch of rows.
    A conversation that received a message while its old ones were being deleted is kept
    (its ``updated_at`` moved): the delete re-checks the cut-off.
    """
    if days < 1:
        raise ValueError("days must be at least 1")
    cutoff = (now or datetime.now(UTC)) - timedelta(days=days)
    deleted = 0
    after = ""
    while True:
        async with engine.connect() as conn:
            ids = list(
                (
                    await conn.execute(
                        select(conversations.c.id)
                        .where(conversations.c.updated_at < cutoff, conversations.c.id > after)
                        .order_by(conversations.c.id)
                        .limit(conversation_batch)
                    )
                ).scalars()
            )
        if not ids:
            return deleted
        after = ids[-1]
        await _delete_messages(engine, ids, message_batch)
        async with engine.begin() as conn:
            result = await conn.execute(
                delete(conversations).where(
                    conversations.c.id.in_(ids), conversations.c.updated_at < cutoff
                )
            )
        deleted += max(result.rowcount, 0)


async def _delete_messages(engine: AsyncEngine, conversation_ids: list[str], batch: int) -> None:
    while True:
        async with engine.begin() as conn:
            seqs = list(
                (
                    await conn.execute(
                        select(messages.c.seq)
                        .where(messages.c.conversation_id.in_(conversation_ids))
                        .order_by(messages.c.seq)
                        .limit(batch)
                    )
                ).scalars()
            )
            if not seqs:
                return
            await conn.execute(delete(messages).where(messages.c.seq.in_(seqs)))


async def retention_pass(
    engine: AsyncEngine,
    *,
    days: int | None,
    interval: float,
    redis: Redis | None = None,
    lock_key: str = LOCK_KEY,
    now: datetime | None = None,
    request_log_days: int | None = None,
    audit_days: int | None = None,
    usage_days: int | None = None,
) -> int | None:
    """One pass, unless another instance holds this interval's lock (then None).

    The lock is not released: it expires after ``interval``, which is what limits the
    whole fleet to one pass per interval. A Redis that fails only costs the lock; the
    pass runs anyway, because purging twice is harmless.
    """
    if redis is not None:
        try:
            token = secrets.token_hex(8)
            acquired = await redis.set(lock_key, token, nx=True, px=max(int(interval * 1000), 1))
        except Exception as exc:  # any Redis failure: degrade to running unlocked
            log.warning("retention lock unavailable (%s); purging without it",
                        type(exc).__name__)
            acquired = True
        if not acquired:
            return None
    sessions = await purge_expired_sessions(engine, now=now)
    if sessions:
        log.info("retention: deleted %d expired sessions", sessions)
    if request_log_days is not None:
        purged = await purge_requests(engine, days=request_log_days, now=now)
        if purged:
            log.info("retention: deleted %d request log rows older than %d days",
                     purged, request_log_days)
    if audit_days is not None:
        purged = await purge_events(engine, days=audit_days, now=now)
        if purged:
            log.info("retention: deleted %d audit rows older than %d days", purged, audit_days)
    if usage_days is not None:
        purged = await purge_usage(engine, days=usage_days, now=now)
        if purged:
            log.info("retention: deleted %d usage records older than %d days", purged,
                     usage_days)
    return await purge_expired(engine, days=days, now=now) if days is not None else 0


async def run_retention(
    engine: AsyncEngine,
    *,
    days: int | None,
    interval: float,
    redis: Redis | None = None,
    request_log_days: int | None = None,
    audit_days: int | None = None,
    usage_days: int | None = None,
) -> None:
    """Purge every ``interval`` seconds until cancelled (with the fleet's lock, `LOCK_KEY`);
    failures are logged, never raised."""
    while True:
        try:
            deleted = await retention_pass(
                engine, days=days, interval=interval, redis=redis,
                request_log_days=request_log_days, audit_days=audit_days,
                usage_days=usage_days,
            )
            if deleted:
                log.info("retention: deleted %d conversations older than %d days",
                         deleted, days)
        except Exception:
            # The next pass retries; a broken database must not kill the loop or the app.
            log.exception("retention pass failed")
        await asyncio.sleep(interval)
