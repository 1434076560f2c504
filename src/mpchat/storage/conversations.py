"""Conversations: listing, ownership checks and deletion (rows are removed, not flagged)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from mpchat.storage.crypto import Ciphertext, Keyring, title_aad
from mpchat.storage.tables import conversations, messages, sessions, usage_records, users

__all__ = [
    "ConversationItem",
    "delete_conversation",
    "delete_user_data",
    "list_conversations",
    "owned_conversation",
]

UNREADABLE_TITLE = "（无法解密）"


@dataclass(frozen=True, slots=True)
class ConversationItem:
    id: str
    title: str
    updated_at: datetime
    message_count: int


async def owned_conversation(conn: AsyncConnection, *, conversation_id: str, user_id: str) -> bool:
    """Whether ``conversation_id`` exists and belongs to ``user_id`` (else callers say 404)."""
    query = select(conversations.c.id).where(
        conversations.c.id == conversation_id, conversations.c.user_id == user_id
    )
    return (await conn.execute(query)).first() is not None


async def list_conversations(
    engine: AsyncEngine, keyring: Keyring, *, user_id: str, limit: int, before: int | None
) -> tuple[list[ConversationItem], int | None]:
    """Newest first; returns the page and the cursor of the next page (or None)."""
    c = conversations.c
    query = select(c.id, c.title, c.title_key, c.updated_at, c.message_count, c.last_seq).where(
        c.user_id == user_id
    )
    if before is not None:
        query = query.where(c.last_seq < before)
    query = query.order_by(c.last_seq.desc()).limit(limit + 1)
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    more = len(rows) > limit
    rows = rows[:limit]
    items = [
        ConversationItem(
            id=row.id,
            title=_title(keyring, row.title, row.title_key, row.id, user_id),
            updated_at=row.updated_at,
            message_count=row.message_count,
        )
        for row in rows
    ]
    return items, (rows[-1].last_seq if more and rows else None)


def _title(
    keyring: Keyring, blob: bytes | None, key: str | None, conv_id: str, user_id: str
) -> str:
    if blob is None or key is None:
        return ""
    title = keyring.decrypt_or_none(Ciphertext(key, blob),
                                    title_aad(conversation_id=conv_id, user_id=user_id))
    return UNREADABLE_TITLE if title is None else title


async def delete_conversation(engine: AsyncEngine, *, conversation_id: str, user_id: str) -> bool:
    """Delete the conversation and its messages; False when it is not the user's."""
    async with engine.begin() as conn:
        if not await owned_conversation(conn, conversation_id=conversation_id, user_id=user_id):
            return False
        await conn.execute(delete(messages).where(messages.c.conversation_id == conversation_id))
        await conn.execute(delete(conversations).where(conversations.c.id == conversation_id))
    return True


async def delete_user_data(engine: AsyncEngine, *, user_id: str) -> None:
    """Every message, conversation, session and usage record of the user, and the user row."""
    async with engine.begin() as conn:
        await conn.execute(delete(usage_records).where(usage_records.c.user_id == user_id))
        await conn.execute(delete(messages).where(messages.c.user_id == user_id))
        await conn.execute(delete(conversations).where(conversations.c.user_id == user_id))
        await conn.execute(delete(sessions).where(sessions.c.user_id == user_id))
        await conn.execute(delete(users).where(users.c.id == user_id))
