"""Run a synchronous function in one database transaction, cheaply.

The chat's hot path (storing a question with its context read, storing an answer) is a
handful of statements. Through aiosqlite every statement is a round trip to its thread
plus SQLAlchemy's async adaptation: about 3.3 ms of CPU per turn, measured. Here, for
SQLite, the whole transaction runs as one function on one dedicated thread with the
standard ``sqlite3`` driver (one hand-off per transaction, about 0.8 ms per turn). For
PostgreSQL the same function runs through ``AsyncConnection.run_sync``.

`Transactions` is a resource like the engine it stands beside: the composition root makes
one (``mpchat.services.open_services``) and closes it before the engine. Closing does not
block the event loop: the transactions already handed to the thread finish there, then its
connection is closed on that thread and the thread ends. SQLite transactions start with
``BEGIN IMMEDIATE``, so a transaction that reads and then writes waits for the write lock
(``busy_timeout``) instead of failing when another connection wrote in between.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, event
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy.ext.asyncio import AsyncEngine

from mpchat.storage.engine import immediate_transactions, is_sqlite, sqlite_pragmas

__all__ = ["Transactions"]

T = TypeVar("T")


class Transactions:
    """``await tx.run(fn, *args)``: ``fn(connection, *args)`` in one transaction.

    ``engine`` is the async engine the transactions are made for (the same database: on
    SQLite a second connection to the same file, with the same pragmas).
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._sync: Engine | None = None
        self._executor: ThreadPoolExecutor | None = None
        if is_sqlite(str(engine.url)):
            self._sync = create_sync_engine(engine.url.set(drivername="sqlite"),
                                            pool_size=1, max_overflow=0)
            event.listen(self._sync, "connect", sqlite_pragmas)
            immediate_transactions(self._sync)
            # One thread (started on first use): SQLite has one writer, and the sqlite3
            # connection stays on the thread that made it.
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="mpchat-sqlite")
        self._closed = False

    async def run(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """``fn(connection, *args, **kwargs)``, committed unless it raises."""
        if self._closed:
            raise RuntimeError("Transactions used after aclose()")
        if self._executor is None:  # PostgreSQL
            async with self.engine.begin() as conn:
                return await conn.run_sync(fn, *args, **kwargs)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._in_thread, fn, args, kwargs)

    def _in_thread(self, fn: Callable[..., T], args: tuple[Any, ...],
                   kwargs: dict[str, Any]) -> T:
        assert self._sync is not None
        conn: Connection
        with self._sync.begin() as conn:
            return fn(conn, *args, **kwargs)

    async def aclose(self) -> None:
        """After the transactions under way: the thread's connection closed, the thread gone.

        Idempotent. The event loop keeps running meanwhile (nothing here blocks it).
        """
        if self._closed:
            return
        self._closed = True
        if self._executor is None or self._sync is None:
            return
        try:
            # Queued behind the transactions already handed over; on the thread that
            # opened the connection.
            await asyncio.get_running_loop().run_in_executor(self._executor, self._sync.dispose)
        finally:
            self._executor.shutdown(wait=False)
