"""The WeChat Pay API v3 calls mpchat makes: a JSAPI order, an order query, payment params.

Every request carries ``Authorization: WECHATPAY2-SHA256-RSA2048 ...`` signed with the
merchant's private key; every 2xx answer is verified before it is believed: its
``Wechatpay-Serial`` must be the configured public key id, its timestamp within five
minutes, its signature valid under the WeChat Pay public key. An answer that fails, a
network error, a timeout or an error status become `ServiceUnavailable` (logged with
WeChat Pay's error code, never a key or a whole body).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

import aiohttp
import orjson
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey

from mpchat.errors import ServiceUnavailable
from mpchat.payments import crypto
from mpchat.payments.notify import WINDOW_S
from mpchat.payments.types import Prepay, Transaction, decode

__all__ = ["DEFAULT_API_BASE", "Merchant", "WeChatPayClient"]

log = logging.getLogger("mpchat.payments")

DEFAULT_API_BASE = "https://api.mch.weixin.qq.com"
# WeChat Pay answers within a second or two; the order call is on a user's tap.
DEFAULT_TIMEOUT = aiohttp.ClientTimeout(total=10, connect=3, sock_connect=3, sock_read=8)
_CHINA = ZoneInfo("Asia/Shanghai")
_MAX_ANSWER = 64 * 1024


@dataclass(frozen=True)
class Merchant:
    """The merchant's identity and keys (settings ``MPCHAT_WECHATPAY_*`` and the PEM files)."""

    mchid: str
    appid: str  # the mini program's, as bound to the merchant in the console
    serial: str  # the merchant API certificate's serial number
    private_key: RSAPrivateKey = field(repr=False)
    public_key: RSAPublicKey = field(repr=False)  # WeChat Pay's
    public_key_id: str
    apiv3_key: bytes = field(repr=False)
    notify_url: str
    api_base: str = DEFAULT_API_BASE


class WeChatPayClient:
    def __init__(self, http: aiohttp.ClientSession, merchant: Merchant, *,
                 timeout: aiohttp.ClientTimeout = DEFAULT_TIMEOUT,
                 clock: Callable[[], float] = time.time) -> None:
        self._http = http
        self.merchant = merchant
        self._timeout = timeout
        self._clock = clock

    def __repr__(self) -> str:
        return f"WeChatPayClient(mchid={self.merchant.mchid!r}, base={self.merchant.api_base!r})"

    async def create_jsapi(self, *, out_trade_no: str, description: str, total_fen: int,
                           openid: str, expires_at: dt.datetime) -> str:
        """A JSAPI (mini program) order; its ``prepay_id``."""
        m = self.merchant
        body = {
            "appid": m.appid, "mchid": m.mchid, "description": description,
            "out_trade_no": out_trade_no, "notify_url": m.notify_url,
            "time_expire": expires_at.astimezone(_CHINA).isoformat(timespec="seconds"),
            "amount": {"total": total_fen, "currency": "CNY"}, "payer": {"openid": openid},
        }
        status, answer = await self._call("POST", "/v3/pay/transactions/jsapi",
                                          orjson.dumps(body), what="jsapi order")
        if status != 200:
            raise ServiceUnavailable()
        try:
            return decode(answer, Prepay).prepay_id
        except ValueError:
            log.error("wechat pay jsapi order: an answer without prepay_id")
            raise ServiceUnavailable() from None

    async def query(self, out_trade_no: str) -> Transaction | None:
        """The order as WeChat Pay has it; None when it has no such order."""
        path = f"/v3/pay/transactions/out-trade-no/{out_trade_no}?mchid={self.merchant.mchid}"
        status, answer = await self._call("GET", path, b"", what="order query",
                                          absent_ok=True)
        if status == 404:
            return None
        if status != 200:
            raise ServiceUnavailable()
        try:
            return decode(answer, Transaction)
        except ValueError:
            log.error("wechat pay order query: an answer that is not a transaction")
            raise ServiceUnavailable() from None

    def payment_params(self, prepay_id: str) -> dict[str, str]:
        """What ``wx.requestPayment`` takes; ``paySign`` is RSA over the four values.

        The signed text is ``appId\\ntimeStamp\\nnonceStr\\npackage\\n``.
        """
        timestamp, nonce = str(int(self._clock())), crypto.new_nonce()
        package = f"prepay_id={prepay_id}"
        message = f"{self.merchant.appid}\n{timestamp}\n{nonce}\n{package}\n".encode()
        return {"timeStamp": timestamp, "nonceStr": nonce, "package": package,
                "signType": "RSA", "paySign": crypto.sign(self.merchant.private_key, message)}

    async def _call(self, method: str, path: str, body: bytes, *, what: str,
                    absent_ok: bool = False) -> tuple[int, bytes]:
        m = self.merchant
        auth = crypto.authorization(
            mchid=m.mchid, serial=m.serial, key=m.private_key, method=method, path=path,
            body=body, timestamp=str(int(self._clock())), nonce=crypto.new_nonce(),
        )
        headers = {"Authorization": auth, "Accept": "application/json",
                   "Wechatpay-Serial": m.public_key_id, "User-Agent": "mpchat"}
        if body:
            headers["Content-Type"] = "application/json"
        try:
            async with self._http.request(method, m.api_base.rstrip("/") + path, data=body or None,
                                          headers=headers, timeout=self._timeout) as response:
                answer = await _bounded(response)
                status, answer_headers = response.status, response.headers
        except (TimeoutError, aiohttp.ClientError) as exc:
            log.warning("wechat pay %s unreachable: %s", what, type(exc).__name__)
            raise ServiceUnavailable(retry_after=1) from None
        if answer is None:
            log.error("wechat pay %s: an answer over %d bytes", what, _MAX_ANSWER)
            raise ServiceUnavailable()
        if status == 404 and absent_ok:
            return status, answer
        if not 200 <= status < 300:
            log.error("wechat pay %s: HTTP %s code=%s", what, status, _error_code(answer))
            raise ServiceUnavailable()
        self._check_answer(answer_headers, answer, what)
        return status, answer

    def _check_answer(self, headers: Mapping[str, str], body: bytes, what: str) -> None:
        get = headers.get
        serial, timestamp = get("Wechatpay-Serial", ""), get("Wechatpay-Timestamp", "")
        nonce, signature = get("Wechatpay-Nonce", ""), get("Wechatpay-Signature", "")
        problem = None
        if serial != self.merchant.public_key_id:
            problem = "serial is not the configured public key id"
        elif not timestamp.isdigit() or abs(self._clock() - int(timestamp)) > WINDOW_S:
            problem = "timestamp outside the window"
        elif not crypto.verify(self.merchant.public_key,
                               crypto.response_message(timestamp, nonce, body), signature):
            problem = "signature does not verify"
        if problem is not None:
            log.error("wechat pay %s: answer refused, %s", what, problem)
            raise ServiceUnavailable()


async def _bounded(response: aiohttp.ClientResponse) -> bytes | None:
    """The whole body, or None past ``_MAX_ANSWER`` bytes (not read further)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(16384):
        size += len(chunk)
        if size > _MAX_ANSWER:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _error_code(answer: bytes) -> str:
    """WeChat Pay's error ``code`` (e.g. SIGN_ERROR, PARAM_ERROR), never its whole body."""
    try:
        code = orjson.loads(answer).get("code")
    except (orjson.JSONDecodeError, AttributeError):
        return "?"
    return str(code)[:40] if code else "?"
