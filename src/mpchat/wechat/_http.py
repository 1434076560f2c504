"""One WeChat call: JSON in, JSON out, ``errcode`` turned into an exception.

Failures are logged by type only: aiohttp puts the request URL in some exception
messages, and our URLs carry the app secret or the access token in the query.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from mpchat.errors import ServiceUnavailable

__all__ = [
    "DEFAULT_BACKOFF",
    "DEFAULT_BASE_URL",
    "DEFAULT_TIMEOUT",
    "Backoff",
    "WeChatApiError",
    "call_json",
]

log = logging.getLogger("mpchat.wechat")

DEFAULT_BASE_URL = "https://api.weixin.qq.com"
# WeChat answers in tens of milliseconds; a few seconds means it is in trouble.
DEFAULT_TIMEOUT = aiohttp.ClientTimeout(total=5, connect=2, sock_connect=2, sock_read=4)

# errcode -1: "system busy, retry later" in every WeChat API.
SYSTEM_BUSY = -1


class WeChatApiError(Exception):
    """WeChat answered with a non-zero ``errcode``. Internal: mapped to `mpchat.errors`."""

    def __init__(self, errcode: int, errmsg: str) -> None:
        self.errcode = errcode
        self.errmsg = errmsg
        super().__init__(f"errcode={errcode} errmsg={errmsg}")


@dataclass(frozen=True, slots=True)
class Backoff:
    """Bounded exponential backoff with full jitter for ``-1`` and network failures."""

    attempts: int = 3
    initial: float = 0.2
    max_wait: float = 2.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        return random.random() * min(self.max_wait, self.initial * 2 ** (attempt - 1))


DEFAULT_BACKOFF = Backoff()


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
