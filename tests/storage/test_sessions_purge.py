"""Expired login sessions are deleted by the retention pass; live ones stay."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select

from mpchat.storage import users
from mpchat.storage.retention import retention_pass
from mpchat.storage.tables import sessions, utc_now


async def _count(engine) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(sessions))).scalar_one())


async def test_expired_sessions_are_purged(engine):
    user = await users.get_or_create_user(engine, openid="o1")
    live, _ = await users.create_session(engine, user_id=user, ttl=3600)
    for _ in range(5):
        await users.create_session(engine, user_id=user, ttl=60)
    assert await _count(engine) == 6
    later = utc_now() + timedelta(seconds=120)
    assert await users.purge_expired_sessions(engine, now=later, batch=2) == 5
    assert await _count(engine) == 1
    assert await users.session_is_live(engine, session_id=live, user_id=user)


async def test_the_retention_pass_purges_them_without_retention_days(engine):
    user = await users.get_or_create_user(engine, openid="o2")
    await users.create_session(engine, user_id=user, ttl=60)
    later = utc_now() + timedelta(seconds=120)
    assert await retention_pass(engine, days=None, interval=60, now=later) == 0
    assert await _count(engine) == 0
