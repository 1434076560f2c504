"""The database engine: one per process, made in the app's lifespan."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

__all__ = ["STORAGE_ERRORS", "create_engine", "immediate_transactions", "is_outage", "is_sqlite",
           "private_file", "sqlite_pragmas"]

# SQLSTATE classes 08 (connection exception), 28 (authorization), 53 (insufficient
# resources), 57P (operator intervention: admin/crash shutdown, cannot connect now), and a
# database or table that is not there yet (3D000, 42P01: not created, not migrated).
_OUTAGE_SQLSTATES = ("08", "28", "53", "57P", "3D000", "42P01")


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


# What a storage call may raise besides its own errors: OSError is a refused, reset or
# timed out connection, or a name that does not resolve.
STORAGE_ERRORS: tuple[type[Exception], ...] = (SQLAlchemyError, OSError)


def is_outage(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) says the database is unreachable or going away.

    Such failures are the service's dependency being down (503 ``service_unavailable``,
    retry later), not a bug (500): refused or reset connections, a pool that timed out,
    a server shutting down or starting up, SQLite's locked or unopenable file.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, DBAPIError) and current.connection_invalidated:
            return True
        if isinstance(current, OperationalError | InterfaceError | PoolTimeout
                      | ConnectionError | TimeoutError):
            return True
        if isinstance(current, socket.gaierror):
            return True  # the database's host name does not resolve (DNS down)
        sqlstate = getattr(current, "sqlstate", None)
        if isinstance(sqlstate, str) and sqlstate.startswith(_OUTAGE_SQLSTATES):
            return True
        current = current.__cause__ or current.__context__
    return False


def create_engine(url: str, *, echo: bool = False) -> AsyncEngine:
    """An async engine tuned for its backend.

    SQLite gets one connection: it has a single writer anyway, and one connection
    serialises writes in-process instead of failing with "database is locked".
    Transactions are short (never held across a provider call), so the queue is brief.
    """
    kwargs: dict[str, Any] = {"echo": echo}
    if is_sqlite(url):
        database = make_url(url).database
        if database and database != ":memory:" and not database.startswith("file:"):
            private_file(Path(database))
        kwargs.update(pool_size=1, max_overflow=0, pool_timeout=60)
    else:
        kwargs.update(pool_size=10, max_overflow=20, pool_pre_ping=True, pool_recycle=1800)
    engine = create_async_engine(url, **kwargs)
    if is_sqlite(url):
        event.listen(engine.sync_engine, "connect", sqlite_pragmas)
        immediate_transactions(engine.sync_engine)
    return engine


def private_file(path: Path) -> None:
    """Create the SQLite file (and its directory) for its owner only: 0600 in 0700.

    SQLite gives its -wal and -shm files the database file's mode, so they follow. An
    existing file or directory is left as it is (the operator may have chosen otherwise).
    """
    if not path.parent.exists():
        path.parent.mkdir(parents=True, mode=0o700, exist_ok=True)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass


def immediate_transactions(engine: Engine) -> None:
    """Start SQLite transactions with BEGIN IMMEDIATE (SQLAlchemy's documented recipe).

    A deferred transaction that reads and then writes fails at once ("database is
    locked") when another connection wrote in between; an immediate one waits for the
    lock instead, bounded by busy_timeout.
    """

    @event.listens_for(engine, "connect")
    def _no_driver_transactions(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin_immediate(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    # WAL lets readers (e.g. `mpchat rotate-keys` in another process) run beside the writer.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.close()
