"""WeChat server API client: login, the access token, text content security.

Every call goes through an injected ``aiohttp.ClientSession`` and a configurable base
URL (tests point it at `mpchat.fakes.wechat`). See ``docs/wechat.md``.
"""

from mpchat.wechat._http import DEFAULT_BASE_URL, Backoff
from mpchat.wechat.access_token import AccessTokenProvider
from mpchat.wechat.login import LoginClient, WxSession
from mpchat.wechat.ratelimit import LocalRateLimiter, RateLimiter, RedisRateLimiter
from mpchat.wechat.security import (
    CLOUDRUN_BASE_URL,
    MAX_CONTENT_CHARS,
    ContentSecurity,
    Scene,
    Suggest,
    Verdict,
)

__all__ = [
    "CLOUDRUN_BASE_URL",
    "DEFAULT_BASE_URL",
    "MAX_CONTENT_CHARS",
    "AccessTokenProvider",
    "Backoff",
    "ContentSecurity",
    "LocalRateLimiter",
    "LoginClient",
    "RateLimiter",
    "RedisRateLimiter",
    "Scene",
    "Suggest",
    "Verdict",
    "WxSession",
]
