"""Alembic migrations, run by `mpchat migrate` (and on start in development)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["upgrade"]

_HERE = Path(__file__).parent


def _config(connection: Connection) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_HERE))
    cfg.attributes["connection"] = connection
    return cfg


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    """Bring the schema to ``revision`` over an existing engine."""
    async with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # Instances starting together migrate one at a time; the others then find
            # the schema at head. Released when this transaction ends.
            await conn.execute(text("SELECT pg_advisory_xact_lock(7310041)"))
        await conn.run_sync(lambda sync: command.upgrade(_config(sync), revision))
