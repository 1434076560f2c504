"""An answer's row while it is produced and when it ends.

`mpchat.storage.messages.begin_turn` writes the row empty, status ``streaming``, claimed
by the instance producing it (``owner``) until ``lease_until``. While the answer lives:

    save_progress   the text so far of many answers (at a bounded cadence) and the seq it
                    covers, in one transaction; renews their claim; names those gone.
    renew_leases    one statement per instance renews the claim of all its answers.

It ends in exactly one of:

    finish_answer   complete / truncated / retracted, with usage and metadata.
    drop_answer     nothing was said: the row goes, the question becomes ``unanswered``.
    settle_stale    (any instance) rows whose claim expired, their instance gone: truncated
                    with the stored text, or dropped as above when it is empty.

Every update is conditional on ``status = 'streaming'``, so an answer is settled once,
whoever gets there first, and a deleted conversation is never written again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, delete, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from mpchat.estimate import estimate_tokens
from mpchat.storage.crypto import Keyring, message_aad
from mpchat.storage.messages import message_text
from mpchat.storage.tables import conversations, messages, utc_now
from mpchat.storage.transactions import Transactions

__all__ = [
    "Progress",
    "Settled",
    "StoredAnswer",
    "drop_answer",
    "finish_answer",
    "read_answer",
    "renew_leases",
    "save_progress",
    "settle_stale",
]

STREAMING = "streaming"
_m = messages.c

_PROGRESS = (
    update(messages)
    .where(_m.id == bindparam("mid"), _m.status == STREAMING)
    .values(content=bindparam("content"), content_key=bindparam("key"),
            event_seq=bindparam("eseq"), lease_until=bindparam("until"))
)
_FINISH = (
    update(messages)
    .where(_m.id == bindparam("mid"), _m.status == STREAMING)
    .values(content=bindparam("content"), content_key=bindparam("key"),
            status=bindparam("new_status"), tokens=bindparam("tokens"),
            prompt_tokens=bindparam("ptokens"), completion_tokens=bindparam("ctokens"),
            meta=bindparam("meta"), event_seq=bindparam("eseq"), owner=None, lease_until=None)
)
# The sweeper's variants: only while the claim is still expired, so an instance that was
# late (not dead) and renewed its claim meanwhile keeps its answer.
_FINISH_STALE = _FINISH.where(_m.lease_until < bindparam("stale"))
_TOUCH_CONVERSATION = (
    update(conversations)
    .where(conversations.c.id == bindparam("cid"))
    .values(updated_at=bindparam("now"))
)
_DROP = delete(messages).where(_m.id == bindparam("mid"), _m.status == STREAMING)
_DROP_STALE = _DROP.where(_m.lease_until < bindparam("stale"))
_UNANSWERED = (
    update(messages)
    .where(_m.id == bindparam("qid"), _m.role == "user")
    .values(status="unanswered")
)
_UNCOUNT = (
    update(conversations)
    .where(conversations.c.id == bindparam("cid"))
    .values(message_count=conversations.c.message_count - 1)
)
_STALE = (
    select(_m.id, _m.user_id, _m.conversation_id, _m.content, _m.content_key, _m.meta,
           _m.event_seq)
    .where(_m.status == STREAMING, _m.lease_until < bindparam("now"))
    .limit(bindparam("limit"))
)


@dataclass(frozen=True, slots=True)
class StoredAnswer:
    """An answer's row as a resumed stream needs it."""

    id: str
    user_id: str
    conversation_id: str
    status: str
    content: str  # "" when unreadable or retracted
    event_seq: int | None
    meta: dict[str, Any]
    prompt_tokens: int | None
    completion_tokens: int | None



@dataclass(frozen=True, slots=True)
class Progress:
    """An answer's text so far, and the seq of the last event it covers."""

    message_id: str
    user_id: str
    content: str
    event_seq: int


async def save_progress(
    tx: Transactions, keyring: Keyring, items: Sequence[Progress], *, lease_until: datetime
) -> set[str]:
    """Store the text so far of many answers in one transaction, renewing their claim.

    Returns the ids of those no longer streaming (settled elsewhere, or deleted).
    """
    params = []
    for item in items:
        sealed = keyring.encrypt(item.content,
                                 message_aad(message_id=item.message_id, user_id=item.user_id))
        params.append({"mid": item.message_id, "content": sealed.blob, "key": sealed.key_id,
                       "eseq": item.event_seq, "until": lease_until})
    return await tx.run(_save_progress, params)


def _save_progress(conn: Connection, params: list[dict[str, Any]]) -> set[str]:
    if conn.execute(_PROGRESS, params).rowcount == len(params):
        return set()
    ids = [p["mid"] for p in params]
    streaming = conn.execute(
        select(_m.id).where(_m.id.in_(ids), _m.status == STREAMING)
    ).scalars().all()
    return set(ids) - set(streaming)


async def renew_leases(engine: AsyncEngine, *, owner: str, until: datetime) -> int:
    """Extend the claim of every answer ``owner`` is producing; how many there were."""
    statement = (
        update(messages)
        .where(_m.owner == owner, _m.status == STREAMING)
        .values(lease_until=until)
    )
    async with engine.begin() as conn:
        return int((await conn.execute(statement)).rowcount)


async def finish_answer(
    tx: Transactions,
    keyring: Keyring,
    *,
    message_id: str,
    user_id: str,
    conversation_id: str,
    content: str,
    status: str,
    prompt_tokens: int | None,
    completion_tokens: int | None,
    meta: dict[str, Any],
    event_seq: int,
    stale_before: datetime | None = None,
) -> bool:
    """Settle the answer as ``status`` (complete, truncated, retracted); False if gone.

    With ``stale_before``, only if its claim expired before then (the sweeper).
    """
    sealed = keyring.encrypt(content, message_aad(message_id=message_id, user_id=user_id))
    params = {"mid": message_id, "content": sealed.blob, "key": sealed.key_id,
              "new_status": status, "tokens": estimate_tokens(content),
              "ptokens": prompt_tokens, "ctokens": completion_tokens, "meta": meta,
              "eseq": event_seq, "stale": stale_before}
    return await tx.run(_finish, params, conversation_id)


def _finish(conn: Connection, params: dict[str, Any], conversation_id: str) -> bool:
    statement = _FINISH if params["stale"] is None else _FINISH_STALE
    if not conn.execute(statement, params).rowcount:
        return False
    conn.execute(_TOUCH_CONVERSATION, {"cid": conversation_id, "now": utc_now()})
    return True


async def drop_answer(
    tx: Transactions, *, message_id: str, question_id: str, conversation_id: str,
    stale_before: datetime | None = None,
) -> bool:
    """Nothing was said: remove the answer's row, mark its question ``unanswered``."""
    return await tx.run(_drop, message_id, question_id, conversation_id, stale_before)


def _drop(conn: Connection, message_id: str, question_id: str, conversation_id: str,
          stale_before: datetime | None) -> bool:
    if stale_before is None:
        dropped = conn.execute(_DROP, {"mid": message_id}).rowcount
    else:
        dropped = conn.execute(_DROP_STALE, {"mid": message_id, "stale": stale_before}).rowcount
    if not dropped:
        return False
    conn.execute(_UNANSWERED, {"qid": question_id})
    conn.execute(_UNCOUNT, {"cid": conversation_id})
    return True


@dataclass(frozen=True, slots=True)
class Settled:
    """An answer settled by `settle_stale`: what its stored text is worth (its quota)."""

    message_id: str
    completion_tokens: int  # an estimate of the stored text (0: nothing was said)


async def settle_stale(
    tx: Transactions, keyring: Keyring, *, limit: int = 200
) -> list[Settled]:
    """Settle answers whose producing instance is gone (its claim expired); those settled."""
    now = utc_now()
    async with tx.engine.connect() as conn:
        rows = (await conn.execute(_STALE, {"now": now, "limit": limit})).all()
    settled: list[Settled] = []
    for row in rows:
        text = message_text(keyring, row, row.user_id) or ""
        meta = dict(row.meta or {})
        if text:
            meta["finish_reason"] = "interrupted"
            done = await finish_answer(
                tx, keyring, message_id=row.id, user_id=row.user_id,
                conversation_id=row.conversation_id, content=text, status="truncated",
                prompt_tokens=None, completion_tokens=estimate_tokens(text), meta=meta,
                event_seq=(row.event_seq or 0) + 1, stale_before=now,
            )
        else:
            done = await drop_answer(
                tx, message_id=row.id, question_id=str(meta.get("reply_to", "")),
                conversation_id=row.conversation_id, stale_before=now,
            )
        if done:
            settled.append(Settled(row.id, estimate_tokens(text) if text else 0))
    return settled


async def read_answer(
    engine: AsyncEngine, keyring: Keyring, *, message_id: str, user_id: str
) -> StoredAnswer | None:
    """The user's answer ``message_id``; None when unknown, not an answer, or not theirs."""
    query = select(
        _m.id, _m.user_id, _m.conversation_id, _m.status, _m.content, _m.content_key,
        _m.event_seq, _m.meta, _m.prompt_tokens, _m.completion_tokens,
    ).where(_m.id == message_id, _m.user_id == user_id, _m.role == "assistant")
    async with engine.connect() as conn:
        row = (await conn.execute(query)).first()
    if row is None:
        return None
    text = "" if row.status == "retracted" else message_text(keyring, row, row.user_id) or ""
    return StoredAnswer(row.id, row.user_id, row.conversation_id, row.status, text,
                        row.event_seq, dict(row.meta or {}), row.prompt_tokens,
                        row.completion_tokens)

