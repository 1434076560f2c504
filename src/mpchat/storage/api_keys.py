"""API keys: rows of ``api_keys``, looked up by the SHA-256 of the presented secret.

Every function returns the public columns only (``_PUBLIC``): the hash goes in, never out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from sqlalchemy import RowMapping, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from mpchat.storage.tables import api_keys

__all__ = [
    "KeyRow",
    "add_usage",
    "find_by_hash",
    "get_key",
    "insert_key",
    "list_keys",
    "replace_secret",
    "revoke_key",
]

KeyRow = RowMapping

_PUBLIC = [c for c in api_keys.c if c.name != "secret_hash"]
_SELECT = select(*_PUBLIC)


async def insert_key(
    engine: AsyncEngine,
    *,
    key_id: str,
    name: str,
    prefix: str,
    secret_hash: str,
    models: Sequence[str] | None,
    rpm: int | None,
    tpm: int | None,
    quota: int | None,
    expires_at: datetime | None,
    created_at: datetime,
) -> KeyRow:
    values = {
        "id": key_id, "name": name, "prefix": prefix, "models": list(models) if models else None,
        "rpm": rpm, "tpm": tpm, "quota": quota, "used_tokens": 0, "expires_at": expires_at,
        "revoked_at": None, "created_at": created_at,
    }
    async with engine.begin() as conn:
        await conn.execute(insert(api_keys).values(secret_hash=secret_hash, **values))
        row = await _read(conn, key_id)
    assert row is not None  # inserted in this transaction
    return row


async def list_keys(engine: AsyncEngine, *, include_revoked: bool = False) -> list[KeyRow]:
    """Oldest first."""
    query = _SELECT.order_by(api_keys.c.created_at, api_keys.c.id)
    if not include_revoked:
        query = query.where(api_keys.c.revoked_at.is_(None))
    async with engine.connect() as conn:
        return [row._mapping for row in await conn.execute(query)]


async def get_key(engine: AsyncEngine, *, key_id: str) -> KeyRow | None:
    async with engine.connect() as conn:
        return await _read(conn, key_id)


async def find_by_hash(engine: AsyncEngine, *, secret_hash: str) -> KeyRow | None:
    query = _SELECT.where(api_keys.c.secret_hash == secret_hash)
    async with engine.connect() as conn:
        row = (await conn.execute(query)).first()
    return None if row is None else row._mapping


async def revoke_key(engine: AsyncEngine, *, key_id: str, at: datetime) -> KeyRow | None:
    """Revoked at ``at``, or at the first revocation's time when it already was; None: unknown."""
    statement = (
        update(api_keys)
        .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
        .values(revoked_at=at)
    )
    async with engine.begin() as conn:
        await conn.execute(statement)
        return await _read(conn, key_id)


async def replace_secret(
    engine: AsyncEngine, *, key_id: str, prefix: str, secret_hash: str
) -> KeyRow | None:
    """A new secret for a key that is not revoked (a revoked one is returned unchanged)."""
    statement = (
        update(api_keys)
        .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
        .values(prefix=prefix, secret_hash=secret_hash)
    )
    async with engine.begin() as conn:
        await conn.execute(statement)
        return await _read(conn, key_id)


async def add_usage(engine: AsyncEngine, totals: Mapping[str, int]) -> None:
    """Relative updates (so concurrent answers on any number of instances all count), one
    transaction for all the keys."""
    async with engine.begin() as conn:
        for key_id, tokens in sorted(totals.items()):  # one order: no deadlock between two
            await conn.execute(update(api_keys).where(api_keys.c.id == key_id)
                               .values(used_tokens=api_keys.c.used_tokens + tokens))


async def _read(conn: AsyncConnection, key_id: str) -> KeyRow | None:
    row = (await conn.execute(_SELECT.where(api_keys.c.id == key_id))).first()
    return None if row is None else row._mapping
