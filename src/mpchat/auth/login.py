"""Login: turn a `wx.login` code (or the Cloud Run header) into a user and a token.

WeChat Cloud Run's gateway injects ``X-WX-OPENID`` on `wx.cloud.callContainer` calls, but a
service's public domain passes any header a client sends. So the header is believed only as
``MPCHAT_CLOUDRUN_HEADER_AUTH`` says, which the operator sets per service: ``off`` (a service
with public access: bearer tokens only, no login here), ``login`` (a service without public
access: the header logs in and gets a token) or ``always`` (no public access, no tokens: the
header identifies every call). docs/deployment.md has the layout.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from mpchat.auth.tokens import Claims, TokenSigner
from mpchat.errors import Blocked, InvalidRequest, Unauthorized
from mpchat.settings import AuthMode, CloudrunHeaderAuth
from mpchat.storage import users

__all__ = ["Authenticator", "CodeExchange", "LoginResult", "dev_openid"]

_SESSION_RECHECK = 5.0
_SESSION_CACHE_SIZE = 50_000
_MAX_OPENID = 128  # WeChat's are 28 characters; anything much longer is not one

# code -> openid; raises InvalidCode / RateLimited / ServiceUnavailable (wechat mode).
CodeExchange = Callable[[str], Awaitable[str]]


def dev_openid(code: str) -> str:
    """A stable test identity per code, never mistakable for a real openid."""
    return "dev_" + hashlib.sha256(code.encode()).hexdigest()[:24]


@dataclass(frozen=True, slots=True)
class LoginResult:
    token: str
    expires_in: int


class Authenticator:
    def __init__(
        self,
        *,
        engine: AsyncEngine,
        signer: TokenSigner,
        mode: AuthMode,
        cloud_header: CloudrunHeaderAuth = "off",
        exchange: CodeExchange | None = None,
    ) -> None:
        if mode == "wechat" and exchange is None:
            raise ValueError("wechat login needs a code exchange")
        self._engine = engine
        self._signer = signer
        self.mode = mode
        self._cloud_header: CloudrunHeaderAuth = cloud_header if mode == "cloudrun" else "off"
        self._exchange = exchange
        # session id -> (user id, checked at): a live session is re-read from the database
        # at most every _SESSION_RECHECK seconds. Logout and data deletion on this instance
        # take effect at once; on other instances within that many seconds.
        self._live: dict[str, tuple[str, float]] = {}

    @property
    def header_identifies_calls(self) -> bool:
        """Every call is the user ``X-WX-OPENID`` names (``always``): no tokens at all."""
        return self._cloud_header == "always"

    def login_openid(self, header: str | None) -> str | None:
        """The platform's ``X-WX-OPENID`` when this service believes it at login, else None.

        None for a header sent where it is not believed (``off``): whoever sent it to a public
        domain could have written any openid there.
        """
        if self._cloud_header == "off" or not header or len(header) > _MAX_OPENID:
            return None
        return header

    async def login(self, *, code: str | None, cloud_openid: str | None = None) -> LoginResult:
        """A session token; in cloudrun mode for ``cloud_openid``, from `login_openid` only."""
        if self.mode == "cloudrun":
            if self._cloud_header == "off":
                raise Unauthorized("请通过 wx.cloud.callContainer 登录")
            if not cloud_openid:
                raise Unauthorized()
            openid = cloud_openid
        else:
            if not code or not code.strip():
                raise InvalidRequest("缺少 code")
            if self.mode == "dev":
                openid = dev_openid(code)
            else:
                assert self._exchange is not None  # checked in __init__
                openid = await self._exchange(code)
        user_id = await users.get_or_create_user(self._engine, openid=openid)
        session_id, _ = await users.create_session(
            self._engine, user_id=user_id, ttl=self._signer.ttl
        )
        token = self._signer.issue(user_id=user_id, session_id=session_id)
        return LoginResult(token, self._signer.ttl)

    async def authenticate(self, token: str | None) -> Claims:
        """The caller's claims from a bearer token; `Unauthorized` otherwise."""
        if not token:
            raise Unauthorized()
        claims = self._signer.verify(token)
        now = time.monotonic()
        cached = self._live.get(claims.session_id)
        fresh = cached is not None and now - cached[1] < _SESSION_RECHECK
        if fresh and cached is not None and cached[0] == claims.user_id:
            return claims
        state = await users.session_state(
            self._engine, session_id=claims.session_id, user_id=claims.user_id
        )
        if state != "live":  # a blocked user's sessions are never cached: checked each call
            self._live.pop(claims.session_id, None)
            raise Blocked() if state == "blocked" else Unauthorized()
        if len(self._live) >= _SESSION_CACHE_SIZE:
            self._live.clear()  # crude but bounded; a miss only costs one query
        self._live[claims.session_id] = (claims.user_id, now)
        return claims

    def forget_user(self, user_id: str) -> None:
        """Drop cached sessions of a user whose sessions were deleted."""
        for sid in [sid for sid, (uid, _) in self._live.items() if uid == user_id]:
            del self._live[sid]

    async def authenticate_cloudrun(self, openid: str | None) -> Claims:
        """The caller ``X-WX-OPENID`` names (``always`` only: the platform is the sole way in)."""
        if not self.header_identifies_calls:
            raise Unauthorized()  # a header this service does not believe names nobody
        if not openid or len(openid) > _MAX_OPENID:
            raise Unauthorized()
        user_id, blocked = await users.user_for_openid(self._engine, openid=openid)
        if blocked:
            raise Blocked()
        return Claims(user_id, session_id="")

    async def logout(self, claims: Claims) -> None:
        await users.delete_session(self._engine, session_id=claims.session_id)
        self._live.pop(claims.session_id, None)
