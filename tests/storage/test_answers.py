"""An answer's row: text so far in batches, settled exactly once, orphans settled by anyone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import delete, select

from mpchat.storage import answers as stored
from mpchat.storage import messages as store
from mpchat.storage.crypto import Keyring, generate_key_spec
from mpchat.storage.tables import conversations, messages
from mpchat.storage.users import get_or_create_user
from tests.storage.turns import begin


@pytest.fixture
def keyring() -> Keyring:
    return Keyring.from_spec(generate_key_spec("k1"))


async def _row(engine, message_id: str):
    async with engine.connect() as conn:
        return (await conn.execute(select(messages).where(messages.c.id == message_id))).first()


async def _count(engine, conversation_id: str) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(select(conversations.c.message_count).where(
            conversations.c.id == conversation_id))).scalar_one())


async def test_progress_of_many_answers_in_one_call_names_the_gone(engine, tx, keyring):
    """One batch writes every answer's text and seq; a deleted one is reported, not written."""
    user = await get_or_create_user(engine, openid="p1")
    turns = [await begin(tx, keyring, user_id=user, conversation_id=None, content=f"q{i}",
                         tokens=1) for i in range(3)]
    async with engine.begin() as conn:
        await conn.execute(delete(messages).where(messages.c.id == turns[2].answer_id))
    until = datetime.now(UTC) + timedelta(minutes=5)
    items = [stored.Progress(t.answer_id, user, f"text {i}", 4 + i) for i, t in enumerate(turns)]
    gone = await stored.save_progress(tx, keyring, items, lease_until=until)
    assert gone == {turns[2].answer_id}
    for i, turn in enumerate(turns[:2]):
        row = await stored.read_answer(engine, keyring, message_id=turn.answer_id, user_id=user)
        assert row is not None
        assert (row.status, row.content, row.event_seq) == ("streaming", f"text {i}", 4 + i)


async def test_an_answer_is_settled_once(engine, tx, keyring):
    """The second settling (a sweeper racing the producer) changes nothing."""
    user = await get_or_create_user(engine, openid="p2")
    turn = await begin(tx, keyring, user_id=user, conversation_id=None, content="q",
                       tokens=1)
    args = dict(message_id=turn.answer_id, user_id=user, conversation_id=turn.conversation_id,
                prompt_tokens=1, completion_tokens=1, meta={}, event_seq=3)
    assert await stored.finish_answer(tx, keyring, content="first", status="complete",
                                      **args)
    assert not await stored.finish_answer(tx, keyring, content="second",
                                          status="truncated", **args)
    assert not await stored.drop_answer(tx, message_id=turn.answer_id,
                                        question_id=turn.user_message_id,
                                        conversation_id=turn.conversation_id)
    row = await stored.read_answer(engine, keyring, message_id=turn.answer_id, user_id=user)
    assert row is not None and (row.status, row.content) == ("complete", "first")
    assert (await _row(engine, turn.answer_id)).lease_until is None


async def test_orphans_are_settled_and_live_answers_are_not(engine, tx, keyring):
    """Expired claims: text kept as truncated, or no answer and the question unanswered."""
    user = await get_or_create_user(engine, openid="p3")
    said = await begin(tx, keyring, user_id=user, conversation_id=None, content="q1",
                       tokens=1, lease=-1, owner="dead")
    silent = await begin(tx, keyring, user_id=user, conversation_id=None, content="q2",
                         tokens=1, lease=-1, owner="dead")
    live = await begin(tx, keyring, user_id=user, conversation_id=None, content="q3",
                       tokens=1, lease=60, owner="alive")
    past = datetime.now(UTC) - timedelta(seconds=1)
    await stored.save_progress(tx, keyring, [stored.Progress(said.answer_id, user,
                               "half an answer", 7)], lease_until=past)

    assert len(await stored.settle_stale(tx, keyring)) == 2
    assert len(await stored.settle_stale(tx, keyring)) == 0  # once

    row = await stored.read_answer(engine, keyring, message_id=said.answer_id, user_id=user)
    assert row is not None and (row.status, row.content) == ("truncated", "half an answer")
    assert row.meta["finish_reason"] == "interrupted" and row.event_seq == 8
    assert await _row(engine, silent.answer_id) is None
    assert (await _row(engine, silent.user_message_id)).status == "unanswered"
    assert await _count(engine, silent.conversation_id) == 1
    assert (await _row(engine, live.answer_id)).status == "streaming"


async def test_renewing_leases_touches_only_the_owner_s_streaming_answers(engine, tx, keyring):
    """One statement renews an instance's claims; another instance's rows are left alone."""
    user = await get_or_create_user(engine, openid="p4")
    mine = await begin(tx, keyring, user_id=user, conversation_id=None, content="a",
                       tokens=1, lease=-1, owner="me")
    theirs = await begin(tx, keyring, user_id=user, conversation_id=None, content="b",
                         tokens=1, lease=-1, owner="them")
    until = datetime.now(UTC) + timedelta(minutes=1)
    assert await stored.renew_leases(engine, owner="me", until=until) == 1
    assert len(await stored.settle_stale(tx, keyring)) == 1
    assert (await _row(engine, mine.answer_id)).status == "streaming"
    assert await _row(engine, theirs.answer_id) is None


async def test_a_turn_is_two_rows_in_order(engine, tx, keyring):
    """The question, then its answer's streaming row, both counted on the conversation."""
    user = await get_or_create_user(engine, openid="p5")
    turn = await begin(tx, keyring, user_id=user, conversation_id=None, content="q",
                       tokens=1)
    items, _ = await store.list_messages(engine, keyring, conversation_id=turn.conversation_id,
                                         user_id=user, limit=10, before=None)
    assert [(i.id, i.role, i.status, i.content) for i in items] == [
        (turn.user_message_id, "user", "complete", "q"),
        (turn.answer_id, "assistant", "streaming", ""),
    ]
    assert await _count(engine, turn.conversation_id) == 2


async def test_a_claim_renewed_meanwhile_is_not_settled_by_the_sweeper(engine, tx, keyring):
    """A late (not dead) instance that renewed its claim keeps its answer."""
    user = await get_or_create_user(engine, openid="p6")
    turn = await begin(tx, keyring, user_id=user, conversation_id=None, content="q",
                       tokens=1, lease=60)
    now = datetime.now(UTC)
    assert not await stored.finish_answer(
        tx, keyring, message_id=turn.answer_id, user_id=user,
        conversation_id=turn.conversation_id, content="x", status="truncated",
        prompt_tokens=None, completion_tokens=1, meta={}, event_seq=1, stale_before=now)
    assert not await stored.drop_answer(
        tx, message_id=turn.answer_id, question_id=turn.user_message_id,
        conversation_id=turn.conversation_id, stale_before=now)
    assert (await _row(engine, turn.answer_id)).status == "streaming"
