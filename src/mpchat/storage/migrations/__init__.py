"""Alembic migrations, run by `mpchat migrate` (and on start in development), and the
schema version this code needs (``/readyz``, ``mpchat doctor``).

Alembic is imported only to migrate: a production instance, which does not migrate on
start, never loads it (start-up time, docs/benchmarks.md).
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

if TYPE_CHECKING:
    from alembic.config import Config
    from sqlalchemy.engine import Connection

__all__ = ["SchemaState", "head_revision", "schema_state", "upgrade"]

_HERE = Path(__file__).parent
_REVISION = re.compile(r"^revision\s*=\s*['\"]([^'\"]+)['\"]", re.MULTILINE)
_DOWN = re.compile(r"^down_revision\s*=\s*(?:['\"]([^'\"]+)['\"]|None)", re.MULTILINE)


def _config(connection: Connection) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(_HERE))
    cfg.attributes["connection"] = connection
    return cfg


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    """Bring the schema to ``revision`` over an existing engine."""
    from alembic import command

    async with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # Instances starting together migrate one at a time; the others then find
            # the schema at head. Released when this transaction ends.
            await conn.execute(text("SELECT pg_advisory_xact_lock(7310041)"))
        await conn.run_sync(lambda sync: command.upgrade(_config(sync), revision))


@cache
def _revisions() -> tuple[str, frozenset[str]]:
    """(head, every revision), read from the version files' ``revision``/``down_revision``
    lines rather than through Alembic (tests check that both agree), so readiness does
    not load Alembic."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in (_HERE / "versions").glob("*.py"):
        source = path.read_text(encoding="utf-8")
        found = _REVISION.search(source)
        if found is None:
            continue
        revisions.add(found.group(1))
        down = _DOWN.search(source)
        if down is not None and down.group(1):
            parents.add(down.group(1))
    heads = revisions - parents
    if len(heads) != 1:
        raise RuntimeError(f"migrations must have one head, found {sorted(heads)}")
    return heads.pop(), frozenset(revisions)


def head_revision() -> str:
    """The revision this code needs."""
    return _revisions()[0]


SchemaState = Literal["current", "behind", "ahead", "missing"]


async def schema_state(engine: AsyncEngine) -> tuple[SchemaState, str | None]:
    """Where the database's schema stands against this code, and its revision.

    ``current``: at the head; ``ahead``: at a revision this code does not know, i.e. a
    newer release migrated it (rolling deploys: run `mpchat migrate`, then replace the
    instances, which keep serving meanwhile); ``behind``: at an older revision;
    ``missing``: never migrated. Raises what the driver raises when it cannot connect.
    """
    async with engine.connect() as conn:
        exists = await conn.run_sync(
            lambda sync: sync.dialect.has_table(sync, "alembic_version"))
        row = None
        if exists:
            row = (await conn.execute(text("SELECT version_num FROM alembic_version"))).first()
    if row is None:
        return "missing", None
    revision = str(row[0])
    head, known = _revisions()
    if revision == head:
        return "current", revision
    return ("behind" if revision in known else "ahead"), revision
