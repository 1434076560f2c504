"""Users and their login sessions (a session row makes a token revocable)."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from mpchat.storage.tables import sessions, users, utc_now

__all__ = [
    "SessionState",
    "create_session",
    "delete_session",
    "delete_user_sessions",
    "get_or_create_user",
    "openid_of",
    "purge_expired_sessions",
    "search_users",
    "session_is_live",
    "session_state",
    "set_blocked",
    "user_for_openid",
]

SessionState = Literal["live", "gone", "blocked"]



async def get_or_create_user(engine: AsyncEngine, *, openid: str) -> str:
    """The user id for ``openid``, creating the user on first login (race-safe)."""
    query = select(users.c.id).where(users.c.openid == openid)
    async with engine.connect() as conn:
        found = (await conn.execute(query)).scalar_one_or_none()
    if found is not None:
        return str(found)
    user_id = uuid.uuid4().hex
    try:
        async with engine.begin() as conn:
            await conn.execute(
                insert(users).values(id=user_id, openid=openid, created_at=utc_now())
            )
        return user_id
    except IntegrityError:  # another request created it in between
        async with engine.connect() as conn:
            return str((await conn.execute(query)).scalar_one())


async def create_session(engine: AsyncEngine, *, user_id: str, ttl: int) -> tuple[str, datetime]:
    session_id = uuid.uuid4().hex
    now = utc_now()
    expires_at = now + timedelta(seconds=ttl)
    async with engine.begin() as conn:
        await conn.execute(
            insert(sessions).values(
                id=session_id, user_id=user_id, created_at=now, expires_at=expires_at
            )
        )
    return session_id, expires_at


async def session_is_live(engine: AsyncEngine, *, session_id: str, user_id: str) -> bool:
    query = select(sessions.c.expires_at).where(
        sessions.c.id == session_id, sessions.c.user_id == user_id
    )
    async with engine.connect() as conn:
        expires_at = (await conn.execute(query)).scalar_one_or_none()
    if expires_at is None:
        return False
    return bool(expires_at > utc_now())


async def session_state(engine: AsyncEngine, *, session_id: str,
                        user_id: str) -> SessionState:
    """``live``; ``gone`` (logged out, expired, revoked); ``blocked`` (its user is)."""
    query = (select(sessions.c.expires_at, users.c.blocked_at)
             .join(users, users.c.id == sessions.c.user_id)
             .where(sessions.c.id == session_id, sessions.c.user_id == user_id))
    async with engine.connect() as conn:
        row = (await conn.execute(query)).one_or_none()
    if row is None or not row.expires_at > utc_now():
        return "gone"
    return "blocked" if row.blocked_at is not None else "live"


async def user_for_openid(engine: AsyncEngine, *, openid: str) -> tuple[str, bool]:
    """The user id for ``openid`` (created on first sight) and whether it is blocked."""
    query = select(users.c.id, users.c.blocked_at).where(users.c.openid == openid)
    async with engine.connect() as conn:
        row = (await conn.execute(query)).one_or_none()
    if row is not None:
        return str(row.id), row.blocked_at is not None
    return await get_or_create_user(engine, openid=openid), False


async def set_blocked(engine: AsyncEngine, *, user_id: str, blocked: bool) -> bool:
    """Block or unblock a user (idempotent); False: no such user."""
    async with engine.begin() as conn:
        result = await conn.execute(
            update(users).where(users.c.id == user_id)
            .values(blocked_at=utc_now() if blocked else None))
    return bool(result.rowcount)


async def delete_session(engine: AsyncEngine, *, session_id: str) -> None:
    async with engine.begin() as conn:
        await conn.execute(delete(sessions).where(sessions.c.id == session_id))


async def delete_user_sessions(engine: AsyncEngine, *, user_id: str) -> None:
    async with engine.begin() as conn:
        await conn.execute(delete(sessions).where(sessions.c.user_id == user_id))


async def openid_of(engine: AsyncEngine, *, user_id: str) -> str | None:
    """The user's openid (what WeChat Pay's JSAPI orders are for); None: no such user."""
    async with engine.connect() as conn:
        found = await conn.execute(select(users.c.openid).where(users.c.id == user_id))
        openid = found.scalar_one_or_none()
    return None if openid is None else str(openid)


async def purge_expired_sessions(
    engine: AsyncEngine, *, now: datetime | None = None, batch: int = 1000
) -> int:
    """Delete session rows past their expiry, a batch per transaction; how many went.

    An expired token is refused anyway (`session_is_live`); this only stops the table
    from growing by a row per login forever.
    """
    cutoff = now or utc_now()
    deleted = 0
    while True:
        async with engine.begin() as conn:
            ids = list((await conn.execute(
                select(sessions.c.id).where(sessions.c.expires_at < cutoff).limit(batch)
            )).scalars())
            if not ids:
                return deleted
            await conn.execute(delete(sessions).where(sessions.c.id.in_(ids)))
        deleted += len(ids)


async def search_users(engine: AsyncEngine, *, prefix: str, blocked: bool | None,
                       limit: int) -> list[dict[str, Any]]:
    """Users whose id starts with ``prefix`` (newest first), with their live sessions."""
    live = (select(func.count()).select_from(sessions)
            .where(sessions.c.user_id == users.c.id, sessions.c.expires_at > utc_now())
            .scalar_subquery())
    query = select(users.c.id, users.c.created_at, users.c.blocked_at,
                   live.label("sessions"))
    if prefix:
        query = query.where(users.c.id.startswith(prefix, autoescape=True))
    if blocked is not None:
        query = query.where(users.c.blocked_at.is_not(None) if blocked
                            else users.c.blocked_at.is_(None))
    query = query.order_by(users.c.created_at.desc(), users.c.id).limit(limit)
    async with engine.connect() as conn:
        return [dict(row._mapping) for row in await conn.execute(query)]
