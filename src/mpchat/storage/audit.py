"""The content safety audit trail: who (as a keyed hash) was refused what, by which check.

Rows are written off the chat's hot path by `AuditWriter` (a queue and one task that writes
in batches); a failed write is logged and dropped, never raised into a chat. Users appear
only as ``HMAC-SHA256(audit key, user id)``: an operator holding a user id can find that
user's rows, while a leaked table does not name anyone.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

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


class AuditWriter:
    """Queues events and writes them in batches from one background task.

    ``record`` never blocks and never raises: when the queue is full (the database is far
    behind) events are dropped and counted, because a chat must not wait for its audit.
    """

    def __init__(self, engine: AsyncEngine, *, max_queue: int = 10_000, batch: int = 200) -> None:
        self._engine = engine
        self._queue: asyncio.Queue[AuditEvent] = asyncio.Queue(maxsize=max_queue)
        self._batch = batch
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.dropped = 0  # events lost to a full queue or a failed write
        self.written = 0

    @property
    def state(self) -> Literal["idle", "running", "closed"]:
        if self._closed:
            return "closed"
        return "running" if self._task is not None and not self._task.done() else "idle"

    def record(self, event: AuditEvent) -> None:
        if self._closed:
            self.dropped += 1
            return
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning("audit queue full: %d events dropped so far", self.dropped)
            return
        if self._task is None or self._task.done():
            # Started lazily, inside the running loop of the first chat that needs it.
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def flush(self) -> None:
        """Until every event recorded so far has been written (or dropped)."""
        await self._queue.join()

    async def aclose(self) -> None:
        """Write what is queued, then stop."""
        self._closed = True
        if self._task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._queue.join(), timeout=5)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            events = [await self._queue.get()]
            while len(events) < self._batch and not self._queue.empty():
                events.append(self._queue.get_nowait())
            try:
                await write_events(self._engine, events=events)
                self.written += len(events)
            except Exception:
                self.dropped += len(events)
                log.exception("could not write %d audit events", len(events))
            finally:
                for _ in events:
                    self._queue.task_done()
