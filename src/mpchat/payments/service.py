"""Credit packs bought with WeChat Pay: orders, notifications, late payments, exactly once.

1. `create_order`: the plan, the caller's openid; the order is stored ``pending`` *before*
   WeChat Pay hears of it (so no notification can find it unknown), then the JSAPI order,
   then the signed ``wx.requestPayment`` parameters.
2. `notify`: verified and decrypted (`open_notification`), checked against the stored order
   (merchant, appid, amount, currency), then paid and credited.
3. `order`: the stored status; while ``pending``, WeChat Pay is asked (the notification may
   be late or lost), and a ``SUCCESS`` there takes the same path as a notification.

The order turns ``paid`` and its credits are granted (ledger key ``order:<id>``) in one
transaction that holds the order's row lock: however many notifications and queries arrive,
on however many instances, an order credits once.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy import Connection
from sqlalchemy.exc import SQLAlchemyError

from mpchat.errors import (
    InvalidNotification,
    NotFound,
    RateLimited,
    ServiceUnavailable,
    Unauthorized,
    UnverifiedNotification,
)
from mpchat.payments.client import WeChatPayClient
from mpchat.payments.notify import open_notification
from mpchat.payments.types import Transaction
from mpchat.quota import PlanConfig, Quotas
from mpchat.storage import orders as store
from mpchat.storage.tables import utc_now
from mpchat.storage.transactions import Transactions
from mpchat.storage.users import openid_of

__all__ = ["OrderView", "Payments"]

log = logging.getLogger("mpchat.payments")

T = TypeVar("T")

_ORDER_ID = re.compile(r"mp[0-9a-f]{24}")
_CLOSED_STATES = frozenset({"CLOSED", "REVOKED", "PAYERROR"})
_REMEMBERED_QUERIES = 10_000


@dataclass(frozen=True, slots=True)
class OrderView:
    order_id: str
    status: str  # pending | paid | closed
    plan: str
    title: str
    price_fen: int
    credits: int
    created_at: dt.datetime
    paid_at: dt.datetime | None

    def to_dict(self) -> dict[str, object]:
        return {"order_id": self.order_id, "status": self.status, "plan": self.plan,
                "title": self.title, "price_fen": self.price_fen, "credits": self.credits,
                "created_at": self.created_at.isoformat(),
                "paid_at": self.paid_at.isoformat() if self.paid_at else None}


class Payments:
    """Made once by the lifespan when WeChat Pay is configured (and quotas are on)."""

    def __init__(
        self,
        *,
        transactions: Transactions,
        quotas: Quotas,
        client: WeChatPayClient,
        plans: Sequence[PlanConfig],
        utcnow: Callable[[], dt.datetime] = utc_now,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        order_ttl: dt.timedelta = dt.timedelta(hours=2),
        orders_per_hour: int = 20,
        query_interval: float = 2.0,
    ) -> None:
        self._transactions = transactions
        self._engine = transactions.engine
        self._quotas = quotas
        self._client = client
        self._plans = {p.id: p for p in plans}
        self._utcnow, self._clock, self._monotonic = utcnow, clock, monotonic
        self._order_ttl = order_ttl
        self._orders_per_hour = orders_per_hour
        self._query_interval = query_interval
        self._queried: OrderedDict[str, float] = OrderedDict()

    def plans(self) -> list[PlanConfig]:
        return list(self._plans.values())

    async def create_order(self, *, user_id: str, plan_id: str) -> tuple[OrderView, dict[str, str]]:
        """A pending order and the ``wx.requestPayment`` parameters that pay it."""
        plan = self._plans.get(plan_id)
        if plan is None:
            raise NotFound("套餐不存在")
        now = self._utcnow()
        openid = await self._db(openid_of(self._engine, user_id=user_id))
        if openid is None:
            raise Unauthorized()
        recent = await self._db(store.count_recent(self._engine, user_id=user_id,
                                                   since=now - dt.timedelta(hours=1)))
        if recent >= self._orders_per_hour:
            raise RateLimited("下单过于频繁，请稍后再试", retry_after=600)
        order_id = "mp" + secrets.token_hex(12)
        expires_at = now + self._order_ttl
        await self._db(store.insert_order(
            self._engine, order_id=order_id, user_id=user_id, plan_id=plan.id, title=plan.title,
            price_fen=plan.price_fen, credits=plan.credits, created_at=now, expires_at=expires_at,
        ))
        prepay_id = await self._client.create_jsapi(
            out_trade_no=order_id, description=plan.title, total_fen=plan.price_fen,
            openid=openid, expires_at=expires_at,
        )
        await self._db(store.set_prepay(self._engine, order_id=order_id, prepay_id=prepay_id))
        log.info("order %s created: plan %s, %d fen, user %s", order_id, plan.id,
                 plan.price_fen, user_id)
        view = OrderView(order_id, "pending", plan.id, plan.title, plan.price_fen, plan.credits,
                         now, None)
        return view, self._client.payment_params(prepay_id)

    async def order(self, *, user_id: str, order_id: str) -> OrderView:
        """The caller's order; a pending one is looked up at WeChat Pay first (rate-bounded)."""
        stored = await self._owned(user_id, order_id)
        if stored.status == "pending" and self._may_query(order_id):
            try:
                transaction = await self._client.query(order_id)
            except ServiceUnavailable:
                return _view(stored)  # still pending as far as anyone knows; asked again later
            await self._follow(stored, transaction)
            stored = await self._owned(user_id, order_id)
        return _view(stored)

    async def notify(self, headers: Mapping[str, str], body: bytes) -> None:
        """Accept a notification (return) or refuse it (raise); credits granted at most once.

        ``headers``: case-insensitive, or with lower-case names.
        """
        m = self._client.merchant
        try:
            opened = open_notification(headers, body, public_key=m.public_key,
                                       public_key_id=m.public_key_id, apiv3_key=m.apiv3_key,
                                       now=self._clock())
        except (UnverifiedNotification, InvalidNotification) as refused:
            log.warning("wechat pay notification refused: %s (%s); serial=%r", refused.code,
                        refused.message, headers.get("wechatpay-serial", "")[:64])
            raise
        transaction = opened.transaction
        if transaction is None:
            log.info("wechat pay notification %s (%s) ignored", opened.id, opened.event_type)
            return
        if transaction.trade_state != "SUCCESS":
            log.info("wechat pay notification %s: order %s is %s", opened.id,
                     transaction.out_trade_no, transaction.trade_state)
            return
        outcome = await self._pay(transaction)
        if outcome not in ("credited", "already paid"):
            log.error("wechat pay notification %s for order %s refused: %s", opened.id,
                      transaction.out_trade_no, outcome)
            raise InvalidNotification("通知与订单不符")

    # -- internals -------------------------------------------------------------------------

    async def _follow(self, stored: store.StoredOrder, transaction: Transaction | None) -> None:
        """Bring a pending order to what WeChat Pay says of it."""
        now = self._utcnow()
        state = transaction.trade_state if transaction is not None else None
        if state == "SUCCESS" and transaction is not None:
            outcome = await self._pay(transaction)
            if outcome not in ("credited", "already paid"):
                log.error("wechat pay query for order %s refused: %s", stored.id, outcome)
            return
        gone = transaction is None and (stored.prepay_id is None or now > stored.expires_at)
        expired = state == "NOTPAY" and now > stored.expires_at
        if gone or expired or state in _CLOSED_STATES:
            if await self._db(store.close_order(self._engine, order_id=stored.id)):
                log.info("order %s closed (%s)", stored.id, state or "unknown to wechat pay")

    async def _pay(self, transaction: Transaction) -> str:
        outcome: str = await self._db(self._transactions.run(self._pay_in, transaction))
        if outcome == "credited":
            log.info("order %s paid: credits granted (transaction %s)",
                     transaction.out_trade_no, transaction.transaction_id)
        return outcome

    def _pay_in(self, conn: Connection, transaction: Transaction) -> str:
        order = store.read_order(conn, transaction.out_trade_no)  # locked until commit
        if order is None:
            return "unknown order"
        problem = self._mismatch(order, transaction)
        if problem is not None:
            return problem
        if order.status == "paid":
            return "already paid"
        store.mark_paid(conn, order_id=order.id, transaction_id=transaction.transaction_id,
                        paid_at=self._utcnow())
        self._quotas.credit_in(conn, user_id=order.user_id, amount=order.credits,
                               key=f"order:{order.id}", order_id=order.id, reason=order.title)
        return "credited"

    def _mismatch(self, order: store.StoredOrder, transaction: Transaction) -> str | None:
        m = self._client.merchant
        if transaction.mchid != m.mchid:
            return f"mchid {transaction.mchid!r} is not ours"
        if transaction.appid and transaction.appid != m.appid:
            return f"appid {transaction.appid!r} is not ours"
        amount = transaction.amount
        if amount is None or amount.total != order.price_fen:
            paid = amount.total if amount is not None else None
            return f"amount {paid} fen is not the order's {order.price_fen}"
        if amount.currency != "CNY":
            return f"currency {amount.currency[:8]!r} is not CNY"
        return None

    async def _owned(self, user_id: str, order_id: str) -> store.StoredOrder:
        if _ORDER_ID.fullmatch(order_id) is None:
            raise NotFound("订单不存在")
        stored = await self._db(store.get_order(self._engine, order_id=order_id))
        if stored is None or stored.user_id != user_id:
            raise NotFound("订单不存在")
        return stored

    def _may_query(self, order_id: str) -> bool:
        """At most one WeChat Pay query per order per ``query_interval`` on this instance."""
        now = self._monotonic()
        last = self._queried.get(order_id)
        if last is not None and now - last < self._query_interval:
            return False
        self._queried[order_id] = now
        self._queried.move_to_end(order_id)
        while len(self._queried) > _REMEMBERED_QUERIES:
            self._queried.popitem(last=False)
        return True

    @staticmethod
    async def _db(pending: Awaitable[T]) -> T:
        try:
            return await pending
        except (SQLAlchemyError, OSError) as exc:
            log.warning("payments storage failed: %s", type(exc).__name__)
            raise ServiceUnavailable(retry_after=1) from None


def _view(order: store.StoredOrder) -> OrderView:
    return OrderView(order.id, order.status, order.plan_id, order.title, order.price_fen,
                     order.credits, order.created_at, order.paid_at)
