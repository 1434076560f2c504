"""Orders over HTTP against the fake WeChat Pay: create, pay, notify, query; exactly once."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from mpchat.fakes.wechatpay import FakeWeChatPay
from mpchat.payments.setup import DEV_APPID
from mpchat.settings import Settings
from tests.payments.conftest import NOTIFY
from tests.payments.support import call, credits_of, order, order_rows
from tests.utils import running_app


async def test_an_order_paid_and_notified(
    pay_settings: Callable[..., Settings], fake_pay: FakeWeChatPay
) -> None:
    async with running_app(pay_settings()) as app:
        token = await app.login("buyer")
        status, plans = await call(app, "GET", "/api/v1/plans", token)
        assert status == 200 and plans["items"][0] == {
            "id": "p10", "title": "1000 点", "price_fen": 1000, "credits": 1000}
        created = await order(app, token)
        order_id, payment = created["order_id"], created["payment"]
        assert created["status"] == "pending" and created["credits"] == 1000

        # The fake verified the merchant's signature and holds the order for the buyer.
        assert fake_pay.stats.auth_failures == 0
        held = fake_pay.orders[order_id]
        openid = await _openid(app, token)
        assert (held.total, held.openid, held.appid) == (1000, openid, DEV_APPID)
        # paySign: RSA-SHA256 by the merchant key over appId, timeStamp, nonceStr, package.
        assert payment["signType"] == "RSA"
        assert payment["package"] == f"prepay_id={held.prepay_id}"
        message = "".join(f"{v}\n" for v in (DEV_APPID, payment["timeStamp"],
                                              payment["nonceStr"], payment["package"]))
        fake_pay.keys.merchant.public_key().verify(
            base64.b64decode(payment["paySign"]), message.encode(), padding.PKCS1v15(),
            hashes.SHA256())

        fake_pay.pay(order_id)
        assert await fake_pay.notify(order_id, url=app.base_url + NOTIFY) == 204
        status, seen = await call(app, "GET", f"/api/v1/orders/{order_id}", token)
        assert status == 200 and seen["status"] == "paid" and seen["paid_at"]
        assert seen["quota"]["credits"] == 1000 and seen["quota"]["remaining"] == 1002
        assert await order_rows(app, order_id) == 1


async def test_five_identical_notifications_at_once_credit_once(
    pay_settings: Callable[..., Settings], fake_pay: FakeWeChatPay
) -> None:
    async with running_app(pay_settings()) as app:
        token = await app.login("buyer")
        order_id = (await order(app, token, "p1"))["order_id"]
        fake_pay.pay(order_id)
        headers, body = fake_pay.notification(order_id)

        async def post() -> int:
            async with app.http.post(app.base_url + NOTIFY, data=body, headers=headers) as r:
                return r.status

        statuses = await asyncio.gather(*(post() for _ in range(5)))
        assert statuses == [204] * 5
        assert await credits_of(app, token) == 10
        assert await order_rows(app, order_id) == 1
        # Later: twice more, and a query; still once.
        assert await fake_pay.notify(order_id, url=app.base_url + NOTIFY) == 204
        await call(app, "GET", f"/api/v1/orders/{order_id}", token)
        assert await credits_of(app, token) == 10


@pytest.mark.parametrize(("mode", "status", "logged"), [
    ("forged", 401, "invalid_signature"),
    ("tampered", 401, "invalid_signature"),
    ("wrong_serial", 401, "公钥 ID"),
    ("old_timestamp", 401, "时间戳"),
    ("bad_ciphertext", 400, "无法解密"),
    ("altered_amount", 400, "amount 1001 fen is not the order's 1000"),
])
async def test_spoilt_notifications_grant_nothing(
    pay_settings: Callable[..., Settings], fake_pay: FakeWeChatPay,
    payment_logs: pytest.LogCaptureFixture, mode: str, status: int, logged: str,
) -> None:
    async with running_app(pay_settings()) as app:
        token = await app.login("buyer")
        order_id = (await order(app, token))["order_id"]
        fake_pay.pay(order_id)
        headers, body = fake_pay.notification(order_id, mode)
        async with app.http.post(app.base_url + NOTIFY, data=body, headers=headers) as r:
            assert r.status == status
            assert (await r.json())["code"] == "FAIL"
        assert await credits_of(app, token) == 0
        assert await order_rows(app, order_id) == 0
        assert logged in payment_logs.text
        assert fake_pay.keys.apiv3_key not in payment_logs.text
        # The real one still works afterwards.
        assert await fake_pay.notify(order_id, url=app.base_url + NOTIFY) == 204
        assert await credits_of(app, token) == 1000


async def test_a_late_notification_is_found_by_the_query(
    pay_settings: Callable[..., Settings], fake_pay: FakeWeChatPay
) -> None:
    async with running_app(pay_settings()) as app:
        token = await app.login("buyer")
        order_id = (await order(app, token, "p1"))["order_id"]
        status, seen = await call(app, "GET", f"/api/v1/orders/{order_id}", token)
        assert status == 200 and seen["status"] == "pending"
        fake_pay.pay(order_id)  # paid, the notification not sent yet
        app.services.payments._query_interval = 0  # the poll bound is not under test here
        status, seen = await call(app, "GET", f"/api/v1/orders/{order_id}", token)
        assert seen["status"] == "paid" and seen["quota"]["credits"] == 10
        # The notification comes after all: accepted, nothing more granted.
        assert await fake_pay.notify(order_id, url=app.base_url + NOTIFY) == 204
        assert await credits_of(app, token) == 10 and await order_rows(app, order_id) == 1


async def test_closed_orders_and_query_bounds(
    pay_settings: Callable[..., Settings], fake_pay: FakeWeChatPay
) -> None:
    async with running_app(pay_settings()) as app:
        token = await app.login("buyer")
        order_id = (await order(app, token, "p1"))["order_id"]
        await call(app, "GET", f"/api/v1/orders/{order_id}", token)
        queries = fake_pay.stats.calls["query"]
        for _ in range(3):  # within the interval: answered from storage
            await call(app, "GET", f"/api/v1/orders/{order_id}", token)
        assert fake_pay.stats.calls["query"] == queries
        fake_pay.orders[order_id].state = "CLOSED"
        app.services.payments._query_interval = 0
        _, seen = await call(app, "GET", f"/api/v1/orders/{order_id}", token)
        assert seen["status"] == "closed"
        # WeChat Pay took the money anyway (a race at the close): the payment wins.
        fake_pay.orders[order_id].state = "NOTPAY"
        fake_pay.pay(order_id)
        assert await fake_pay.notify(order_id, url=app.base_url + NOTIFY) == 204
        _, seen = await call(app, "GET", f"/api/v1/orders/{order_id}", token)
        assert seen["status"] == "paid" and seen["quota"]["credits"] == 10


async def test_hostile_requests(
    pay_settings: Callable[..., Settings], fake_pay: FakeWeChatPay
) -> None:
    async with running_app(pay_settings()) as app:
        alice, mallory = await app.login("alice"), await app.login("mallory")
        order_id = (await order(app, alice))["order_id"]
        unknown = order_id[:-4] + ("0000" if not order_id.endswith("0000") else "1111")
        seen = {}
        for path in (f"/api/v1/orders/{order_id}", f"/api/v1/orders/{unknown}",
                     "/api/v1/orders/../../admin", "/api/v1/orders/%2e%2e"):
            status, body = await call(app, "GET", path, mallory)
            assert status == 404, path
            seen[path] = body
        # Another user's order reads exactly like one that does not exist: no oracle.
        assert seen[f"/api/v1/orders/{order_id}"] == seen[f"/api/v1/orders/{unknown}"]
        status, _ = await call(app, "GET", "/api/v1/orders/" + "x" * 65, mallory)
        assert status == 400  # a malformed id
        status, body = await call(app, "POST", "/api/v1/orders", mallory, json={"plan": "nope"})
        assert status == 404 and body["error"]["code"] == "not_found"
        for bad in ({"plan": 10}, {}, {"plan": ""}, {"plan": "p" * 33}, [1]):
            status, body = await call(app, "POST", "/api/v1/orders", mallory, json=bad)
            assert status == 400 and body["error"]["code"] == "invalid_request", bad
        status, body = await call(app, "POST", "/api/v1/orders", mallory, data=b"{not json",
                                  headers={"Content-Type": "application/json"})
        assert status == 400
        status, _ = await call(app, "POST", "/api/v1/orders", json={"plan": "p1"})
        assert status == 401
        status, body = await call(app, "POST", NOTIFY, data=b"x" * 100_000)
        assert status == 413
        status, body = await call(app, "POST", NOTIFY, data=b"{}")
        assert status == 401 and body["code"] == "FAIL"
        assert fake_pay.stats.calls["jsapi"] == 1


async def test_wechat_pay_failures_are_503(
    pay_settings: Callable[..., Settings], fake_pay: FakeWeChatPay,
    payment_logs: pytest.LogCaptureFixture,
) -> None:
    async with running_app(pay_settings()) as app:
        token = await app.login("buyer")
        fake_pay.fail("jsapi", status=500)
        status, body = await call(app, "POST", "/api/v1/orders", token, json={"plan": "p1"})
        assert status == 503 and body["error"]["code"] == "service_unavailable"
        for mode, logged in (("forged", "signature does not verify"),
                             ("wrong_serial", "serial is not the configured public key id")):
            fake_pay.answer_mode = mode
            status, body = await call(app, "POST", "/api/v1/orders", token, json={"plan": "p1"})
            assert status == 503 and logged in payment_logs.text
        fake_pay.answer_mode = "normal"
        assert (await order(app, token, "p1"))["status"] == "pending"


async def test_payments_off(settings_factory: Callable[..., Settings]) -> None:
    async with running_app(settings_factory()) as app:
        token = await app.login()
        status, body = await call(app, "GET", "/api/v1/plans", token)
        assert status == 200 and body == {"items": []}
        status, body = await call(app, "POST", "/api/v1/orders", token, json={"plan": "p1"})
        assert status == 404
        status, body = await call(app, "POST", NOTIFY, data=b"{}")
        assert status == 404 and body["code"] == "FAIL"
        status, me = await call(app, "GET", "/api/v1/me", token)
        assert me["quota"] == {"enabled": False}


async def _openid(app: Any, token: str) -> str:
    from mpchat.storage.users import openid_of

    _, me = await call(app, "GET", "/api/v1/me", token)
    found = await openid_of(app.services.engine, user_id=me["user_id"])
    assert found is not None
    return found


async def test_the_fake_refuses_a_request_signed_by_another_merchant(
    pay_settings: Callable[..., Settings], fake_pay: FakeWeChatPay, tmp_path: Any,
    payment_logs: pytest.LogCaptureFixture,
) -> None:
    """The fake really checks the Authorization: a wrong serial, or another key, is 401."""
    from mpchat.fakes.wechatpay_keys import FakeWeChatPayKeys

    other = FakeWeChatPayKeys.generate().write(tmp_path / "other")
    for overrides in ({"wechatpay_serial": "0" * 40},
                      {"wechatpay_private_key": other["MPCHAT_WECHATPAY_PRIVATE_KEY"]}):
        async with running_app(pay_settings(**overrides)) as app:
            token = await app.login("buyer")
            status, _ = await call(app, "POST", "/api/v1/orders", token, json={"plan": "p1"})
            assert status == 503
    assert fake_pay.stats.auth_failures == 2 and not fake_pay.orders
    assert "code=SIGN_ERROR" in payment_logs.text
