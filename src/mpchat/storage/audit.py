"""The content safety audit trail: who (as a keyed hash) was refused what, by which check.

Rows are written off the chat's hot path by `AuditWriter` (a `BatchWriter`: a queue and
one task that writes in batches); a failed write is logged and dropped, never raised into a
chat. Users appear
only as ``HMAC-SHA256(audit key, user id)``: an operator holding a user id can find that
user's rows, while a leaked table does not name anyone.

Rows are kept ``MPCHAT_AUDIT_RETENTION_DAYS`` (`purge_events`, from the retention task); a
user's deletion of their data anonymises their rows (`anonymise_user`) rather than deleting
the record of what was refused.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from mpchat.storage.batches import BatchWriter
from mpchat.storage.tables import audit_events, utc_now

__all__ = [
    "ANONYMISED",
    "AuditEvent",
    "AuditRow",
    "AuditWriter",
    "anonymise_user",
    "audit_key",
    "hash_user",
    "list_events",
    "purge_events",
    "write_events",
]

log = logging.getLogger("mpchat.audit")

Check = Literal["local", "wechat"]
Stage = Literal["input", "output"]
AuditVerdict = Literal["pass", "review", "risky", "unavailable", "hit"]

_KEY_CONTEXT = b"mpchat audit user hash v1"
_RULE_CHARS = 64
_PURGE_BATCH = 1000
# The user of a row whose user deleted their data: no longer anyone's hash.
ANONYMISED = "anonymised"


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
    # Which rule decided: {"list": "file:line", "span"} for a local hit (with "term" and
    # "normalised" text when MPCHAT_AUDIT_TEXT is on); {"suggest", "label", "refused"} and
    # "policy" when a policy decided (review, unavailable) for WeChat.
    detail: dict[str, Any] | None = None
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
    detail: dict[str, Any] | None = None


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
            "detail": e.detail,
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
            detail=r.detail,
        )
        for r in rows[:limit]
    ]
    return items, (items[-1].seq if len(rows) > limit else None)


async def purge_events(engine: AsyncEngine, *, days: int, now: datetime | None = None,
                       batch: int = _PURGE_BATCH) -> int:
    """Delete rows older than ``days``, a batch per transaction; how many."""
    if days < 1:
        raise ValueError("days must be at least 1")
    cutoff = (now or datetime.now(UTC)) - timedelta(days=days)
    a = audit_events.c
    purged = 0
    while True:
        async with engine.connect() as conn:  # a read first: no write lock when none is due
            seqs = list((await conn.execute(
                select(a.seq).where(a.created_at < cutoff).order_by(a.seq).limit(batch)
            )).scalars())
        if not seqs:
            return purged
        async with engine.begin() as conn:
            await conn.execute(delete(audit_events).where(a.seq.in_(seqs)))
        purged += len(seqs)


async def anonymise_user(engine: AsyncEngine, *, user_hash: str) -> int:
    """Cut the user's rows loose from them: no hash, no message, no excerpt; the decision
    (check, verdict, rule, detail, WeChat's trace id) stays on record. How many rows."""
    a = audit_events.c
    async with engine.begin() as conn:
        result = await conn.execute(
            update(audit_events).where(a.user_hash == user_hash)
            .values(user_hash=ANONYMISED, message_id=None, excerpt=None)
        )
    return max(result.rowcount, 0)


class AuditWriter(BatchWriter[AuditEvent]):
    """Audit events written in batches off the chat's hot path (`BatchWriter`)."""

    def __init__(self, engine: AsyncEngine, *, max_queue: int = 10_000, batch: int = 200) -> None:
        async def write(events: Sequence[AuditEvent]) -> None:
            await write_events(engine, events=events)

        super().__init__(write, what="audit events", max_queue=max_queue, batch=batch)
        self._engine = engine

    async def anonymise(self, user_hash: str) -> int:
        """`anonymise_user`, after the events already queued are written (they are the
        user's too)."""
        await self.flush()
        return await anonymise_user(self._engine, user_hash=user_hash)
