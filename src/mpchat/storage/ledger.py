"""Balances, reservations and the ledger: the statements behind `mpchat.quota`.

Every change is one synchronous function run in one transaction (`run_transaction`) that
first locks the user's account row: ``SELECT ... FOR UPDATE`` on PostgreSQL, the write lock
``BEGIN IMMEDIATE`` took on SQLite. Changes of one user's balance therefore happen one at a
time on any number of instances, so "read, decide, write" is exact. The UPDATE that takes
credits also carries its condition (``credits >= :n``) and the table a CHECK, so not even a
mistake here can take a balance below zero.

Every change writes one ledger row under a unique key, checked under the same lock: a key
seen before changes nothing (idempotency). ``sum(amount)`` of a user's rows is their
``credits`` at every commit.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace

from sqlalchemy import Connection, RowMapping, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from mpchat.storage.tables import quota_accounts, quota_ledger, quota_reservations

__all__ = [
    "Account",
    "Entry",
    "Settled",
    "Shortfall",
    "StoredReservation",
    "get_account",
    "get_reservation",
    "grant",
    "list_entries",
    "lock_account",
    "open_reservations",
    "reserve",
    "settle",
]


class Shortfall(Exception):
    """Not enough left: the change would take a balance below zero (nothing was written)."""

    def __init__(self, available: int) -> None:
        self.available = available
        super().__init__(f"only {available} units available")


@dataclass(frozen=True, slots=True)
class Account:
    user_id: str
    credits: int
    free_used: int
    period_start: dt.datetime


@dataclass(frozen=True, slots=True)
class StoredReservation:
    key: str
    user_id: str
    model: str
    prompt_tokens: int
    max_completion_tokens: int
    free_units: int
    credit_units: int
    period_start: dt.datetime
    status: str
    cost: int | None
    created_at: dt.datetime


@dataclass(frozen=True, slots=True)
class Entry:
    seq: int
    key: str
    user_id: str
    kind: str
    amount: int
    free_amount: int
    balance_after: int
    reason: str | None
    order_id: str | None
    message_id: str | None
    created_at: dt.datetime


# -- in a transaction ----------------------------------------------------------------------


def lock_account(conn: Connection, *, user_id: str, period_start: dt.datetime,
                 now: dt.datetime) -> Account:
    """The account, created if new, locked to this transaction, in the current period.

    A period only moves forward: an instance whose clock is behind never undoes a reset.
    """
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    conn.execute(
        dialect.insert(quota_accounts)
        .values(user_id=user_id, credits=0, free_used=0, period_start=period_start,
                updated_at=now)
        .on_conflict_do_nothing(index_elements=["user_id"])
    )
    row = conn.execute(
        select(quota_accounts).where(quota_accounts.c.user_id == user_id).with_for_update()
    ).mappings().one()
    account = _account(row)
    if account.period_start < period_start:
        conn.execute(
            update(quota_accounts).where(quota_accounts.c.user_id == user_id)
            .values(free_used=0, period_start=period_start, updated_at=now)
        )
        account = Account(user_id, account.credits, 0, period_start)
    return account


def reserve(conn: Connection, *, user_id: str, key: str, model: str, prompt_tokens: int,
            max_completion_tokens: int, cost: int, free_allowance: int,
            period_start: dt.datetime, now: dt.datetime) -> StoredReservation:
    """Take ``cost`` units, free allowance first; the reservation already under ``key`` if any.

    `Shortfall` when the free units left and the credits together are less than ``cost``.
    """
    account = lock_account(conn, user_id=user_id, period_start=period_start, now=now)
    existing = _reservation(conn, key)
    if existing is not None:
        return existing
    free_left = max(0, free_allowance - account.free_used)
    free_take = min(cost, free_left)
    credit_take = cost - free_take
    if credit_take > account.credits:
        raise Shortfall(free_left + account.credits)
    credits = _change(conn, account, credits=-credit_take, free_used=free_take, now=now)
    stored = StoredReservation(
        key=key, user_id=user_id, model=model, prompt_tokens=prompt_tokens,
        max_completion_tokens=max_completion_tokens, free_units=free_take,
        credit_units=credit_take, period_start=account.period_start, status="open", cost=None,
        created_at=now,
    )
    conn.execute(insert(quota_reservations).values(
        key=key, user_id=user_id, model=model, prompt_tokens=prompt_tokens,
        max_completion_tokens=max_completion_tokens, free_units=free_take,
        credit_units=credit_take, period_start=account.period_start, status="open",
        created_at=now,
    ))
    _write(conn, key=f"reserve:{key}", user_id=user_id, kind="reserve", amount=-credit_take,
           free_amount=-free_take, balance_after=credits, reason=model, message_id=key, now=now)
    return stored


@dataclass(frozen=True, slots=True)
class Settled:
    reservation: StoredReservation
    account: Account
    now: bool  # settled by this call (False: it was already)
    uncollected: int  # units of the cost beyond the reservation that nothing was left to pay


def settle(conn: Connection, *, key: str, cost: int, kind: str, reason: str | None,
           free_allowance: int, period_start: dt.datetime, now: dt.datetime) -> Settled | None:
    """Charge ``cost`` against the reservation ``key`` and give back the rest; exactly once.

    The charge takes the reserved free units first, then the reserved credits. Free units
    reserved in a period that has ended are not given back (that period's allowance is
    gone anyway). A cost above the reservation (a prompt larger than its estimate) takes
    what is left, free units first, and never more: the rest is ``uncollected``.
    None: no reservation has this key.
    """
    first = _reservation(conn, key)
    if first is None:
        return None
    account = lock_account(conn, user_id=first.user_id, period_start=period_start, now=now)
    res = _reservation(conn, key)  # again, now that every change of this user waits for us
    assert res is not None  # reservations are never deleted
    if res.status != "open":
        return Settled(res, account, now=False, uncollected=0)
    free_charge = min(cost, res.free_units)
    credit_charge = min(cost - free_charge, res.credit_units)
    extra = cost - free_charge - credit_charge
    free_back = res.free_units - free_charge if res.period_start == account.period_start else 0
    credit_back = res.credit_units - credit_charge
    free_used = account.free_used - free_back
    extra_free = min(extra, max(0, free_allowance - free_used))
    extra_credit = min(extra - extra_free, account.credits + credit_back)
    uncollected = extra - extra_free - extra_credit
    credits = _change(conn, account, credits=credit_back - extra_credit,
                      free_used=extra_free - free_back, now=now)
    charged = cost - uncollected
    conn.execute(
        update(quota_reservations).where(quota_reservations.c.key == key)
        .values(status="settled", cost=charged, settled_at=now)
    )
    _write(conn, key=f"settle:{key}", user_id=res.user_id, kind=kind,
           amount=credit_back - extra_credit, free_amount=free_back - extra_free,
           balance_after=credits, reason=reason, message_id=key, now=now)
    after = Account(account.user_id, credits, free_used + extra_free, account.period_start)
    done = replace(res, status="settled", cost=charged)
    return Settled(done, after, now=True, uncollected=uncollected)


def grant(conn: Connection, *, user_id: str, amount: int, kind: str, key: str,
          reason: str | None, order_id: str | None, period_start: dt.datetime,
          now: dt.datetime) -> tuple[bool, Account]:
    """Add ``amount`` credits (negative: take them) once per ``key``; (applied, the account).

    `Shortfall` when a negative amount would take the balance below zero.
    """
    account = lock_account(conn, user_id=user_id, period_start=period_start, now=now)
    seen = conn.execute(select(quota_ledger.c.seq).where(quota_ledger.c.key == key)).first()
    if seen is not None:
        return False, account
    if account.credits + amount < 0:
        raise Shortfall(account.credits)
    credits = _change(conn, account, credits=amount, free_used=0, now=now)
    _write(conn, key=key, user_id=user_id, kind=kind, amount=amount, free_amount=0,
           balance_after=credits, reason=reason, order_id=order_id, now=now)
    return True, Account(user_id, credits, account.free_used, account.period_start)


def _change(conn: Connection, account: Account, *, credits: int, free_used: int,
            now: dt.datetime) -> int:
    """Apply the deltas under the conditions that keep both balances at zero or above."""
    c = quota_accounts.c
    result = conn.execute(
        update(quota_accounts)
        .where(c.user_id == account.user_id, c.credits + credits >= 0,
               c.free_used + free_used >= 0)
        .values(credits=c.credits + credits, free_used=c.free_used + free_used, updated_at=now)
    )
    if result.rowcount != 1:  # unreachable while the lock holds; refuse rather than go below
        raise Shortfall(account.credits)
    return account.credits + credits


def _write(conn: Connection, *, key: str, user_id: str, kind: str, amount: int,
           free_amount: int, balance_after: int, reason: str | None, now: dt.datetime,
           order_id: str | None = None, message_id: str | None = None) -> None:
    conn.execute(insert(quota_ledger).values(
        key=key, user_id=user_id, kind=kind, amount=amount, free_amount=free_amount,
        balance_after=balance_after, reason=reason[:200] if reason else None,
        order_id=order_id, message_id=message_id, created_at=now,
    ))


def _reservation(conn: Connection, key: str) -> StoredReservation | None:
    row = conn.execute(
        select(quota_reservations).where(quota_reservations.c.key == key)
    ).mappings().first()
    return None if row is None else _stored(row)


# -- reads -----------------------------------------------------------------------------------


async def get_account(engine: AsyncEngine, *, user_id: str) -> Account | None:
    query = select(quota_accounts).where(quota_accounts.c.user_id == user_id)
    async with engine.connect() as conn:
        row = (await conn.execute(query)).mappings().first()
    return None if row is None else _account(row)


async def get_reservation(engine: AsyncEngine, *, key: str) -> StoredReservation | None:
    query = select(quota_reservations).where(quota_reservations.c.key == key)
    async with engine.connect() as conn:
        row = (await conn.execute(query)).mappings().first()
    return None if row is None else _stored(row)


async def list_entries(engine: AsyncEngine, *, user_id: str, limit: int,
                       before: int | None = None) -> list[Entry]:
    """Newest first; ``before`` a seq (the cursor of the previous page)."""
    query = select(quota_ledger).where(quota_ledger.c.user_id == user_id)
    if before is not None:
        query = query.where(quota_ledger.c.seq < before)
    query = query.order_by(quota_ledger.c.seq.desc()).limit(limit)
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).mappings().all()
    return [Entry(**{k: row[k] for k in Entry.__slots__}) for row in rows]


async def open_reservations(engine: AsyncEngine, *, created_before: dt.datetime,
                            limit: int) -> list[StoredReservation]:
    """Reservations never settled, oldest first."""
    r = quota_reservations.c
    query = (select(quota_reservations)
             .where(r.status == "open", r.created_at < created_before)
             .order_by(r.created_at).limit(limit))
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).mappings().all()
    return [_stored(row) for row in rows]


def _account(row: RowMapping) -> Account:
    return Account(row["user_id"], int(row["credits"]), int(row["free_used"]),
                   row["period_start"])


def _stored(row: RowMapping) -> StoredReservation:
    return StoredReservation(**{k: row[k] for k in StoredReservation.__slots__})

