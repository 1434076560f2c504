"""Conversation summaries: what older turns said, once they no longer fit the context."""

from __future__ import annotations

from sqlalchemy import bindparam, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from mpchat.storage.crypto import Keyring, summary_aad
from mpchat.storage.messages import CONTEXT_STATUSES, HistoryTurn, message_text, summary_text
from mpchat.storage.tables import conversations, messages

__all__ = ["save_summary", "summary_source"]

_MAX_ROWS = 400


async def summary_source(
    engine: AsyncEngine, keyring: Keyring, *, conversation_id: str, user_id: str, before: int
) -> tuple[str | None, list[HistoryTurn], int]:
    """(current summary, turns after it and before seq ``before``, last seq of those turns)."""
    c, m = conversations.c, messages.c
    async with engine.connect() as conn:
        found = (await conn.execute(
            select(c.summary, c.summary_key, c.summary_upto)
            .where(c.id == conversation_id, c.user_id == user_id)
        )).first()
        if found is None:
            return None, [], 0
        rows = (await conn.execute(
            select(m.seq, m.id, m.role, m.content, m.content_key)
            .where(m.conversation_id == conversation_id, m.user_id == user_id,
                   m.seq > (found.summary_upto or 0), m.seq < before,
                   m.status.in_(CONTEXT_STATUSES))
            .order_by(m.seq)
            .limit(_MAX_ROWS)
        )).all()
    turns, upto = [], 0
    for row in rows:
        text = message_text(keyring, row, user_id)
        if text is None:
            continue
        turns.append(HistoryTurn(row.role, text))
        upto = row.seq
    return summary_text(keyring, found, conversation_id, user_id), turns, upto


async def save_summary(
    engine: AsyncEngine, keyring: Keyring, *, conversation_id: str, user_id: str, text: str,
    upto: int,
) -> bool:
    """Store ``text`` as covering every turn up to seq ``upto``, unless a newer one exists."""
    sealed = keyring.encrypt(text, summary_aad(conversation_id=conversation_id, user_id=user_id))
    c = conversations.c
    async with engine.begin() as conn:
        result = await conn.execute(
            update(conversations)
            .where(c.id == conversation_id, c.user_id == user_id,
                   or_(c.summary_upto.is_(None), c.summary_upto < bindparam("upto")))
            .values(summary=sealed.blob, summary_key=sealed.key_id, summary_upto=upto),
            {"upto": upto},
        )
    return bool(result.rowcount)
