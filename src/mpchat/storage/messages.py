"""Messages: a chat turn's writes, the context it reads, and the history pages.

A turn is written in two steps: `begin_turn` stores the user's message (and creates the
conversation) with its answer's row, status ``streaming``, before the provider is called;
`mpchat.storage.answers` writes the answer's text as it grows and settles it when it ends.
Both keep the conversation's ``last_seq`` and count current.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from mpchat.errors import NotFound
from mpchat.storage.crypto import Ciphertext, Keyring, message_aad, summary_aad, title_aad
from mpchat.storage.tables import conversations, messages, utc_now
from mpchat.storage.transactions import Transactions

__all__ = [
    "CONTEXT_STATUSES",
    "HistoryTurn",
    "KeyedTurn",
    "MessageItem",
    "Turn",
    "begin_turn",
    "find_keyed_turn",
    "keyed_id",
    "list_messages",
    "message_text",
    "new_id",
    "set_message_status",
    "summary_text",
]

# Only these answers and questions are sent back to the model as context.
CONTEXT_STATUSES = ("complete", "truncated")
# A conversation's newest rows are read at most this many at a time for context.
_CONTEXT_ROWS = 200
_TITLE_CHARS = 40


# Built once: SQLAlchemy memoises the cache key of a statement object, so the hot path
# skips statement construction and most of the compile-cache lookup.
_NEW_CONVERSATION = insert(conversations)
# One statement for a turn's two rows (SQLAlchemy's "insertmanyvalues"), their seqs in order.
_INSERT_MESSAGES = insert(messages).returning(messages.c.seq, sort_by_parameter_order=True)
_BUMP_CONVERSATION = (
    update(conversations)
    .where(conversations.c.id == bindparam("cid"), conversations.c.user_id == bindparam("uid"))
    .values(
        last_seq=bindparam("seq"),
        message_count=conversations.c.message_count + bindparam("n"),
        updated_at=bindparam("now"),
    )
)
_SUMMARY = select(
    conversations.c.summary, conversations.c.summary_key, conversations.c.summary_upto
).where(conversations.c.id == bindparam("cid"), conversations.c.user_id == bindparam("uid"))
_HISTORY = (
    select(messages.c.seq, messages.c.id, messages.c.role, messages.c.content,
           messages.c.content_key, messages.c.tokens)
    .where(
        messages.c.conversation_id == bindparam("conversation_id"),
        messages.c.user_id == bindparam("user_id"),
        messages.c.seq > bindparam("after"),
        messages.c.status.in_(CONTEXT_STATUSES),
    )
    .order_by(messages.c.seq.desc())
    .limit(_CONTEXT_ROWS)
)


def new_id() -> str:
    return uuid.uuid4().hex


def keyed_id(user_id: str, key: str) -> str:
    """The id of the question a client sent with idempotency key ``key``: the same for a
    retry of the same request, so storing it twice fails on the id's uniqueness."""
    return hashlib.sha256(f"{user_id}\x00{key}".encode()).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class HistoryTurn:
    role: str
    content: str


@dataclass(slots=True)
class Turn:
    """What `begin_turn` wrote and read: the rows, not a choice among them
    (`mpchat.chat.context` decides what fits)."""

    conversation_id: str
    user_message_id: str
    answer_id: str
    user_id: str
    keyring: Keyring = field(repr=False)
    # The conversation's context messages after its summary, newest first (at most 200):
    # rows with ``seq``, ``role`` and ``tokens``; `text` decrypts one, only when asked.
    earlier: Sequence[Any] = ()
    summary: str | None = None  # of the turns before ``earlier``, when there is one

    def text(self, row: Any) -> str | None:
        """The text of one of ``earlier``; None when it cannot be decrypted."""
        return message_text(self.keyring, row, self.user_id)


@dataclass(frozen=True, slots=True)
class MessageItem:
    id: str
    role: str
    content: str | None  # None when the stored ciphertext cannot be decrypted
    status: str
    created_at: datetime
    # The model now sees this message only through the conversation's summary.
    summarized: bool = False


async def begin_turn(
    tx: Transactions,
    keyring: Keyring,
    *,
    user_id: str,
    conversation_id: str | None,
    content: str,
    tokens: int,
    answer_id: str,
    owner: str,
    lease_until: datetime,
    question_id: str | None = None,
) -> Turn:
    """Store the user's message and its answer's row, and read what precedes it: one
    transaction (one hand-off to the database).

    The answer's row (``answer_id``) starts empty with status ``streaming``, claimed by
    ``owner`` until ``lease_until``. The earlier messages are read newest first, so a
    budget can keep the most recent ones (`mpchat.chat.context.fit_context`).
    Raises `NotFound` for a conversation that does not exist or is not the user's, and
    when ``question_id`` (`keyed_id`) is already stored.
    """
    message_id = question_id or new_id()
    rows = [
        {"id": message_id, "role": "user", "status": "complete", "content": content,
         "tokens": tokens, "meta": None, "owner": None, "lease_until": None},
        {"id": answer_id, "role": "assistant", "status": "streaming", "content": "",
         "tokens": 0, "meta": {"reply_to": message_id}, "owner": owner,
         "lease_until": lease_until},
    ]

    def transaction(conn: Connection) -> Turn:
        now = utc_now()
        earlier: Sequence[Any] = ()
        summary = None
        if conversation_id is None:
            cid = _new_conversation(conn, keyring, user_id, content, now)
        else:
            cid = conversation_id
            earlier, summary = _read_context(conn, keyring, cid, user_id)
        _insert_messages(conn, keyring, conversation_id=cid, user_id=user_id, now=now, rows=rows)
        return Turn(cid, message_id, answer_id, user_id, keyring, earlier, summary)

    return await tx.run(transaction)


def _new_conversation(
    conn: Connection, keyring: Keyring, user_id: str, first_message: str, now: datetime
) -> str:
    conversation_id = new_id()
    title = keyring.encrypt(first_message[:_TITLE_CHARS],
                            title_aad(conversation_id=conversation_id, user_id=user_id))
    conn.execute(
        _NEW_CONVERSATION,
        {"id": conversation_id, "user_id": user_id, "title": title.blob,
         "title_key": title.key_id, "message_count": 0, "last_seq": 0,
         "created_at": now, "updated_at": now},
    )
    return conversation_id


def _read_context(
    conn: Connection, keyring: Keyring, conversation_id: str, user_id: str
) -> tuple[Sequence[Any], str | None]:
    """The user's conversation's summary, and the context rows after it, newest first."""
    found = conn.execute(_SUMMARY, {"cid": conversation_id, "uid": user_id}).first()
    if found is None:
        raise NotFound()
    earlier = conn.execute(_HISTORY, {"conversation_id": conversation_id, "user_id": user_id,
                                      "after": found.summary_upto or 0}).all()
    return earlier, summary_text(keyring, found, conversation_id, user_id)


def summary_text(keyring: Keyring, row: Any, conversation_id: str, user_id: str) -> str | None:
    if row.summary is None or row.summary_key is None:
        return None
    # An unreadable summary is skipped; the next one replaces it.
    return keyring.decrypt_or_none(Ciphertext(row.summary_key, row.summary),
                                   summary_aad(conversation_id=conversation_id, user_id=user_id))


def _insert_messages(
    conn: Connection,
    keyring: Keyring,
    *,
    conversation_id: str,
    user_id: str,
    now: datetime,
    rows: list[dict[str, Any]],
) -> None:
    """Insert ``rows`` (encrypting their content) and count them on the user's conversation."""
    params = []
    for row in rows:
        sealed = keyring.encrypt(row["content"],
                                 message_aad(message_id=row["id"], user_id=user_id))
        params.append({**row, "conversation_id": conversation_id, "user_id": user_id,
                       "content": sealed.blob, "content_key": sealed.key_id,
                       "prompt_tokens": None, "completion_tokens": None, "created_at": now,
                       "event_seq": None})
    try:
        seqs = conn.execute(_INSERT_MESSAGES, params).scalars().all()
    except IntegrityError:  # the conversation does not exist (foreign key), or a keyed
        raise NotFound() from None  # question is stored already (`find_keyed_turn` tells)
    bumped = conn.execute(
        _BUMP_CONVERSATION,
        {"cid": conversation_id, "uid": user_id, "seq": max(seqs), "n": len(rows), "now": now},
    )
    if bumped.rowcount != 1:  # not the user's (or gone): the transaction rolls back
        raise NotFound()


@dataclass(frozen=True, slots=True)
class KeyedTurn:
    """A question stored under an idempotency key (`keyed_id`), and its answer's row."""

    conversation_id: str
    status: str  # the question's: complete, unanswered, rejected
    content: str | None  # None when it cannot be decrypted
    answer_id: str | None  # None when its answer produced nothing (or was deleted)


async def find_keyed_turn(
    engine: AsyncEngine, keyring: Keyring, *, question_id: str, user_id: str
) -> KeyedTurn | None:
    """The user's question ``question_id`` and its answer; None when it is not stored."""
    m = messages.c
    async with engine.connect() as conn:
        question = (await conn.execute(
            select(m.seq, m.conversation_id, m.status, m.content, m.content_key)
            .where(m.id == question_id, m.user_id == user_id, m.role == "user")
        )).first()
        if question is None:
            return None
        # Its answer's row was written with it, so it is among the next few of the
        # conversation (another turn's rows may come between them on PostgreSQL).
        following = (await conn.execute(
            select(m.id, m.meta)
            .where(m.conversation_id == question.conversation_id, m.role == "assistant",
                   m.seq > question.seq)
            .order_by(m.seq).limit(4)
        )).all()
    answer_id = next((row.id for row in following
                      if (row.meta or {}).get("reply_to") == question_id), None)
    content = keyring.decrypt_or_none(Ciphertext(question.content_key, question.content),
                                      message_aad(message_id=question_id, user_id=user_id))
    return KeyedTurn(question.conversation_id, question.status, content, answer_id)


async def set_message_status(engine: AsyncEngine, *, message_id: str, status: str) -> None:
    """Change a stored message's status (e.g. a question later rejected by safety)."""
    async with engine.begin() as conn:
        await conn.execute(
            update(messages).where(messages.c.id == message_id).values(status=status)
        )


async def list_messages(
    engine: AsyncEngine,
    keyring: Keyring,
    *,
    conversation_id: str,
    user_id: str,
    limit: int,
    before: int | None,
) -> tuple[list[MessageItem], int | None]:
    """A page of the conversation, oldest first within the page; cursor pages backwards.
    Messages covered by the conversation's summary are marked ``summarized``.

    Raises `NotFound` when the conversation is not the user's.
    """
    m = messages.c
    query = select(m.seq, m.id, m.role, m.content, m.content_key, m.status, m.created_at).where(
        m.conversation_id == conversation_id
    )
    if before is not None:
        query = query.where(m.seq < before)
    query = query.order_by(m.seq.desc()).limit(limit + 1)
    async with engine.connect() as conn:
        found = (await conn.execute(
            _SUMMARY, {"cid": conversation_id, "uid": user_id})).first()
        if found is None:
            raise NotFound()
        rows = (await conn.execute(query)).all()
    upto = found.summary_upto or 0
    more = len(rows) > limit
    page = list(rows[:limit])
    page.reverse()
    items = [
        MessageItem(
            id=row.id,
            role=row.role,
            content=_content(keyring, row, user_id),
            status=row.status,
            created_at=row.created_at,
            summarized=row.seq <= upto,
        )
        for row in page
    ]
    return items, (page[0].seq if more and page else None)


def _content(keyring: Keyring, row: Any, user_id: str) -> str | None:
    if row.status == "retracted":
        return ""  # withdrawn by content safety: never shown again
    return message_text(keyring, row, user_id)


def message_text(keyring: Keyring, row: Any, user_id: str) -> str | None:
    """A stored message's text (``row`` has its id, content and content_key); None when
    it cannot be decrypted (an unreadable row is reported or left out, never fatal)."""
    return keyring.decrypt_or_none(Ciphertext(row.content_key, row.content),
                                   message_aad(message_id=row.id, user_id=user_id))
