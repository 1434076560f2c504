"""The OpenAI-compatible surface's request log: off unless the operator turns it on.

The surface is stateless: the caller sends the whole conversation and nothing of it is
kept. An operator who must keep records (content audits, disputes) sets
``MPCHAT_OPENAI_LOG_REQUESTS``: each request's messages and answer are then stored as one
JSON record, encrypted like the conversations (AAD bound to the row and its key), written
in batches off the request's path (`BatchWriter`), and purged after
``MPCHAT_OPENAI_LOG_DAYS`` by the retention task.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from mpchat.storage.batches import BatchWriter
from mpchat.storage.crypto import Ciphertext, DecryptError, Keyring
from mpchat.storage.tables import api_requests, utc_now

__all__ = [
    "LoggedRequest",
    "RequestLog",
    "list_requests",
    "purge_requests",
    "request_aad",
    "write_requests",
]

_PURGE_BATCH = 500


def request_aad(*, request_id: str, key_id: str) -> bytes:
    return f"mpchat:api-request:{request_id}:{key_id}".encode()


@dataclass(frozen=True, slots=True)
class LoggedRequest:
    id: str
    key_id: str
    model: str
    status: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    messages: Sequence[Any] | None  # None when the record cannot be decrypted
    answer: str | None
    created_at: datetime = field(default_factory=utc_now)


class RequestLog(BatchWriter[LoggedRequest]):
    """Records requests without making them wait (`BatchWriter`)."""

    def __init__(self, engine: AsyncEngine, keyring: Keyring) -> None:
        async def write(items: Sequence[LoggedRequest]) -> None:
            await write_requests(engine, keyring, items)

        super().__init__(write, what="request log rows")


async def write_requests(
    engine: AsyncEngine, keyring: Keyring, items: Sequence[LoggedRequest]
) -> None:
    rows = []
    for item in items:
        record = orjson.dumps({"messages": item.messages, "answer": item.answer}).decode()
        sealed = keyring.encrypt(record, request_aad(request_id=item.id, key_id=item.key_id))
        rows.append({
            "id": item.id, "key_id": item.key_id, "model": item.model[:128],
            "status": item.status, "finish_reason": item.finish_reason,
            "prompt_tokens": item.prompt_tokens, "completion_tokens": item.completion_tokens,
            "record": sealed.blob, "record_key": sealed.key_id, "created_at": item.created_at,
        })
    if rows:
        async with engine.begin() as conn:
            await conn.execute(insert(api_requests), rows)


async def list_requests(
    engine: AsyncEngine,
    keyring: Keyring,
    *,
    key_id: str | None = None,
    before: datetime | None = None,
    limit: int = 50,
) -> list[LoggedRequest]:
    """Newest first; ``before`` pages (the ``created_at`` of the last row seen)."""
    query = select(api_requests).order_by(api_requests.c.created_at.desc()).limit(limit)
    if key_id is not None:
        query = query.where(api_requests.c.key_id == key_id)
    if before is not None:
        query = query.where(api_requests.c.created_at < before)
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    items = []
    for row in rows:
        messages: Sequence[Any] | None = None
        answer: str | None = None
        try:
            record = orjson.loads(keyring.decrypt(
                Ciphertext(row.record_key, row.record),
                request_aad(request_id=row.id, key_id=row.key_id)))
            messages, answer = record["messages"], record["answer"]
        except DecryptError:
            pass  # shown as unreadable, never as an error of the whole page
        items.append(LoggedRequest(
            id=row.id, key_id=row.key_id, model=row.model, status=row.status,
            finish_reason=row.finish_reason, prompt_tokens=row.prompt_tokens,
            completion_tokens=row.completion_tokens, messages=messages, answer=answer,
            created_at=row.created_at))
    return items


async def purge_requests(
    engine: AsyncEngine, *, days: int, now: datetime | None = None
) -> int:
    """Delete records older than ``days``, a batch per transaction; returns how many."""
    cutoff = (now or datetime.now(UTC)) - timedelta(days=days)
    deleted = 0
    while True:
        async with engine.begin() as conn:
            ids = list((await conn.execute(
                select(api_requests.c.id).where(api_requests.c.created_at < cutoff)
                .limit(_PURGE_BATCH))).scalars())
            if not ids:
                return deleted
            await conn.execute(delete(api_requests).where(api_requests.c.id.in_(ids)))
        deleted += len(ids)
