"""The transaction runner: one transaction per call, a lifetime of its own, a close that
never blocks the event loop."""

from __future__ import annotations

import asyncio
import threading

import pytest
from sqlalchemy import Connection, text

from mpchat.storage.engine import create_engine
from mpchat.storage.transactions import Transactions


def _insert(conn: Connection, value: str) -> str:
    conn.execute(text("INSERT INTO tx_probe (v) VALUES (:v)"), {"v": value})
    return threading.current_thread().name


def _insert_then_fail(conn: Connection, value: str) -> None:
    _insert(conn, value)
    raise ValueError("rolled back")


async def _values(tx: Transactions) -> list[str]:
    async with tx.engine.connect() as conn:
        return [r[0] for r in await conn.execute(text("SELECT v FROM tx_probe ORDER BY v"))]


@pytest.fixture
async def probe(engine) -> None:
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE tx_probe (v VARCHAR(20) PRIMARY KEY)"))


async def test_a_call_commits_or_rolls_back_as_a_whole(tx, probe, database_url):
    thread = await tx.run(_insert, "kept")
    with pytest.raises(ValueError, match="rolled back"):
        await tx.run(_insert_then_fail, "gone")
    assert await _values(tx) == ["kept"]
    # SQLite: on the runner's own thread; PostgreSQL: through the event loop's driver.
    assert thread.startswith("mpchat-sqlite") == database_url.startswith("sqlite")


async def test_close_waits_for_handed_over_work_without_blocking_the_loop(tmp_path):
    """SQLite: the close queues behind a transaction under way on the runner's thread."""
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'tx.db'}")
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE tx_probe (v VARCHAR(20) PRIMARY KEY)"))
    tx = Transactions(engine)
    started, release = threading.Event(), threading.Event()

    def held(conn: Connection) -> None:
        _insert(conn, "held")
        started.set()
        release.wait(timeout=10)

    try:
        running = asyncio.create_task(tx.run(held))
        assert await asyncio.to_thread(started.wait, 10)  # under way on the runner's thread
        closing = asyncio.create_task(tx.aclose())
        loop_ran = asyncio.Event()
        asyncio.get_running_loop().call_soon(loop_ran.set)  # after the close's first step
        await loop_ran.wait()  # the loop is free while the close waits for the transaction
        assert not closing.done()
        release.set()
        await running
        await closing
        assert await _values(tx) == ["held"]
        await tx.aclose()  # idempotent
        with pytest.raises(RuntimeError, match="after aclose"):
            await tx.run(_insert, "late")
    finally:
        release.set()
        await engine.dispose()
