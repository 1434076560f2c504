"""A fake WeChat Pay (API v3): JSAPI orders, order queries, and notifications on request.

For tests (``async with FakeWeChatPay(keys) as fake:`` then ``fake.base_url``) and offline
demos (``mpchat fake-wechatpay --dir DIR``: writes the PEM files the service needs into
DIR and prints its ``MPCHAT_WECHATPAY_*`` settings).

WeChat Pay's endpoints, checked as WeChat Pay checks them (``Authorization`` signed by the
merchant key, with its mchid, serial and a five-minute timestamp), answers signed by the
platform key:

* ``POST /v3/pay/transactions/jsapi`` -> ``{"prepay_id"}`` (the same order again: the same
  prepay_id; the same out_trade_no with other terms: 400 INVALID_REQUEST)
* ``GET /v3/pay/transactions/out-trade-no/{id}?mchid=`` -> the transaction (404 ORDER_NOT_EXIST)
* ``POST /v3/pay/transactions/out-trade-no/{id}/close`` -> 204

Control (no signature; CORS open, so the browser demo page can "pay"):

* ``POST /_control/pay {"out_trade_no", "notify": "normal"}``: the order is paid, then
  notified: ``normal``, ``twice``, ``late`` (after ``delay`` seconds, default 5),
  ``none`` (only a query will tell), or a spoilt one: ``forged``, ``wrong_serial``,
  ``old_timestamp``, ``altered_amount``, ``tampered``, ``bad_ciphertext``
* ``POST /_control/notify {"out_trade_no", "mode", "url"?}``: notify again (-> the statuses)
* ``POST /_control/close {"out_trade_no"}``, ``GET /_control/orders``, ``POST /_control/reset``

Knobs (attributes): ``answer_mode`` (``normal``, ``forged``, ``wrong_serial``: how answers
are signed), ``fail(endpoint, times, status)``; ``stats``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
from aiohttp import web

from mpchat.fakes.wechatpay_keys import FakeWeChatPayKeys, signed_notification
from mpchat.payments import crypto

__all__ = ["FakeOrder", "FakeWeChatPay", "main"]

log = logging.getLogger("mpchat.fakes.wechatpay")

_CHINA = ZoneInfo("Asia/Shanghai")
_OUT_TRADE_NO = re.compile(r"[0-9A-Za-z_\-|*]{6,32}")
_WINDOW_S = 300
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class FakeOrder:
    out_trade_no: str
    appid: str
    description: str
    total: int
    openid: str
    notify_url: str
    prepay_id: str
    state: str = "NOTPAY"
    transaction_id: str = ""
    success_time: str | None = None

    def transaction(self, mchid: str) -> dict[str, Any]:
        out: dict[str, Any] = {
            "appid": self.appid, "mchid": mchid, "out_trade_no": self.out_trade_no,
            "trade_type": "JSAPI", "trade_state": self.state,
            "trade_state_desc": {"SUCCESS": "支付成功", "CLOSED": "已关闭"}.get(self.state,
                                                                              "未支付"),
            "payer": {"openid": self.openid},
            "amount": {"total": self.total, "payer_total": self.total, "currency": "CNY",
                       "payer_currency": "CNY"},
        }
        if self.state == "SUCCESS":
            out.update(transaction_id=self.transaction_id, bank_type="OTHERS",
                       success_time=self.success_time, attach="")
        return out


@dataclass
class FakeWeChatPayStats:
    calls: dict[str, int] = field(default_factory=dict)
    auth_failures: int = 0
    notifications: list[tuple[str, int]] = field(default_factory=list)  # (mode, status)


class FakeWeChatPay:
    def __init__(self, keys: FakeWeChatPayKeys | None = None, *, host: str = "127.0.0.1",
                 port: int = 0) -> None:
        self.keys = keys or FakeWeChatPayKeys.generate()
        self.orders: dict[str, FakeOrder] = {}
        self.stats = FakeWeChatPayStats()
        self.answer_mode = "normal"
        self.notify_url_override: str | None = None
        self._failures: dict[str, list[int]] = {}
        self._host, self._port = host, port
        self._runner: web.AppRunner | None = None
        self._http: aiohttp.ClientSession | None = None
        self._later: set[asyncio.Task[None]] = set()
        self.app = web.Application(middlewares=[self._cors], client_max_size=64 * 1024)
        r = self.app.router
        r.add_post("/v3/pay/transactions/jsapi", self._jsapi)
        r.add_get("/v3/pay/transactions/out-trade-no/{id}", self._query)
        r.add_post("/v3/pay/transactions/out-trade-no/{id}/close", self._close)
        r.add_post("/_control/pay", self._control_pay)
        r.add_post("/_control/notify", self._control_notify)
        r.add_post("/_control/close", self._control_close)
        r.add_get("/_control/orders", self._control_orders)
        r.add_post("/_control/reset", self._control_reset)

    # -- lifecycle -----------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        assert self._runner is not None, "not started"
        return f"http://{self._host}:{self._runner.addresses[0][1]}"

    async def start(self) -> None:
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self._host, self._port).start()

    async def aclose(self) -> None:
        for task in list(self._later):
            task.cancel()
        await asyncio.gather(*self._later, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._http is not None:
            await self._http.close()

    async def __aenter__(self) -> FakeWeChatPay:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- knobs and the Python side of the control API ------------------------------------

    def fail(self, endpoint: str, times: int = 1, status: int = 500) -> None:
        """The next ``times`` calls to ``endpoint`` (``jsapi``, ``query``) answer ``status``."""
        self._failures.setdefault(endpoint, []).extend([status] * times)

    def pay(self, out_trade_no: str) -> FakeOrder:
        """The user paid (no notification: call `notify`)."""
        order = self.orders[out_trade_no]
        if order.state != "SUCCESS":
            order.state, order.transaction_id = "SUCCESS", "42" + secrets.token_hex(13)
            order.success_time = datetime.now(UTC).astimezone(_CHINA).isoformat("T", "seconds")
        return order

    def notification(self, out_trade_no: str, mode: str = "normal") -> tuple[dict[str, str],
                                                                               bytes]:
        """What `notify` would send (to post yourself, e.g. five at once)."""
        order = self.orders[out_trade_no]
        return signed_notification(self.keys, order.transaction(self.keys.mchid), mode)

    async def notify(self, out_trade_no: str, mode: str = "normal", *,
                     url: str | None = None) -> int:
        """Send a notification of the order's payment; the service's HTTP status."""
        headers, body = self.notification(out_trade_no, mode)
        target = url or self.notify_url_override or self.orders[out_trade_no].notify_url
        assert self._http is not None, "not started"
        try:
            async with self._http.post(target, data=body, headers=headers) as response:
                status = response.status
        except aiohttp.ClientError as exc:
            log.warning("notification to %s failed: %s", target, type(exc).__name__)
            status = 0
        self.stats.notifications.append((mode, status))
        return status

    # -- WeChat Pay's endpoints ----------------------------------------------------------

    async def _jsapi(self, request: web.Request) -> web.Response:
        if (refused := await self._refused(request, "jsapi")) is not None:
            return refused
        try:
            body = json.loads(await request.read())
            appid, mchid = str(body["appid"]), str(body["mchid"])
            out_trade_no, total = str(body["out_trade_no"]), body["amount"]["total"]
            openid, notify_url = str(body["payer"]["openid"]), str(body["notify_url"])
            description = str(body["description"])
        except (ValueError, KeyError, TypeError):
            return _error(400, "PARAM_ERROR", "参数错误")
        if mchid != self.keys.mchid:
            return _error(400, "MCH_NOT_EXISTS", "商户号不存在")
        if (not _OUT_TRADE_NO.fullmatch(out_trade_no) or not isinstance(total, int)
                or total < 1 or not openid or not notify_url.startswith(("http://", "https://"))
                or not 1 <= len(description) <= 127):
            return _error(400, "PARAM_ERROR", "参数错误")
        existing = self.orders.get(out_trade_no)
        if existing is not None:
            if (existing.total, existing.openid, existing.appid) != (total, openid, appid):
                return _error(400, "INVALID_REQUEST", "201 商户订单号重复")
            return self._answer(200, {"prepay_id": existing.prepay_id})
        order = FakeOrder(out_trade_no, appid, description, total, openid, notify_url,
                          prepay_id="wx" + secrets.token_hex(15))
        self.orders[out_trade_no] = order
        return self._answer(200, {"prepay_id": order.prepay_id})

    async def _query(self, request: web.Request) -> web.Response:
        if (refused := await self._refused(request, "query")) is not None:
            return refused
        if request.query.get("mchid") != self.keys.mchid:
            return _error(400, "PARAM_ERROR", "商户号不匹配")
        order = self.orders.get(request.match_info["id"])
        if order is None:
            return self._answer(404, {"code": "ORDER_NOT_EXIST", "message": "订单不存在"})
        return self._answer(200, order.transaction(self.keys.mchid))

    async def _close(self, request: web.Request) -> web.Response:
        if (refused := await self._refused(request, "close")) is not None:
            return refused
        order = self.orders.get(request.match_info["id"])
        if order is None:
            return self._answer(404, {"code": "ORDER_NOT_EXIST", "message": "订单不存在"})
        if order.state == "NOTPAY":
            order.state = "CLOSED"
        return web.Response(status=204, headers=self.keys.sign_answer(b""))

    async def _refused(self, request: web.Request, endpoint: str) -> web.Response | None:
        """Count the call; a scripted failure, or 401 when the signature does not check out."""
        self.stats.calls[endpoint] = self.stats.calls.get(endpoint, 0) + 1
        scripted = self._failures.get(endpoint)
        if scripted:
            return _error(scripted.pop(0), "SYSTEM_ERROR", "系统错误")
        fields = crypto.parse_authorization(request.headers.get("Authorization", "")) or {}
        body = await request.read()
        timestamp = fields.get("timestamp", "")
        ok = (
            fields.get("mchid") == self.keys.mchid
            and fields.get("serial_no") == self.keys.serial
            and timestamp.isdigit() and abs(time.time() - int(timestamp)) <= _WINDOW_S
            and crypto.verify(self.keys.merchant.public_key(), crypto.request_message(
                request.method, request.raw_path, timestamp, fields.get("nonce_str", ""), body,
            ), fields.get("signature", ""))
        )
        if not ok:
            self.stats.auth_failures += 1
            return _error(401, "SIGN_ERROR", "签名错误")
        return None

    def _answer(self, status: int, payload: dict[str, Any]) -> web.Response:
        body = json.dumps(payload, ensure_ascii=False).encode()
        headers = self.keys.sign_answer(
            body, forged=self.answer_mode == "forged",
            serial="PUB_KEY_ID_0000000000WRONG" if self.answer_mode == "wrong_serial" else None,
        )
        return web.Response(status=status, body=body, headers=headers,
                            content_type="application/json")

    # -- control -------------------------------------------------------------------------

    async def _control_pay(self, request: web.Request) -> web.Response:
        body = await _json(request)
        order = self.orders.get(str(body.get("out_trade_no")))
        if order is None:
            return web.json_response({"error": "no such order"}, status=404)
        mode = str(body.get("notify", "normal"))
        self.pay(order.out_trade_no)
        if mode == "none":
            return web.json_response({"paid": True, "statuses": []})
        if mode == "late":
            task = asyncio.create_task(self._late(order.out_trade_no,
                                                  float(body.get("delay", 5))))
            self._later.add(task)
            task.add_done_callback(self._later.discard)
            return web.json_response({"paid": True, "statuses": []})
        try:
            times = 2 if mode == "twice" else 1
            statuses = [await self.notify(order.out_trade_no, "normal" if mode == "twice"
                                          else mode) for _ in range(times)]
        except ValueError:
            return web.json_response({"error": f"unknown mode {mode}"}, status=400)
        return web.json_response({"paid": True, "statuses": statuses})

    async def _late(self, out_trade_no: str, delay: float) -> None:
        await asyncio.sleep(delay)
        await self.notify(out_trade_no)

    async def _control_notify(self, request: web.Request) -> web.Response:
        body = await _json(request)
        out_trade_no = str(body.get("out_trade_no"))
        if out_trade_no not in self.orders:
            return web.json_response({"error": "no such order"}, status=404)
        try:
            status = await self.notify(out_trade_no, str(body.get("mode", "normal")),
                                       url=body.get("url"))
        except ValueError:
            return web.json_response({"error": "unknown mode"}, status=400)
        return web.json_response({"status": status})

    async def _control_close(self, request: web.Request) -> web.Response:
        order = self.orders.get(str((await _json(request)).get("out_trade_no")))
        if order is None:
            return web.json_response({"error": "no such order"}, status=404)
        if order.state == "NOTPAY":
            order.state = "CLOSED"
        return web.json_response({"state": order.state})

    async def _control_orders(self, _request: web.Request) -> web.Response:
        return web.json_response({"items": [order.transaction(self.keys.mchid)
                                            for order in self.orders.values()]})

    async def _control_reset(self, _request: web.Request) -> web.Response:
        self.orders.clear()
        self.stats = FakeWeChatPayStats()
        self._failures.clear()
        return web.json_response({"ok": True})

    @web.middleware
    async def _cors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith("/_control/"):
            return await handler(request)
        if request.method == "OPTIONS":
            response: web.StreamResponse = web.Response(status=204)
        else:
            response = await handler(request)
        response.headers["Access-Control-Allow-Origin"] = "*"
        response.headers["Access-Control-Allow-Headers"] = "Content-Type"
        response.headers["Access-Control-Allow-Methods"] = "GET, POST"
        return response


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"code": code, "message": message}, status=status)


async def _json(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


async def run(host: str, port: int, directory: Path, notify_url: str) -> None:
    """Serve until cancelled, with the keys in ``directory`` (made there the first time)."""
    keys = FakeWeChatPayKeys.load(directory) or FakeWeChatPayKeys.generate()
    settings = keys.write(directory)
    async with FakeWeChatPay(keys, host=host, port=port) as fake:
        settings["MPCHAT_WECHATPAY_NOTIFY_URL"] = notify_url
        settings["MPCHAT_WECHATPAY_API_BASE"] = fake.base_url
        lines = "".join(f"{name}={value}\n" for name, value in settings.items())
        (directory / "wechatpay.env").write_text(lines, encoding="utf-8")
        print(f"# fake WeChat Pay on {fake.base_url}; these settings are also in "
              f"{directory / 'wechatpay.env'}\n{lines}", flush=True)
        await asyncio.Event().wait()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mpchat.fakes.wechatpay",
                                     description="fake WeChat Pay API v3")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9300)
    parser.add_argument("--dir", type=Path, default=Path("data/fake-wechatpay"),
                        help="where the key files go (default %(default)s)")
    parser.add_argument("--notify-url", default="http://127.0.0.1:8000/api/v1/pay/wechat/notify")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run(args.host, args.port, args.dir, args.notify_url))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
