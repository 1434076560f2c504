"""The fake WeChat Pay's control API, as the demo page uses it: pay, notify in every mode."""

from __future__ import annotations

from collections.abc import Callable

from mpchat.fakes.wechatpay import FakeWeChatPay
from mpchat.settings import Settings
from tests.payments.conftest import NOTIFY
from tests.payments.support import call, credits_of, order
from tests.utils import running_app, wait_until


async def test_pay_and_notify_through_the_control_api(
    pay_settings: Callable[..., Settings], fake_pay: FakeWeChatPay
) -> None:
    async with running_app(pay_settings()) as app:
        fake_pay.notify_url_override = app.base_url + NOTIFY
        token = await app.login("buyer")
        control = fake_pay.base_url + "/_control"

        first = (await order(app, token, "p1"))["order_id"]
        async with app.http.post(control + "/pay", json={"out_trade_no": first,
                                                         "notify": "forged"}) as r:
            assert (await r.json())["statuses"] == [401]
        async with app.http.post(control + "/notify", json={"out_trade_no": first,
                                                            "mode": "twice?"}) as r:
            assert r.status == 400
        async with app.http.post(control + "/notify", json={"out_trade_no": first}) as r:
            assert (await r.json())["status"] == 204
        assert await credits_of(app, token) == 10

        second = (await order(app, token, "p1"))["order_id"]
        async with app.http.post(control + "/pay", json={"out_trade_no": second,
                                                         "notify": "twice"}) as r:
            assert (await r.json())["statuses"] == [204, 204]
        assert await credits_of(app, token) == 20

        third = (await order(app, token, "p1"))["order_id"]
        async with app.http.post(control + "/pay", json={"out_trade_no": third,
                                                         "notify": "late", "delay": 0.05}) as r:
            assert (await r.json())["statuses"] == []

        async def credited() -> bool:
            return await credits_of(app, token) == 30

        await wait_until(credited, timeout=10, what="the late notification's credits")

        async with app.http.options(control + "/pay") as r:
            assert r.headers["Access-Control-Allow-Origin"] == "*"
        async with app.http.get(control + "/orders") as r:
            states = {o["out_trade_no"]: o["trade_state"] for o in (await r.json())["items"]}
        assert states == {first: "SUCCESS", second: "SUCCESS", third: "SUCCESS"}
        async with app.http.post(control + "/pay", json={"out_trade_no": "nope"}) as r:
            assert r.status == 404
        status, _ = await call(app, "GET", f"/api/v1/orders/{third}", token)
        assert status == 200
