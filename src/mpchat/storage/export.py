"""Everything the service holds about one user, as one JSON-ready document (the right of access).

`export_user` reads only rows keyed to the caller: the user row, their sessions, their
conversations with every message decrypted (answers carry the AI label), their usage, and the
content safety decisions keyed to them (by the keyed hash the audit uses). What it leaves out,
on purpose: a retracted answer's text (withdrawn by content safety, never shown again, as in the
message list), and the audit's rule details (they describe the operator's rules, not the user).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from mpchat.storage.crypto import Ciphertext, Keyring, message_aad, summary_aad, title_aad
from mpchat.storage.tables import audit_events, conversations, messages, sessions, users

__all__ = ["FORMAT", "export_user"]

FORMAT = "mpchat-export-1"
UNREADABLE = "（无法解密）"


async def export_user(
    engine: AsyncEngine, keyring: Keyring, *, user_id: str, user_hash: str | None, label: str
) -> dict[str, Any]:
    """The document; ``user_hash``: the user's audit hash (None: no audit to read);
    ``label``: the AI label put on every answer."""
    async with engine.connect() as conn:
        user = (await conn.execute(
            select(users.c.id, users.c.openid, users.c.created_at).where(users.c.id == user_id)
        )).first()
        held = await _conversations(conn, keyring, user_id, label)
        return {
            "format": FORMAT,
            "exported_at": datetime.now(UTC).isoformat(),
            "user": dict(user._mapping) if user is not None else {"id": user_id},
            "sessions": await _sessions(conn, user_id),
            "conversations": held,
            "usage": _usage(held),
            "content_checks": await _checks(conn, user_hash) if user_hash else [],
            # TODO(quotas): the user's credit ledger, once quotas exist ("ledger" in API.md).
        }


async def _sessions(conn: AsyncConnection, user_id: str) -> list[dict[str, Any]]:
    s = sessions.c
    rows = await conn.execute(
        select(s.created_at, s.expires_at).where(s.user_id == user_id).order_by(s.created_at)
    )
    return [dict(row._mapping) for row in rows]


async def _conversations(
    conn: AsyncConnection, keyring: Keyring, user_id: str, label: str
) -> list[dict[str, Any]]:
    c, m = conversations.c, messages.c
    found = (await conn.execute(
        select(c.id, c.title, c.title_key, c.summary, c.summary_key, c.created_at, c.updated_at)
        .where(c.user_id == user_id).order_by(c.created_at, c.id)
    )).all()
    by_id: dict[str, dict[str, Any]] = {}
    for row in found:
        by_id[row.id] = {
            "id": row.id,
            "title": _open(keyring, row.title, row.title_key,
                           title_aad(conversation_id=row.id, user_id=user_id)),
            "summary": _open(keyring, row.summary, row.summary_key,
                             summary_aad(conversation_id=row.id, user_id=user_id)),
            "created_at": row.created_at,
            "updated_at": row.updated_at,
            "messages": [],
        }
    said = await conn.execute(
        select(m.id, m.conversation_id, m.role, m.status, m.content, m.content_key, m.meta,
               m.prompt_tokens, m.completion_tokens, m.created_at)
        .where(m.user_id == user_id).order_by(m.seq)
    )
    for message in said:
        conversation = by_id.get(message.conversation_id)
        if conversation is not None:
            conversation["messages"].append(_message(keyring, message, user_id, label))
    return list(by_id.values())


def _message(keyring: Keyring, row: Any, user_id: str, label: str) -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": row.id,
        "role": row.role,
        "status": row.status,
        "content": "" if row.status == "retracted" else _open(
            keyring, row.content, row.content_key,
            message_aad(message_id=row.id, user_id=user_id)),
        "created_at": row.created_at,
    }
    if row.role == "assistant":
        meta = row.meta or {}
        item.update({
            "ai_generated": True,
            "label": label,
            "model": meta.get("model"),
            "finish_reason": meta.get("finish_reason"),
            "usage": {"prompt_tokens": row.prompt_tokens or 0,
                      "completion_tokens": row.completion_tokens or 0},
        })
    return item


async def _checks(conn: AsyncConnection, user_hash: str) -> list[dict[str, Any]]:
    a = audit_events.c
    rows = await conn.execute(
        select(a.created_at, a.check, a.stage, a.verdict, a.message_id)
        .where(a.user_hash == user_hash).order_by(a.seq)
    )
    return [dict(row._mapping) for row in rows]


def _usage(conversation_list: list[dict[str, Any]]) -> dict[str, int]:
    answers = [message for conversation in conversation_list
               for message in conversation["messages"] if message["role"] == "assistant"]
    return {
        "answers": len(answers),
        "prompt_tokens": sum(a["usage"]["prompt_tokens"] for a in answers),
        "completion_tokens": sum(a["usage"]["completion_tokens"] for a in answers),
    }


def _open(keyring: Keyring, blob: bytes | None, key: str | None, aad: bytes) -> str | None:
    if blob is None or key is None:
        return None
    text = keyring.decrypt_or_none(Ciphertext(key, blob), aad)
    return UNREADABLE if text is None else text
