"""Repository functions on SQLite and PostgreSQL: ordering, unreadable rows, nothing in clear.

What a turn reads is fitted to a budget as the chat does it (`mpchat.chat.context`).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select, text, update

from mpchat.chat.context import fit_context, summary_block
from mpchat.errors import NotFound
from mpchat.estimate import estimate_tokens
from mpchat.storage import messages as store
from mpchat.storage.crypto import Keyring, generate_key_spec
from mpchat.storage.tables import messages
from mpchat.storage.users import get_or_create_user
from tests.storage.turns import begin, store_turn

MARKER = "MARKER-7f3a9c"


def _read_files(folder: Path, pattern: str) -> bytes:
    return b"".join(p.read_bytes() for p in folder.glob(pattern))



@pytest.fixture
def keyring() -> Keyring:
    return Keyring.from_spec(generate_key_spec("k1"))


async def _turn(engine, keyring, user, conv, content, answer):
    return await store_turn(engine, keyring, user_id=user, conversation_id=conv,
                            question=content, answer=answer)


async def test_history_is_chronological_and_excludes_the_new_message(engine, keyring):
    user = await get_or_create_user(engine, openid="o1")
    first = await _turn(engine, keyring, user, None, "q1", "a1")
    await _turn(engine, keyring, user, first.conversation_id, "q2", "a2")
    third = await _turn(engine, keyring, user, first.conversation_id, "q3", "a3")
    context = fit_context(third.earlier, text=third.text, summary=third.summary, budget=1000)
    assert [(h.role, h.content) for h in context.history] == [
        ("user", "q1"), ("assistant", "a1"), ("user", "q2"), ("assistant", "a2")]


async def test_budget_keeps_newest_turns(engine, tx, keyring):
    user = await get_or_create_user(engine, openid="o2")
    first = await _turn(engine, keyring, user, None, "q1", "a1")
    await _turn(engine, keyring, user, first.conversation_id, "q2", "a2")
    # Questions count 10 tokens, answers 5 (estimated from their text): q2 + a2 fit in 19.
    turn = await begin(tx, keyring, user_id=user, conversation_id=first.conversation_id,
                       content="q3", tokens=10)
    # (A summary, so the note of omitted turns costs nothing here: tests/chat/test_context.py.)
    cost = estimate_tokens(summary_block("s", omitted=True))
    context = fit_context(turn.earlier, text=turn.text, summary="s", budget=cost + 19)
    assert [h.content for h in context.history] == ["q2", "a2"]
    assert context.omitted == 2


async def test_unknown_or_foreign_conversation_is_not_found(engine, tx, keyring):
    alice = await get_or_create_user(engine, openid="alice")
    eve = await get_or_create_user(engine, openid="eve")
    turn = await _turn(engine, keyring, alice, None, "q", "a")
    for conv in (turn.conversation_id, "f" * 32):
        with pytest.raises(NotFound):
            await begin(tx, keyring, user_id=eve, conversation_id=conv, content="x", tokens=1)
        with pytest.raises(NotFound):
            await store.list_messages(engine, keyring, conversation_id=conv, user_id=eve,
                                      limit=10, before=None)


async def test_swapped_ciphertext_is_reported_per_message_not_fatal(engine, tx, keyring):
    user = await get_or_create_user(engine, openid="o3")
    turn = await _turn(engine, keyring, user, None, "first", "second")
    async with engine.begin() as conn:
        rows = (await conn.execute(select(messages.c.seq, messages.c.content)
                                   .order_by(messages.c.seq))).all()
        # Copy the answer's ciphertext over the question: it must not decrypt there.
        await conn.execute(update(messages).where(messages.c.seq == rows[0].seq)
                           .values(content=rows[1].content))
    items, _ = await store.list_messages(engine, keyring, conversation_id=turn.conversation_id,
                                         user_id=user, limit=10, before=None)
    assert [i.content for i in items] == [None, "second"]
    again = await begin(tx, keyring, user_id=user, conversation_id=turn.conversation_id,
                        content="third", tokens=1)
    context = fit_context(again.earlier, text=again.text, summary=again.summary, budget=100)
    assert [h.content for h in context.history] == ["second"]


async def test_raw_database_never_holds_the_plaintext(engine, keyring, database_url, tmp_path):
    user = await get_or_create_user(engine, openid="o4")
    await _turn(engine, keyring, user, None, f"question {MARKER}", f"answer {MARKER}")
    if database_url.startswith("sqlite"):
        await engine.dispose()  # checkpoint the WAL so every byte is in files we can read
        data = _read_files(Path(tmp_path), "test.db*")
    else:
        async with engine.connect() as conn:
            dump = (await conn.execute(text(
                "SELECT string_agg(t::text, '|') FROM (SELECT * FROM messages) t "
                "UNION ALL SELECT string_agg(t::text, '|') FROM (SELECT * FROM conversations) t"
            ))).scalars().all()
        data = "".join(d or "" for d in dump).encode()
    assert data
    # bytea columns print as hex in PostgreSQL's text form: look for both spellings.
    for needle in (MARKER, "question"):
        assert needle.encode() not in data
        assert needle.encode().hex().encode() not in data
