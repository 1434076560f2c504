"""Login: exchange a ``wx.login`` code for the user's openid at ``/sns/jscode2session``.

errcode mapping (``docs/wechat.md``)::

    40029 invalid code, 40163 code already used  -> InvalidCode
    45011 per-user frequency limit               -> RateLimited(retry_after=60)
    -1    system busy                            -> ServiceUnavailable(retry_after=1)
    anything else, network failure, timeout      -> ServiceUnavailable

No retries: a code is single-use, and the mini program asks for a fresh one anyway.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import aiohttp

from mpchat.errors import InvalidCode, RateLimited, ServiceUnavailable
from mpchat.wechat._http import (
    DEFAULT_TIMEOUT,
    SYSTEM_BUSY,
    AppCredentials,
    Endpoint,
    WeChatApiError,
)

__all__ = ["LOGIN_RATE_LIMIT_RETRY_AFTER", "LoginClient", "WxSession"]

log = logging.getLogger("mpchat.wechat.login")

_INVALID_CODE = frozenset({40029, 40163})
_FREQUENCY_LIMIT = 45011
# WeChat's login limit is per user per minute, so a minute is the honest wait.
LOGIN_RATE_LIMIT_RETRY_AFTER = 60.0


@dataclass(frozen=True, slots=True)
class WxSession:
    openid: str
    unionid: str | None
    # Never leaves the server; kept out of repr so a stray log line cannot leak it.
    session_key: str = field(repr=False)


class LoginClient(Endpoint):
    """``jscode2session`` through an injected session; stateless apart from configuration."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        app: AppCredentials,
        *,
        timeout: aiohttp.ClientTimeout = DEFAULT_TIMEOUT,
    ) -> None:
        super().__init__(
            session, "/sns/jscode2session", what="jscode2session", base_url=app.base_url,
            timeout=timeout,
        )
        self._appid = app.appid
        self._secret = app.secret

    def __repr__(self) -> str:
        return f"LoginClient(appid={self._appid!r}, url={self._url!r})"

    async def exchange(self, code: str) -> WxSession:
        params = {
            "appid": self._appid,
            "secret": self._secret,
            "js_code": code,
            "grant_type": "authorization_code",
        }
        try:
            body = await self._call("GET", params=params)
        except WeChatApiError as exc:
            raise _map_error(exc) from None
        openid = body.get("openid")
        session_key = body.get("session_key")
        if not isinstance(openid, str) or not openid or not isinstance(session_key, str):
            log.warning("wechat jscode2session: answer without openid/session_key")
            raise ServiceUnavailable()
        unionid = body.get("unionid")
        return WxSession(
            openid=openid,
            unionid=unionid if isinstance(unionid, str) and unionid else None,
            session_key=session_key,
        )

    async def openid(self, code: str) -> str:
        """The ``CodeExchange`` that `mpchat.auth.login.Authenticator` takes."""
        return (await self.exchange(code)).openid


def _map_error(exc: WeChatApiError) -> Exception:
    if exc.errcode in _INVALID_CODE:
        return InvalidCode()
    if exc.errcode == _FREQUENCY_LIMIT:
        return RateLimited(retry_after=LOGIN_RATE_LIMIT_RETRY_AFTER)
    if exc.errcode == SYSTEM_BUSY:
        log.warning("wechat jscode2session busy (errcode -1)")
        return ServiceUnavailable(retry_after=1)
    log.error("wechat jscode2session failed: errcode=%s errmsg=%s", exc.errcode, exc.errmsg)
    return ServiceUnavailable()
