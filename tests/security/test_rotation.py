"""Key rotation: interrupted and resumed, old key removed, unreadable rows skipped, the CLI."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from mpchat import cli
from mpchat.storage import messages as store
from mpchat.storage.conversations import list_conversations
from mpchat.storage.crypto import Ciphertext, Keyring, summary_aad
from mpchat.storage.rotation import BatchProgress, count_stale, rotate_keys
from mpchat.storage.tables import conversations, messages
from mpchat.storage.users import get_or_create_user
from tests.storage.turns import store_turn


class Crash(Exception):
    """Stands for the process dying between two batches."""


async def _write_history(
    engine: AsyncEngine, ring: Keyring, user: str, n: int, *, summary: bool = True
) -> dict[str, str]:
    """n conversations of one turn each, plus a summary on one; message id -> its text."""
    expected: dict[str, str] = {}
    for i in range(n):
        turn = await store_turn(engine, ring, user_id=user, conversation_id=None,
                                question=f"question {i}", answer=f"answer {i}")
        answer_id = turn.answer_id
        expected[turn.user_message_id] = f"question {i}"
        expected[answer_id] = f"answer {i}"
    if not summary:
        return expected
    async with engine.begin() as conn:
        first = (await conn.execute(select(conversations.c.id).limit(1))).scalar_one()
        sealed = ring.encrypt("summary text", summary_aad(conversation_id=first, user_id=user))
        await conn.execute(update(conversations).where(conversations.c.id == first)
                           .values(summary=sealed.blob, summary_key=sealed.key_id))
    return expected


async def _read_all(engine: AsyncEngine, ring: Keyring, user: str) -> tuple[dict, list, list]:
    convs, _ = await list_conversations(engine, ring, user_id=user, limit=100, before=None)
    contents: dict[str, str | None] = {}
    for conv in convs:
        items, _ = await store.list_messages(engine, ring, conversation_id=conv.id,
                                             user_id=user, limit=100, before=None)
        contents.update({m.id: m.content for m in items})
    async with engine.connect() as conn:
        rows = (await conn.execute(select(conversations.c.id, conversations.c.summary,
                                          conversations.c.summary_key)
                                   .where(conversations.c.summary.is_not(None)))).all()
    summaries = [ring.decrypt(Ciphertext(r.summary_key, r.summary),
                              summary_aad(conversation_id=r.id, user_id=user)) for r in rows]
    return contents, sorted(c.title for c in convs), summaries


async def test_interrupted_rotation_resumes_and_old_key_can_go(engine, key1, key2):
    old, both, new = (Keyring.from_spec(key1), Keyring.from_spec(f"{key2},{key1}"),
                      Keyring.from_spec(key2))
    user = await get_or_create_user(engine, openid="rotating")
    expected = await _write_history(engine, old, user, 6)  # 12 messages, 6 titles, 1 summary
    assert await count_stale(engine, both) == {
        "messages.content": 12, "conversations.title": 6, "conversations.summary": 1,
        "api_requests.record": 0}

    batches: list[BatchProgress] = []

    def crash_after_first(batch: BatchProgress) -> None:
        batches.append(batch)
        raise Crash

    with pytest.raises(Crash):
        await rotate_keys(engine, both, batch_size=5, on_batch=crash_after_first)
    assert batches[0].rewritten == 5
    assert (await count_stale(engine, both))["messages.content"] == 7  # half-way

    # The service keeps writing with the new keyring while rotation is stopped.
    expected |= await _write_history(engine, both, user, 1, summary=False)

    seen: list[BatchProgress] = []
    report = await rotate_keys(engine, both, batch_size=5, on_batch=seen.append)
    assert report.rewritten == 7 + 6 + 1 and not report.unreadable
    assert [b.column for b in seen] == ["messages.content"] * 2 + ["conversations.title"] * 2 + [
        "conversations.summary"]
    assert await count_stale(engine, both) == dict.fromkeys(
        ("messages.content", "conversations.title", "conversations.summary",
         "api_requests.record"), 0)
    assert (await rotate_keys(engine, both)).rewritten == 0  # idempotent

    async with engine.connect() as conn:
        keys = set((await conn.execute(select(messages.c.content_key))).scalars())
    assert keys == {"k2"}
    for ring in (both, new):  # key 1 removed: everything still reads
        contents, titles, summaries = await _read_all(engine, ring, user)
        assert contents == expected
        assert titles == sorted([f"question {i}" for i in range(6)] + ["question 0"])
        assert summaries == ["summary text"]


async def test_cancelled_rotation_keeps_committed_batches(engine, key1, key2):
    old, both = Keyring.from_spec(key1), Keyring.from_spec(f"{key2},{key1}")
    user = await get_or_create_user(engine, openid="cancelled")
    expected = await _write_history(engine, old, user, 4)
    first_batch = asyncio.Event()

    def note(batch: BatchProgress) -> None:
        first_batch.set()

    task = asyncio.create_task(rotate_keys(engine, both, batch_size=2, on_batch=note))
    async with asyncio.timeout(10):
        await first_batch.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (await count_stale(engine, both))["messages.content"] < 8  # the batch committed
    await rotate_keys(engine, both, batch_size=2)
    assert sum((await count_stale(engine, both)).values()) == 0
    contents, _, _ = await _read_all(engine, Keyring.from_spec(key2), user)
    assert contents == expected


async def test_unreadable_rows_are_reported_and_skipped(engine, key1, key2):
    old, both = Keyring.from_spec(key1), Keyring.from_spec(f"{key2},{key1}")
    user = await get_or_create_user(engine, openid="damaged")
    await _write_history(engine, old, user, 3)
    async with engine.begin() as conn:
        rows = (await conn.execute(select(messages.c.seq, messages.c.content)
                                   .order_by(messages.c.seq))).all()
        flipped = bytes([rows[0].content[0] ^ 1]) + rows[0].content[1:]
        await conn.execute(update(messages).where(messages.c.seq == rows[0].seq)
                           .values(content=flipped))
        await conn.execute(update(messages).where(messages.c.seq == rows[1].seq)
                           .values(content_key="gone"))
    report = await rotate_keys(engine, both, batch_size=1)
    assert sorted((u.column, u.row) for u in report.unreadable) == [
        ("messages.content", str(rows[0].seq)), ("messages.content", str(rows[1].seq))]
    assert report.rewritten == 4 + 3 + 1
    assert (await count_stale(engine, both))["messages.content"] == 2  # left as they were


def test_cli_rotates_prints_progress_and_exits_zero(
    database_url, key1, key2, tmp_path, monkeypatch, capsys, restore_logging
):
    from mpchat.storage.engine import create_engine
    from mpchat.storage.migrations import upgrade

    async def prepare() -> str:
        engine = create_engine(database_url)
        try:
            await upgrade(engine)
            user = await get_or_create_user(engine, openid="cli")
            await _write_history(engine, Keyring.from_spec(key1), user, 3)
            return user
        finally:
            await engine.dispose()

    async def check(user: str) -> dict:
        engine = create_engine(database_url)
        try:
            return (await _read_all(engine, Keyring.from_spec(key2), user))[0]
        finally:
            await engine.dispose()

    user = asyncio.run(prepare())
    monkeypatch.chdir(tmp_path)  # no stray .env
    monkeypatch.setenv("MPCHAT_DATABASE_URL", database_url)
    monkeypatch.setenv("MPCHAT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("MPCHAT_ENCRYPTION_KEYS", f"{key2},{key1}")
    assert cli.main(["rotate-keys", "--batch-size", "2"]) == 0
    out = capsys.readouterr().out
    assert "messages.content: 2 rewritten under k2" in out
    assert "done: 10 rewritten, 0 not under k2" in out
    assert sorted(v or "" for v in asyncio.run(check(user)).values()) == sorted(
        [f"question {i}" for i in range(3)] + [f"answer {i}" for i in range(3)])
    assert key1.split(":")[1] not in out and key2.split(":")[1] not in out
    # Nothing left: a second run rewrites nothing and still succeeds.
    assert cli.main(["rotate-keys"]) == 0
    assert "done: 0 rewritten, 0 not under k2" in capsys.readouterr().out
