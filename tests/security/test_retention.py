"""Retention: old conversations and their messages are deleted, in batches, once per interval."""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from redis.asyncio import Redis
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from mpchat.storage.crypto import Keyring
from mpchat.storage.engine import create_engine
from mpchat.storage.retention import purge_expired, retention_pass, run_retention
from mpchat.storage.tables import conversations, messages
from mpchat.storage.users import get_or_create_user
from tests.conftest import REDIS_URL, require_service
from tests.storage.turns import store_turn
from tests.utils import free_port


async def _conversation(engine: AsyncEngine, ring: Keyring, user: str, turns: int, age_days: int):
    conv = None
    for i in range(turns):
        turn = await store_turn(engine, ring, user_id=user, conversation_id=conv,
                                question=f"m{i}", answer=f"a{i}")
        conv = turn.conversation_id
    async with engine.begin() as conn:
        await conn.execute(update(conversations).where(conversations.c.id == conv).values(
            updated_at=datetime.now(UTC) - timedelta(days=age_days)))
    assert conv is not None
    return conv


async def _count(engine: AsyncEngine, table, **where) -> int:
    query = select(func.count()).select_from(table)
    for column, value in where.items():
        query = query.where(table.c[column] == value)
    async with engine.connect() as conn:
        return int((await conn.execute(query)).scalar_one())


async def _fixture_data(engine: AsyncEngine, key1: str) -> tuple[list[str], list[str]]:
    ring = Keyring.from_spec(key1)
    alice = await get_or_create_user(engine, openid="alice")
    bob = await get_or_create_user(engine, openid="bob")
    old = [await _conversation(engine, ring, alice, 7, 40),
           await _conversation(engine, ring, bob, 2, 31),
           await _conversation(engine, ring, bob, 1, 400)]
    fresh = [await _conversation(engine, ring, alice, 3, 29),
             await _conversation(engine, ring, bob, 2, 0)]
    return old, fresh


async def test_old_conversations_and_their_messages_are_deleted(engine, key1):
    old, _ = await _fixture_data(engine, key1)
    deleted = await purge_expired(engine, days=30, conversation_batch=2, message_batch=3)
    assert deleted == 3
    for conv in old:
        assert await _count(engine, conversations, id=conv) == 0
        assert await _count(engine, messages, conversation_id=conv) == 0
    assert await _count(engine, conversations) == 2
    assert await _count(engine, messages) == 10  # 3 + 2 fresh turns: questions and answers
    assert await purge_expired(engine, days=30) == 0  # idempotent


async def test_concurrent_purges_are_harmless(engine, database_url, key1):
    old, fresh = await _fixture_data(engine, key1)
    other = create_engine(database_url)  # a second instance, its own pool
    try:
        results = await asyncio.gather(
            purge_expired(engine, days=30, conversation_batch=1, message_batch=2),
            purge_expired(other, days=30, conversation_batch=1, message_batch=2),
        )
    finally:
        await other.dispose()
    assert sum(results) == len(old)
    assert await _count(engine, conversations) == len(fresh)


@pytest.fixture
async def redis() -> Redis:
    require_service(REDIS_URL, 6379, "Redis")
    client = Redis.from_url(REDIS_URL)
    yield client
    await client.aclose()


async def test_redis_lock_allows_one_pass_per_interval(engine, key1, redis):
    lock = f"mpchat-test-security:{uuid.uuid4().hex}:retention"
    try:
        await _fixture_data(engine, key1)
        first = await retention_pass(engine, days=30, interval=60, redis=redis, lock_key=lock)
        second = await retention_pass(engine, days=30, interval=60, redis=redis, lock_key=lock)
        assert first == 3 and second is None
        ttl = await redis.pttl(lock)
        assert 0 < ttl <= 60_000  # it expires by itself: the next interval runs again
    finally:
        await redis.delete(lock)


async def test_unreachable_redis_still_purges(engine, key1, caplog):
    dead = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.5)
    try:
        await _fixture_data(engine, key1)
        with caplog.at_level(logging.WARNING, logger="mpchat.retention"):
            assert await retention_pass(engine, days=30, interval=60, redis=dead) == 3
        assert "retention lock unavailable" in caplog.text
    finally:
        await dead.aclose()


async def _until(predicate) -> None:
    """Poll a condition (at most 10 s): the loop under test has no event to wait on."""
    for _ in range(1000):
        if await predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached within 10 s")


async def test_loop_purges_and_survives_failures(engine, key1, tmp_path, caplog):
    await _fixture_data(engine, key1)
    broken = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'no-schema.db'}")  # no tables
    caplog.set_level(logging.ERROR, logger="mpchat.retention")
    loops = [asyncio.create_task(run_retention(engine, days=30, interval=0.01)),
             asyncio.create_task(run_retention(broken, days=30, interval=0.01))]
    try:
        async def purged() -> bool:
            return await _count(engine, conversations) == 2

        async def failed_twice() -> bool:
            return caplog.text.count("retention pass failed") >= 2

        await _until(purged)
        await _until(failed_twice)  # it logged, slept and tried again
        assert not any(task.done() for task in loops)
    finally:
        for task in loops:
            task.cancel()
        await asyncio.gather(*loops, return_exceptions=True)
        await broken.dispose()
    assert all(task.cancelled() for task in loops)


async def test_audit_records_have_a_retention_of_their_own(engine, key1):
    from mpchat.storage.audit import AuditEvent, write_events
    from mpchat.storage.tables import audit_events

    old, fresh = await _fixture_data(engine, key1)
    await write_events(engine, events=[
        AuditEvent(check="local", stage="input", verdict="hit", user_hash="h",
                   created_at=datetime.now(UTC) - timedelta(days=181)),
        AuditEvent(check="local", stage="input", verdict="hit", user_hash="h",
                   created_at=datetime.now(UTC) - timedelta(days=179)),
    ])
    # Conversations kept forever (no MPCHAT_RETENTION_DAYS); audit rows after 180 days.
    assert await retention_pass(engine, days=None, interval=60, audit_days=180) == 0
    assert await _count(engine, audit_events) == 1
    assert await _count(engine, conversations) == len(old) + len(fresh)
