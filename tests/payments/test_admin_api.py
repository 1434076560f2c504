"""/admin/v1 for quotas: a user's balance and ledger, grants and refunds, totals per day."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from mpchat.fakes.wechatpay import FakeWeChatPay
from mpchat.settings import Settings
from tests.payments.conftest import ADMIN, NOTIFY
from tests.payments.support import call, credits_of, order
from tests.utils import running_app

AUTH = {"Authorization": f"Bearer {ADMIN}"}


async def test_balance_grants_refunds_and_totals(
    pay_settings: Callable[..., Settings], fake_pay: FakeWeChatPay
) -> None:
    async with running_app(pay_settings()) as app:
        token = await app.login("buyer")
        _, me = await call(app, "GET", "/api/v1/me", token)
        user = me["user_id"]
        assert me["quota"] == {"enabled": True, "remaining": 2, "free_remaining": 2,
                               "reset_s": me["quota"]["reset_s"], "credits": 0}
        assert 0 < me["quota"]["reset_s"] <= 86400

        base = f"/admin/v1/users/{user}"
        status, body = await call(app, "POST", f"{base}/credits", headers=AUTH,
                                  json={"amount": 50, "reason": "补偿", "key": "ticket-1"})
        assert status == 200 and body["applied"] and body["quota"]["credits"] == 50
        again = [call(app, "POST", f"{base}/credits", headers=AUTH,
                      json={"amount": 50, "reason": "补偿", "key": "ticket-1"}) for _ in range(3)]
        assert all(not b["applied"] for _, b in await asyncio.gather(*again))
        status, body = await call(app, "POST", f"{base}/credits", headers=AUTH,
                                  json={"amount": -51, "reason": "refund"})
        assert status == 400 and "余额不足" in body["error"]["message"]
        status, body = await call(app, "POST", f"{base}/credits", headers=AUTH,
                                  json={"amount": -20, "reason": "refund"})
        assert status == 200 and body["quota"]["credits"] == 30
        assert await credits_of(app, token) == 30

        order_id = (await order(app, token, "p1"))["order_id"]
        fake_pay.pay(order_id)
        assert await fake_pay.notify(order_id, url=app.base_url + NOTIFY) == 204

        status, body = await call(app, "GET", f"{base}/quota?limit=2", headers=AUTH)
        assert status == 200 and body["quota"]["credits"] == 40
        assert body["quota"]["free_units"] == 2
        first = body["ledger"]
        assert [(r["kind"], r["amount"], r["balance_after"]) for r in first] == [
            ("purchase", 10, 40), ("grant", -20, 30)]
        assert first[0]["order_id"] == order_id and body["next"]
        status, body = await call(app, "GET", f"{base}/quota?limit=2&before={body['next']}",
                                  headers=AUTH)
        assert [r["reason"] for r in body["ledger"]] == ["补偿"] and body["next"] is None

        status, body = await call(app, "GET", "/admin/v1/quota/daily?days=2", headers=AUTH)
        assert status == 200 and body["timezone"] == "Asia/Shanghai"
        today = body["items"][0]
        assert len(body["items"]) == 2
        assert (today["credits_granted"], today["credits_purchased"], today["orders_paid"],
                today["revenue_fen"]) == (30, 10, 1, 100)


async def test_admin_refusals(pay_settings: Callable[..., Settings]) -> None:
    async with running_app(pay_settings()) as app:
        token = await app.login("buyer")
        _, me = await call(app, "GET", "/api/v1/me", token)
        base = f"/admin/v1/users/{me['user_id']}"
        for headers in ({}, {"Authorization": f"Bearer {token}"}):
            status, _ = await call(app, "GET", f"{base}/quota", headers=headers)
            assert status == 401
        status, body = await call(app, "GET", "/admin/v1/users/" + "0" * 32 + "/quota",
                                  headers=AUTH)
        assert status == 404
        for path in ("/admin/v1/users/not-an-id/quota", "/admin/v1/quota/daily?days=0",
                     "/admin/v1/quota/daily?days=1000"):
            status, _ = await call(app, "GET", path, headers=AUTH)
            assert status == 400, path
        for bad in ({"amount": "5", "reason": "x"}, {"amount": 0, "reason": "x"},
                    {"amount": 1.5, "reason": "x"}, {"amount": 5}, {"amount": 5, "reason": ""},
                    {"amount": 10**13, "reason": "x"}, {"amount": 5, "reason": "x", "key": ""}):
            status, body = await call(app, "POST", f"{base}/credits", headers=AUTH, json=bad)
            assert status == 400 and body["error"]["code"] == "invalid_request", bad
        assert await credits_of(app, token) == 0


async def test_quota_endpoints_with_quotas_off(settings_factory: Callable[..., Settings]) -> None:
    async with running_app(settings_factory(admin_token=ADMIN)) as app:
        token = await app.login("buyer")
        _, me = await call(app, "GET", "/api/v1/me", token)
        base = f"/admin/v1/users/{me['user_id']}"
        status, body = await call(app, "GET", f"{base}/quota", headers=AUTH)
        assert status == 200 and body["quota"] == {"enabled": False} and body["ledger"] == []
        status, body = await call(app, "POST", f"{base}/credits", headers=AUTH,
                                  json={"amount": 5, "reason": "x"})
        assert status == 404
