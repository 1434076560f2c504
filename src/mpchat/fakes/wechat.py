"""A fake WeChat API: ``jscode2session``, ``stable_token`` and ``msg_sec_check`` v2.

For tests (``async with FakeWeChat() as fake:`` then ``fake.base_url``), benchmarks and
offline demos (``python -m mpchat.fakes.wechat --port 9200`` or ``mpchat fake-wechat``).

Knobs, all attributes or methods of `FakeWeChat` (see ``docs/wechat.md``):

* login by code: ``"invalid"`` -> 40029, ``"used"`` -> 40163, ``"limit"`` -> 45011,
  ``"busy"`` -> -1; any other code logs in as an openid derived from it (codes starting
  with ``"union"`` also get a unionid).
* tokens: ``token_lifetime``; ``expire_token(t)`` (answers 40001 for it, and the next
  stable_token issues a new one); ``revoke_token(t)`` (answers 40001 for it, but a
  non-forced stable_token keeps returning it until ``force_refresh=true``).
* verdicts: ``verdict_words`` maps a word to ``(suggest, label)``; the worst match wins.
* ``latency[endpoint]`` seconds; ``fail(endpoint, times, errcode=-1)``;
  ``hang(endpoint, times)`` (never answers until the fake closes).
* ``stats``: calls per endpoint, forced refreshes, max concurrent calls, contents seen.

Content over 2,500 characters is refused with errcode 47001 (data format error): WeChat
does not document a dedicated code, and the point is to prove the client splits.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import logging
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

__all__ = ["DEFAULT_VERDICT_WORDS", "FakeWeChat", "FakeWeChatStats", "main", "run"]

log = logging.getLogger("mpchat.fakes.wechat")

ENDPOINTS = ("jscode2session", "stable_token", "msg_sec_check")
MAX_CONTENT_CHARS = 2500
DEFAULT_VERDICT_WORDS: dict[str, tuple[str, int]] = {
    "risky-word": ("risky", 20001),
    "违规": ("risky", 20002),
    "review-word": ("review", 20006),
}
_LOGIN_ERRORS: dict[str, tuple[int, str]] = {
    "invalid": (40029, "invalid code"),
    "used": (40163, "code been used"),
    "limit": (45011, "api minute-quota reach limit mustslower retry next minute"),
    "busy": (-1, "system error"),
}
_RANK = {"pass": 0, "review": 1, "risky": 2}


@dataclass(slots=True)
class FakeWeChatStats:
    calls: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ENDPOINTS, 0))
    force_refreshes: int = 0
    in_flight: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ENDPOINTS, 0))
    max_in_flight: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ENDPOINTS, 0))
    contents: list[str] = field(default_factory=list)
    tokens_seen: list[str | None] = field(default_factory=list)

    @property
    def stable_token_calls(self) -> int:
        return self.calls["stable_token"]

    @property
    def sec_checks(self) -> int:
        return self.calls["msg_sec_check"]

    def public(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "force_refreshes": self.force_refreshes,
            "max_in_flight": self.max_in_flight,
        }


@dataclass(slots=True)
class _IssuedToken:
    value: str
    expires_at: float


class FakeWeChat:
    def __init__(
        self,
        *,
        appid: str | None = None,
        secret: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        token_lifetime: float = 7200.0,
        latency: dict[str, float] | None = None,
        verdict_words: dict[str, tuple[str, int]] | None = None,
        require_token: bool = True,
    ) -> None:
        # appid/secret None: any credentials are accepted (demo mode).
        self.appid, self.secret = appid, secret
        self.token_lifetime = token_lifetime
        self.latency: dict[str, float] = dict(latency or {})
        self.verdict_words = dict(DEFAULT_VERDICT_WORDS if verdict_words is None else verdict_words)
        # False: msg_sec_check also answers without access_token (Cloud Run open API).
        self.require_token = require_token
        self.keep_contents = True
        self.stats = FakeWeChatStats()
        self._failures: dict[str, list[int | None]] = {e: [] for e in ENDPOINTS}
        self._current: _IssuedToken | None = None
        self._valid: dict[str, float] = {}  # token -> expires_at
        self._rejected: set[str] = set()
        self._host, self._port = host, port
        self._runner: web.AppRunner | None = None
        self._closing = asyncio.Event()
        self.app = web.Application()
        self.app.router.add_get("/sns/jscode2session", self._jscode2session)
        self.app.router.add_post("/cgi-bin/stable_token", self._stable_token)
        self.app.router.add_post("/wxa/msg_sec_check", self._msg_sec_check)
        self.app.router.add_get("/_control/stats", self._get_stats)
        self.app.router.add_post("/_control/reset", self._reset)

    # -- lifecycle -------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://{self._host}:{self.port}"

    @property
    def port(self) -> int:
        assert self._runner is not None, "not started"
        return int(self._runner.addresses[0][1])

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        await web.TCPSite(self._runner, self._host, self._port).start()

    async def aclose(self) -> None:
        self._closing.set()  # releases hung handlers
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeWeChat:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- knobs -----------------------------------------------------------------------

    def fail(self, endpoint: str, times: int = 1, *, errcode: int = -1) -> None:
        """The next ``times`` calls to ``endpoint`` answer ``errcode``."""
        self._failures[endpoint].extend([errcode] * times)

    def hang(self, endpoint: str, times: int = 1) -> None:
        """The next ``times`` calls to ``endpoint`` never answer (until the fake closes)."""
        self._failures[endpoint].extend([None] * times)

    def expire_token(self, token: str) -> None:
        """WeChat now answers 40001 for ``token``; stable_token issues a new one."""
        self._valid.pop(token, None)
        self._rejected.add(token)
        if self._current is not None and self._current.value == token:
            self._current = None

    def revoke_token(self, token: str) -> None:
        """APIs answer 40001 for ``token`` but non-forced stable_token still returns it."""
        self._rejected.add(token)

    @property
    def current_token(self) -> str | None:
        return self._current.value if self._current is not None else None

    def reset(self) -> None:
        self.stats = FakeWeChatStats()
        for scripted in self._failures.values():
            scripted.clear()

    # -- endpoints -------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _call(self, endpoint: str) -> AsyncIterator[web.Response | None]:
        """Count the call, apply latency; yields the scripted failure answer, if any."""
        self.stats.calls[endpoint] += 1
        self.stats.in_flight[endpoint] += 1
        self.stats.max_in_flight[endpoint] = max(
            self.stats.max_in_flight[endpoint], self.stats.in_flight[endpoint]
        )
        try:
            if self.latency.get(endpoint):
                await asyncio.sleep(self.latency[endpoint])
            scripted = self._failures[endpoint]
            if not scripted:
                yield None
                return
            errcode = scripted.pop(0)
            if errcode is None:  # hang: hold the connection until the fake closes
                await self._closing.wait()
                errcode = -1
            yield _error(errcode, "scripted failure")
        finally:
            self.stats.in_flight[endpoint] -= 1

    async def _jscode2session(self, request: web.Request) -> web.Response:
        async with self._call("jscode2session") as failed:
            if failed is not None:
                return failed
            q = request.query
            if q.get("grant_type") != "authorization_code" or not q.get("js_code"):
                return _error(40002, "invalid grant_type")
            if (bad := self._check_credentials(q.get("appid"), q.get("secret"))) is not None:
                return bad
            code = q["js_code"]
            if code in _LOGIN_ERRORS:
                return _error(*_LOGIN_ERRORS[code])
            digest = hashlib.sha256(code.encode()).hexdigest()
            body: dict[str, Any] = {
                "openid": "o" + digest[:27],
                "session_key": secrets.token_urlsafe(16),
            }
            if code.startswith("union"):
                body["unionid"] = "u" + digest[27:54]
            return _json(body)

    async def _stable_token(self, request: web.Request) -> web.Response:
        async with self._call("stable_token") as failed:
            if failed is not None:
                return failed
            body = await _body(request)
            if body is None or body.get("grant_type") != "client_credential":
                return _error(47001, "data format error")
            bad = self._check_credentials(body.get("appid"), body.get("secret"))
            if bad is not None:
                return bad
            now = time.time()
            current = self._current
            if body.get("force_refresh") is True:
                self.stats.force_refreshes += 1
                if current is not None:  # forcing invalidates the previous token at once
                    self._valid.pop(current.value, None)
                current = None
            elif current is not None and current.expires_at <= now:
                current = None
            if current is None:
                current = _IssuedToken("fake-" + secrets.token_hex(12), now + self.token_lifetime)
                self._current = current
                self._valid[current.value] = current.expires_at
            return _json(
                {"access_token": current.value, "expires_in": max(1, int(current.expires_at - now))}
            )

    async def _msg_sec_check(self, request: web.Request) -> web.Response:
        async with self._call("msg_sec_check") as failed:
            token = request.query.get("access_token")
            self.stats.tokens_seen.append(token)
            if token is None and self.require_token:
                return _error(41001, "access_token missing")
            if token is not None:
                if token in self._rejected or token not in self._valid:
                    return _error(40001, "invalid credential, access_token is invalid")
                if self._valid[token] <= time.time():
                    return _error(42001, "access_token expired")
            if failed is not None:
                return failed
            body = await _body(request)
            if body is None:
                return _error(47001, "data format error")
            content, scene, openid = body.get("content"), body.get("scene"), body.get("openid")
            if (
                body.get("version") != 2
                or scene not in (1, 2, 3, 4)
                or not isinstance(openid, str)
                or not openid
                or not isinstance(content, str)
            ):
                return _error(47001, "data format error")
            if not content:
                return _error(44002, "empty post data")
            if len(content) > MAX_CONTENT_CHARS:
                return _error(47001, "data format error: content too long")
            if self.keep_contents:
                self.stats.contents.append(content)
            suggest, label = self._judge(content)
            trace_id = str(uuid.uuid4())
            return _json(
                {
                    "errcode": 0,
                    "errmsg": "ok",
                    "result": {"suggest": suggest, "label": label},
                    "detail": [
                        {
                            "strategy": "content_model",
                            "errcode": 0,
                            "suggest": suggest,
                            "label": label,
                            "prob": 90,
                        }
                    ],
                    "trace_id": trace_id,
                }
            )

    def _judge(self, content: str) -> tuple[str, int]:
        verdict = ("pass", 100)
        for word, (suggest, label) in self.verdict_words.items():
            if word in content and _RANK[suggest] > _RANK[verdict[0]]:
                verdict = (suggest, label)
        return verdict

    def _check_credentials(self, appid: Any, secret: Any) -> web.Response | None:
        if not appid or (self.appid is not None and appid != self.appid):
            return _error(40013, "invalid appid")
        if not secret or (self.secret is not None and secret != self.secret):
            return _error(40125, "invalid appsecret")
        return None

    async def _get_stats(self, _request: web.Request) -> web.Response:
        return _json(self.stats.public())

    async def _reset(self, _request: web.Request) -> web.Response:
        self.reset()
        return _json({"ok": True})


async def _body(request: web.Request) -> dict[str, Any] | None:
    try:
        body = await request.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _json(body: dict[str, Any]) -> web.Response:
    # WeChat labels some JSON answers text/plain; clients must not depend on the type.
    return web.json_response(body, content_type="text/plain")


def _error(errcode: int, errmsg: str) -> web.Response:
    return _json({"errcode": errcode, "errmsg": f"{errmsg} rid: {secrets.token_hex(4)}"})


async def run(
    host: str = "127.0.0.1",
    port: int = 9200,
    *,
    token_lifetime: float = 7200.0,
    require_token: bool = True,
) -> None:
    """Serve until cancelled."""
    fake = FakeWeChat(
        host=host, port=port, token_lifetime=token_lifetime, require_token=require_token
    )
    fake.keep_contents = False  # a long-running server must not grow without bound
    await fake.start()
    log.info("fake WeChat listening on %s", fake.base_url)
    try:
        await asyncio.Event().wait()
    finally:
        await fake.aclose()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mpchat.fakes.wechat", description="fake WeChat API")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9200)
    parser.add_argument("--token-lifetime", type=float, default=7200.0)
    parser.add_argument(
        "--credential-free", action="store_true", help="accept msg_sec_check without a token"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(
            run(
                args.host,
                args.port,
                token_lifetime=args.token_lifetime,
                require_token=not args.credential_free,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
