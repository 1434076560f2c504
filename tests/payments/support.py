"""Helpers of the payment tests: calls as a user, an order, the ledger of an order."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from mpchat.storage.tables import quota_ledger
from tests.utils import Running


async def call(app: Running, method: str, path: str, token: str | None = None,
               **kw: Any) -> tuple[int, Any]:
    headers = dict(kw.pop("headers", {}))
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    async with app.http.request(method, app.base_url + path, headers=headers, **kw) as r:
        body = await r.json() if r.content_type == "application/json" else await r.read()
        return r.status, body


async def order(app: Running, token: str, plan: str = "p10") -> dict[str, Any]:
    status, body = await call(app, "POST", "/api/v1/orders", token, json={"plan": plan})
    assert status == 201, body
    return dict(body)


async def order_rows(app: Running, order_id: str) -> int:
    async with app.services.engine.connect() as conn:
        count = await conn.scalar(select(func.count()).select_from(quota_ledger)
                                  .where(quota_ledger.c.order_id == order_id))
    return int(count or 0)


async def credits_of(app: Running, token: str) -> int:
    status, me = await call(app, "GET", "/api/v1/me", token)
    assert status == 200
    return int(me["quota"]["credits"])
