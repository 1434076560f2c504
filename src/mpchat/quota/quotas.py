"""Per-user quotas: a free allowance per period, then credits; reserve, then settle.

An answer reserves its maximum cost (the prompt estimate plus the most it may write, at its
model's price) before the provider is called, and settles at its real cost when it ends,
however it ends; the rest of the reservation goes back. Free units are used before credits.
Balances live in the database (`mpchat.storage.ledger`: one locked transaction per change,
a ledger row per change); nothing here is kept in memory between calls, so any number of
instances share them exactly.

Database failures surface as `ServiceUnavailable`; a user without enough left as
`QuotaExceeded` (with ``retry_after`` when the next reset of the free allowance would let
the answer through).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import TypeVar

from sqlalchemy import Connection
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from mpchat.errors import InvalidRequest, NotFound, QuotaExceeded, ServiceUnavailable
from mpchat.quota.config import QuotaConfig
from mpchat.quota.period import PeriodClock
from mpchat.quota.pricing import Prices
from mpchat.quota.types import DailyTotal, LedgerRow, QuotaView, Reservation
from mpchat.storage import ledger as store
from mpchat.storage.quota_reports import totals_between
from mpchat.storage.tables import utc_now
from mpchat.storage.transactions import Transactions

__all__ = ["Quotas"]

log = logging.getLogger("mpchat.quota")

T = TypeVar("T")
_MAX_GRANT = 10**12
_KEY_CHARS = 64
_STALE_BATCH = 200
_MAX_DAYS = 366


class Quotas:
    """The quotas of one deployment; made once by the lifespan (`Quotas.disabled()` when off)."""

    def __init__(
        self,
        transactions: Transactions | None,
        config: QuotaConfig | None,
        *,
        aliases: Mapping[str, str] | None = None,
        utcnow: Callable[[], dt.datetime] = utc_now,
    ) -> None:
        self.enabled = transactions is not None and config is not None
        self._transactions = transactions
        self._engine: AsyncEngine | None = transactions.engine if transactions else None
        self._config = config or QuotaConfig()
        self._prices = Prices(self._config, aliases=aliases)
        self._clock = PeriodClock(self._config.period, self._config.reset_time,
                                  self._config.zone)
        self._utcnow = utcnow

    @classmethod
    def disabled(cls) -> Quotas:
        return cls(None, None)

    @property
    def config(self) -> QuotaConfig:
        return self._config

    @property
    def prices(self) -> Prices:
        return self._prices

    # -- answers -------------------------------------------------------------------------

    async def reserve(self, *, user_id: str, model: str, prompt_tokens: int,
                      max_completion_tokens: int, key: str) -> Reservation | None:
        """Hold the answer's maximum cost, or raise `QuotaExceeded`; None when quotas are off.

        Idempotent by ``key`` (the answer's message id): reserving again returns the first
        reservation unchanged.
        """
        if not self.enabled:
            return None
        _check_key(key)
        prompt_tokens, max_completion_tokens = max(prompt_tokens, 0), max(max_completion_tokens, 0)
        cost = self._prices.cost(model, prompt_tokens=prompt_tokens,
                                 completion_tokens=max_completion_tokens)
        now = self._utcnow()
        try:
            stored = await self._tx(
                store.reserve, user_id=user_id, key=key, model=model[:128],
                prompt_tokens=prompt_tokens, max_completion_tokens=max_completion_tokens,
                cost=cost, free_allowance=self._config.free_units,
                period_start=self._clock.start(now), now=now,
            )
        except store.Shortfall:
            retry = self._clock.seconds_left(now) if cost <= self._config.free_units else None
            raise QuotaExceeded(retry_after=retry) from None
        return _reservation(stored)

    async def settle(self, reservation: Reservation, *, prompt_tokens: int,
                     completion_tokens: int, produced: bool) -> QuotaView:
        """Charge the real cost (nothing if nothing was produced); the rest goes back.

        Exactly once per reservation: settling again changes nothing and returns the balance.
        """
        cost = self._cost(reservation.model, prompt_tokens, completion_tokens, produced)
        await self._settle(reservation.key, cost, kind="settle", reason=reservation.model)
        return await self.view(reservation.user_id)

    async def settle_stale(self, key: str, *, completion_tokens: int, produced: bool = True,
                           prompt_tokens: int | None = None) -> QuotaView | None:
        """Settle the reservation of an answer whose instance stopped (the stuck-answer sweep).

        The sweeper knows the text stored; it passes its token estimate. The prompt is the
        estimate reserved for, unless given. None: no reservation has this key (or quotas
        are off).
        """
        if not self.enabled:
            return None
        res = await self._read(store.get_reservation, key=key)
        if res is None:
            return None
        prompt = res.prompt_tokens if prompt_tokens is None else prompt_tokens
        cost = self._cost(res.model, prompt, completion_tokens, produced)
        await self._settle(key, cost, kind="settle", reason=f"{res.model} (recovered)")
        return await self.view(res.user_id)

    async def release_stale(self, *, older_than: dt.datetime) -> int:
        """Give back, at no cost, reservations still open that were made before ``older_than``.

        The backstop for reservations whose answer left nothing to settle by (an instance
        that died between reserving and storing the answer). Choose ``older_than`` well
        past the longest an answer may take, so no live answer loses its reservation.
        """
        if not self.enabled:
            return 0
        released = 0
        while True:
            batch = await self._read(store.open_reservations, created_before=older_than,
                                     limit=_STALE_BATCH)
            for res in batch:
                if await self._settle(res.key, 0, kind="release", reason="released"):
                    released += 1
                    log.warning("released the stale reservation %s (%d units)",
                                res.key, res.free_units + res.credit_units)
            if len(batch) < _STALE_BATCH:
                return released

    # -- balances --------------------------------------------------------------------------

    async def view(self, user_id: str) -> QuotaView:
        if not self.enabled:
            return QuotaView(enabled=False)
        now = self._utcnow()
        account = await self._read(store.get_account, user_id=user_id)
        used = 0
        credits = 0
        if account is not None:
            credits = account.credits
            used = account.free_used if account.period_start >= self._clock.start(now) else 0
        return QuotaView(
            enabled=True, free_remaining=max(0, self._config.free_units - used),
            credits=credits, reset_s=self._clock.seconds_left(now),
            free_units=self._config.free_units,
        )

    async def grant(self, user_id: str, amount: int, *, reason: str, key: str) -> bool:
        """Add credits (negative: take them back) once per ``key``; False: ``key`` was seen.

        Refused with `InvalidRequest` when it would take the balance below zero: a refund
        larger than what is left is a decision for the operator, not something to clamp.
        """
        if not self.enabled:
            raise NotFound("未启用额度（MPCHAT_CONFIG 中没有 [quota]）")
        if amount == 0 or abs(amount) > _MAX_GRANT:
            raise InvalidRequest(f"amount 须为非零整数，绝对值不超过 {_MAX_GRANT}")
        _check_key(key)
        now = self._utcnow()
        try:
            applied, _ = await self._tx(
                store.grant, user_id=user_id, amount=amount, kind="grant", key=f"grant:{key}",
                reason=reason, order_id=None, period_start=self._clock.start(now), now=now,
            )
        except store.Shortfall as short:
            raise InvalidRequest(
                f"余额不足：当前 {short.available} 点，不能扣减 {-amount} 点"
            ) from None
        log.info("credits %+d for user %s (%s): %s", amount, user_id,
                 "applied" if applied else "already applied", key)
        return bool(applied)

    def credit_in(self, conn: Connection, *, user_id: str, amount: int, key: str,
                  order_id: str, reason: str) -> bool:
        """A purchase's credits inside the caller's transaction (paid orders); once per ``key``."""
        now = self._utcnow()
        applied, _ = store.grant(
            conn, user_id=user_id, amount=amount, kind="purchase", key=key, reason=reason,
            order_id=order_id, period_start=self._clock.start(now), now=now,
        )
        return applied

    async def ledger(self, user_id: str, *, limit: int = 50,
                     before: int | None = None) -> list[LedgerRow]:
        """The user's ledger, newest first."""
        if self._engine is None:
            return []
        rows = await self._read(store.list_entries, user_id=user_id, limit=limit, before=before)
        return [LedgerRow(seq=r.seq, kind=r.kind, amount=r.amount, free_amount=r.free_amount,
                          balance_after=r.balance_after, reason=r.reason, order_id=r.order_id,
                          message_id=r.message_id, created_at=r.created_at) for r in rows]

    async def totals_per_day(self, days: int = 7) -> list[DailyTotal]:
        """The last ``days`` local days (the quota's timezone), newest first, today included."""
        if self._engine is None:
            return []
        days = min(max(days, 1), _MAX_DAYS)
        zone = self._config.zone
        today = self._utcnow().astimezone(zone).date()
        dates = [today - dt.timedelta(days=n) for n in range(days)]
        spans = [(_midnight(d, zone), _midnight(d + dt.timedelta(days=1), zone)) for d in dates]
        totals = await self._read(totals_between, spans)
        return [DailyTotal(date=d, **{k: getattr(t, k) for k in t.__slots__})
                for d, t in zip(dates, totals, strict=True)]

    # -- plumbing ------------------------------------------------------------------------

    def _cost(self, model: str, prompt: int, completion: int, produced: bool) -> int:
        if not produced:
            return 0
        return self._prices.cost(model, prompt_tokens=prompt, completion_tokens=completion)

    async def _settle(self, key: str, cost: int, *, kind: str, reason: str) -> bool:
        now = self._utcnow()
        done = await self._tx(
            store.settle, key=key, cost=cost, kind=kind, reason=reason,
            free_allowance=self._config.free_units, period_start=self._clock.start(now), now=now,
        )
        if done is None:
            log.warning("no reservation %s to settle", key)
            return False
        if done.uncollected:
            log.warning("answer %s cost %d units more than its user had left; not charged",
                        key, done.uncollected)
        return bool(done.now)

    async def _tx(self, fn: Callable[..., T], **kwargs: object) -> T:
        assert self._transactions is not None
        try:
            return await self._transactions.run(fn, **kwargs)
        except (SQLAlchemyError, OSError) as exc:
            log.warning("quota storage failed: %s", type(exc).__name__)
            raise ServiceUnavailable(retry_after=1) from None

    async def _read(self, fn: Callable[..., Awaitable[T]], *args: object,
                    **kwargs: object) -> T:
        assert self._engine is not None
        try:
            return await fn(self._engine, *args, **kwargs)
        except (SQLAlchemyError, OSError) as exc:
            log.warning("quota storage failed: %s", type(exc).__name__)
            raise ServiceUnavailable(retry_after=1) from None


def _reservation(stored: store.StoredReservation) -> Reservation:
    return Reservation(
        key=stored.key, user_id=stored.user_id, model=stored.model,
        units=stored.free_units + stored.credit_units, free_units=stored.free_units,
        credit_units=stored.credit_units, prompt_tokens=stored.prompt_tokens,
        max_completion_tokens=stored.max_completion_tokens,
    )


def _check_key(key: str) -> None:
    if not key or len(key) > _KEY_CHARS:
        raise InvalidRequest(f"key 须为 1 到 {_KEY_CHARS} 个字符")


def _midnight(day: dt.date, zone: dt.tzinfo) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(0), tzinfo=zone).astimezone(dt.UTC)
