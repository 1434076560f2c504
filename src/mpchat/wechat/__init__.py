"""WeChat server API client: login, the access token, text content security.

Every call goes through an injected ``aiohttp.ClientSession`` and a configurable base
URL (tests point it at `mpchat.fakes.wechat`); retries follow the project's
`RetryPolicy`, the msgSecCheck quota is the project's sliding-window limiter, and Redis
is reached through `RedisGuard`. See ``docs/wechat.md``.
"""

from mpchat.wechat._http import DEFAULT_BASE_URL, WECHAT_RETRY, AppCredentials
from mpchat.wechat.access_token import AccessTokenProvider
from mpchat.wechat.login import LoginClient, WxSession
from mpchat.wechat.quota import SEC_CHECK_PER_MINUTE, CallQuota
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
    "SEC_CHECK_PER_MINUTE",
    "WECHAT_RETRY",
    "AccessTokenProvider",
    "AppCredentials",
    "CallQuota",
    "ContentSecurity",
    "LoginClient",
    "Scene",
    "Suggest",
    "Verdict",
    "WxSession",
]
