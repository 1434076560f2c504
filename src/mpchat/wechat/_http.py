"""What every WeChat client shares: one JSON call, the retry loop, the constructor.

Failures are logged by type only: aiohttp puts the request URL in some exception
messages, and our URLs carry the app secret or the access token in the query.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp

from mpchat.errors import ServiceUnavailable
from mpchat.providers.retry import RetryPolicy

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_TIMEOUT",
    "NO_RETRY",
    "SYSTEM_BUSY",
    "WECHAT_RETRY",
    "AppCredentials",
    "Endpoint",
    "WeChatApiError",
    "call_json",
]

T = TypeVar("T")

log = logging.getLogger("mpchat.wechat")

DEFAULT_BASE_URL = "https://api.weixin.qq.com"


@dataclass(frozen=True, slots=True)
class AppCredentials:
    """A mini program's appid and secret, and where WeChat's API is (a fake's in tests)."""

    appid: str
    secret: str = field(repr=False)  # never in a repr, so never in a stray log line
    base_url: str = DEFAULT_BASE_URL
# WeChat answers in tens of milliseconds; a few seconds means it is in trouble.
DEFAULT_TIMEOUT = aiohttp.ClientTimeout(total=5, connect=2, sock_connect=2, sock_read=4)
# The provider's policy (full jitter, bounded), with WeChat's shorter waits.
WECHAT_RETRY = RetryPolicy(attempts=3, initial=0.2, max_wait=2.0)
NO_RETRY = RetryPolicy(attempts=1)

# errcode -1: "system busy, retry later" in every WeChat API.
SYSTEM_BUSY = -1


class WeChatApiError(Exception):
    """WeChat answered with a non-zero ``errcode``. Internal: mapped to `mpchat.errors`."""

    def __init__(self, errcode: int, errmsg: str) -> None:
        self.errcode = errcode
        self.errmsg = errmsg
        super().__init__(f"errcode={errcode} errmsg={errmsg}")


async def call_json(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    what: str,
    params: Mapping[str, str] | None = None,
    json: Mapping[str, Any] | None = None,
    client_timeout: aiohttp.ClientTimeout = DEFAULT_TIMEOUT,
) -> dict[str, Any]:
    """The decoded body; `WeChatApiError` on an errcode, `ServiceUnavailable` otherwise."""
    try:
        async with session.request(
            method, url, params=params, json=json, timeout=client_timeout
        ) as response:
            if response.status >= 400:
                log.warning("wechat %s: HTTP %s", what, response.status)
                raise ServiceUnavailable()
            # WeChat often labels JSON as text/plain, so do not trust the content type.
            body = await response.json(content_type=None)
    except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
        log.warning("wechat %s unreachable: %s", what, type(exc).__name__)
        raise ServiceUnavailable() from None
    if not isinstance(body, dict):
        log.warning("wechat %s: body is not an object", what)
        raise ServiceUnavailable()
    errcode = body.get("errcode") or 0
    if errcode != 0:
        raise WeChatApiError(int(errcode), str(body.get("errmsg", "")))
    return body


class Endpoint:
    """One WeChat API path behind an injected session: the base of every client here."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        path: str,
        *,
        what: str,
        base_url: str,
        timeout: aiohttp.ClientTimeout,
        retry: RetryPolicy = NO_RETRY,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._session = session
        self._url = base_url.rstrip("/") + path
        self._what = what
        self._timeout = timeout
        self._retry = retry
        self._sleep = sleep

    async def _call(
        self,
        method: str,
        *,
        params: Mapping[str, str] | None = None,
        json: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        return await call_json(
            self._session, method, self._url, what=self._what, params=params, json=json,
            client_timeout=self._timeout,
        )

    async def _retrying(self, attempt: Callable[[], Awaitable[T]]) -> T:
        """``attempt()`` under the retry policy.

        Retried: errcode -1 and `ServiceUnavailable` (network, timeout, HTTP error, an
        answer without the expected fields). Any other errcode is a configuration or
        request error: logged with its errmsg and raised as `ServiceUnavailable` at once.
        Attempts exhausted: `ServiceUnavailable(retry_after=1)`.
        """
        attempts = max(1, self._retry.attempts)
        for n in range(1, attempts + 1):
            try:
                return await attempt()
            except WeChatApiError as exc:
                if exc.errcode != SYSTEM_BUSY:
                    log.error(
                        "wechat %s failed: errcode=%s errmsg=%s", self._what, exc.errcode,
                        exc.errmsg,
                    )
                    raise ServiceUnavailable() from None
            except ServiceUnavailable:
                pass
            if n < attempts:
                await self._sleep(self._retry.wait(n, None))
        raise ServiceUnavailable(retry_after=1)
