"""The content safety audit trail: who (as a keyed hash) was refused what, by which check.

Rows are written off the chat's hot path by `AuditWriter` (a `BatchWriter`: a queue and
one task that writes in batches); a failed write is logged and dropped, never raised into a
chat. Users appear
only as ``HMAC-SHA256(audit key, user id)``: an operator holding a user id can find that
user's rows, while a leaked table does not name anyone.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from mpchat.storage.batches import BatchWriter
from mpchat.storage.tables import audit_events, utc_now

__all__ = [
    "AuditEvent",
    "AuditRow",
    "AuditWriter",
    "audit_key",
    "hash_user",
    "list_events",
    "write_events",
]

log = logging.getLogger("mpchat.audit")

Check = Literal["local", "wechat"]
Stage = Literal["input", "output"]
AuditVerdict = Literal["pass", "review", "risky", "unavailable", "hit"]

_KEY_CONTEXT = b"mpchat audit user hash v1"
_RULE_CHARS = 64


def audit_key(secret: str) -> bytes:
    """A key of its own for user hashes, derived from the app secret (never the secret itself)."""
    return hmac.new(secret.encode("utf-8"), _KEY_CONTEXT, hashlib.sha256).digest()


def hash_user(key: bytes, user_id: str) -> str:
    return hmac.new(key, user_id.encode("utf-8"), hashlib.sha256).hexdigest()



@dataclass(frozen=True, slots=True)
class AuditEvent:
    check: Check
    stage: Stage
    verdict: AuditVerdict
    user_hash: str
    rule: str | None = None  # the word list rule, or WeChat's label
    message_id: str | None = None
    trace_id: str | None = None
    excerpt: str | None = None  # only when the operator turned MPCHAT_AUDIT_TEXT on
    created_at: datetime = field(default_factory=utc_now)


@dataclass(frozen=True, slots=True)
class AuditRow:
    seq: int
    created_at: datetime
    check: str
    stage: str
    verdict: str
    rule: str | None
    user_hash: str
    message_id: str | None
    trace_id: str | None
    excerpt: str | None


async def write_events(engine: AsyncEngine, *, events: Sequence[AuditEvent]) -> None:
    if not events:
        return
    rows = [
        {
            "created_at": e.created_at,
            "check": e.check,
            "stage": e.stage,
            "verdict": e.verdict,
            "rule": e.rule[:_RULE_CHARS] if e.rule else None,
            "user_hash": e.user_hash,
            "message_id": e.message_id,
            "trace_id": e.trace_id[:64] if e.trace_id else None,
            "excerpt": e.excerpt,
        }
        for e in events
    ]
    async with engine.begin() as conn:
        await conn.execute(insert(audit_events), rows)


async def list_events(
    engine: AsyncEngine,
    *,
    check: str | None = None,
    stage: str | None = None,
    verdict: str | None = None,
    user_hash: str | None = None,
    since: datetime | None = None,
    before: int | None = None,
    limit: int = 50,
) -> tuple[list[AuditRow], int | None]:
    """Newest first; the cursor for the next page (a ``seq``), or None on the last page."""
    a = audit_events.c
    query = select(audit_events).order_by(a.seq.desc()).limit(limit + 1)
    for column, value in ((a.check, check), (a.stage, stage), (a.verdict, verdict),
                          (a.user_hash, user_hash)):
        if value is not None:
            query = query.where(column == value)
    if since is not None:
        query = query.where(a.created_at >= since)
    if before is not None:
        query = query.where(a.seq < before)
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    items = [
        AuditRow(
            seq=int(r.seq),
            created_at=r.created_at,
            check=r.check,
            stage=r.stage,
            verdict=r.verdict,
            rule=r.rule,
            user_hash=r.user_hash,
            message_id=r.message_id,
            trace_id=r.trace_id,
            excerpt=r.excerpt,
        )
        for r in rows[:limit]
    ]
    return items, (items[-1].seq if len(rows) > limit else None)


class AuditWriter(BatchWriter[AuditEvent]):
    """Audit events written in batches off the chat's hot path (`BatchWriter`)."""

    def __init__(self, engine: AsyncEngine, *, max_queue: int = 10_000, batch: int = 200) -> None:
        async def write(events: Sequence[AuditEvent]) -> None:
            await write_events(engine, events=events)

        super().__init__(write, what="audit events", max_queue=max_queue, batch=batch)
