"""The app's access token from ``POST /cgi-bin/stable_token``, cached and renewed early.

* In memory: one token per provider, renewed ``refresh_margin`` seconds before it expires.
* Single-flight: concurrent callers during a renewal await one shared task, so a burst of
  requests on an expired token costs WeChat one call.
* With Redis: the token lives in a hash shared by every instance, and a lock with a TTL
  (``SET NX PX``) lets one instance renew while the others poll for the new value.
  A Redis failure is logged and the provider carries on in memory.
* ``invalidate(token)`` after errcode 40001/42001: the next ``get()`` fetches with
  ``force_refresh=false``; only if WeChat hands back the same rejected token is the
  fetch repeated with ``force_refresh=true`` (WeChat allows 20 of those a day).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import deque
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp
from redis.asyncio import Redis
from redis.exceptions import RedisError

from mpchat.errors import ServiceUnavailable
from mpchat.wechat._http import (
    DEFAULT_BACKOFF,
    DEFAULT_BASE_URL,
    DEFAULT_TIMEOUT,
    SYSTEM_BUSY,
    Backoff,
    WeChatApiError,
    call_json,
)

__all__ = ["AccessTokenProvider"]

log = logging.getLogger("mpchat.wechat.token")

# Delete KEYS[1] only if it still holds what we put there (our lock id, or the stale token).
_DEL_IF_FIELD = """
if redis.call('HGET', KEYS[1], 'v') == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
_DEL_IF_VALUE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(frozen=True, slots=True)
class _Token:
    value: str
    expires_at: float
    refresh_at: float


class AccessTokenProvider:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        appid: str,
        secret: str,
        base_url: str = DEFAULT_BASE_URL,
        redis: Redis | None = None,
        key_prefix: str = "mpchat:wechat",
        refresh_margin: float = 300.0,
        lock_ttl: float = 10.0,
        poll_interval: float = 0.05,
        backoff: Backoff = DEFAULT_BACKOFF,
        timeout: aiohttp.ClientTimeout = DEFAULT_TIMEOUT,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._session = session
        self._appid = appid
        self._secret = secret
        self._url = base_url.rstrip("/") + "/cgi-bin/stable_token"
        self._redis = redis
        self._token_key = f"{key_prefix}:{appid}:access_token"
        self._lock_key = f"{key_prefix}:{appid}:access_token:lock"
        self._stale_key = f"{key_prefix}:{appid}:access_token:stale"
        self._margin = refresh_margin
        self._lock_ttl = lock_ttl
        self._poll = poll_interval
        self._backoff = backoff
        self._timeout = timeout
        self._clock = clock
        self._cached: _Token | None = None
        self._stale: deque[str] = deque(maxlen=8)
        self._inflight: asyncio.Task[_Token] | None = None
        self._closed = False
        self.requests = 0  # stable_token calls made by this instance, for logs and tests

    def __repr__(self) -> str:
        return f"AccessTokenProvider(appid={self._appid!r}, state={self.state!r})"

    @property
    def state(self) -> Literal["empty", "fresh", "due", "closed"]:
        if self._closed:
            return "closed"
        if self._cached is None:
            return "empty"
        return "fresh" if self._clock() < self._cached.refresh_at else "due"

    async def get(self) -> str:
        if self._closed:
            raise RuntimeError("AccessTokenProvider is closed")
        cached = self._cached
        if cached is not None and self._clock() < cached.refresh_at:
            return cached.value
        if self._inflight is None or self._inflight.done():
            self._inflight = asyncio.create_task(self._renew())
            self._inflight.add_done_callback(_retrieve)
        # shield: a caller that gives up must not cancel the renewal the others wait for.
        return (await asyncio.shield(self._inflight)).value

    async def invalidate(self, stale_token: str) -> None:
        """WeChat said 40001/42001 for ``stale_token``: stop handing it out."""
        if stale_token not in self._stale:
            self._stale.append(stale_token)
        if self._cached is not None and self._cached.value == stale_token:
            self._cached = None
        if self._redis is not None:
            try:
                await self._redis.set(self._stale_key, stale_token, ex=600)
                await self._redis.eval(_DEL_IF_FIELD, 1, self._token_key, stale_token)
            except RedisError as exc:
                log.warning("redis unavailable while invalidating the token: %s", exc)

    async def aclose(self) -> None:
        self._closed = True
        task, self._inflight = self._inflight, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # -- renewal ---------------------------------------------------------------------

    async def _renew(self) -> _Token:
        token: _Token | None = None
        if self._redis is not None:
            try:
                token = await self._renew_shared(self._redis)
            except RedisError as exc:
                log.warning("redis unavailable, renewing the token in memory: %s", exc)
        if token is None:
            token = await self._fetch(self._stale)
        self._cached = token
        return token

    async def _renew_shared(self, redis: Redis) -> _Token | None:
        """The shared token, renewed by whichever instance takes the lock; ``None`` when
        the lock holder looks stuck, and the caller renews on its own."""
        give_up_at = time.monotonic() + 2 * self._lock_ttl
        while True:
            stale = set(self._stale)
            shared_stale = await redis.get(self._stale_key)
            if shared_stale is not None:
                stale.add(_text(shared_stale))
            shared = await self._read_shared(redis)
            if shared is not None and self._usable(shared, stale):
                return shared
            lock_id = secrets.token_hex(8)
            if await redis.set(self._lock_key, lock_id, nx=True, px=int(self._lock_ttl * 1000)):
                try:
                    shared = await self._read_shared(redis)
                    if shared is not None and self._usable(shared, stale):
                        return shared
                    token = await self._fetch(stale)
                    try:
                        await self._write_shared(redis, token)
                    except RedisError as exc:
                        # The token is good; only sharing it failed. Keep it, do not refetch.
                        log.warning("redis unavailable, token kept in memory only: %s", exc)
                    return token
                finally:
                    with contextlib.suppress(RedisError):
                        await redis.eval(_DEL_IF_VALUE, 1, self._lock_key, lock_id)
            if time.monotonic() > give_up_at:
                # The holder is stuck beyond its lock's life: renew without it.
                log.warning("token renewal lock held too long; renewing without it")
                return None
            await asyncio.sleep(self._poll)

    def _usable(self, token: _Token, stale: Collection[str]) -> bool:
        return token.value not in stale and self._clock() < token.refresh_at

    async def _read_shared(self, redis: Redis) -> _Token | None:
        fields: dict[Any, Any] = await redis.hgetall(self._token_key)
        if not fields:
            return None
        try:
            data = {_text(k): _text(v) for k, v in fields.items()}
            return _Token(data["v"], float(data["exp"]), float(data["ref"]))
        except (KeyError, ValueError):
            return None

    async def _write_shared(self, redis: Redis, token: _Token) -> None:
        ttl_ms = int((token.expires_at - self._clock()) * 1000)
        if ttl_ms <= 0:
            return
        async with redis.pipeline(transaction=True) as pipe:
            pipe.hset(
                self._token_key,
                mapping={"v": token.value, "exp": token.expires_at, "ref": token.refresh_at},
            )
            pipe.pexpire(self._token_key, ttl_ms)
            await pipe.execute()

    async def _fetch(self, stale: Collection[str]) -> _Token:
        token = await self._request(force_refresh=False)
        if token.value in stale:
            # WeChat still considers it valid although an API rejected it: force a new one.
            log.warning("stable_token returned the rejected token; forcing a refresh")
            token = await self._request(force_refresh=True)
        return token

    async def _request(self, *, force_refresh: bool) -> _Token:
        payload = {
            "grant_type": "client_credential",
            "appid": self._appid,
            "secret": self._secret,
            "force_refresh": force_refresh,
        }
        attempts = max(1, self._backoff.attempts)
        for attempt in range(1, attempts + 1):
            self.requests += 1
            try:
                body = await call_json(
                    self._session,
                    "POST",
                    self._url,
                    what="stable_token",
                    json=payload,
                    client_timeout=self._timeout,
                )
                return self._parse(body)
            except WeChatApiError as exc:
                if exc.errcode != SYSTEM_BUSY:
                    log.error(
                        "wechat stable_token failed: errcode=%s errmsg=%s", exc.errcode, exc.errmsg
                    )
                    raise ServiceUnavailable() from None
            except ServiceUnavailable:
                pass  # network trouble: same bounded backoff as errcode -1
            if attempt < attempts:
                await asyncio.sleep(self._backoff.delay(attempt))
        raise ServiceUnavailable(retry_after=1)

    def _parse(self, body: dict[str, Any]) -> _Token:
        value = body.get("access_token")
        expires_in = body.get("expires_in")
        if not isinstance(value, str) or not value or not isinstance(expires_in, int | float):
            log.error("wechat stable_token: answer without access_token/expires_in")
            raise ServiceUnavailable()
        now = self._clock()
        # A token handed back near its end of life (stable_token returns the current one)
        # is used for half of what is left rather than refetched at once.
        margin = min(self._margin, expires_in / 2)
        return _Token(value, now + expires_in, now + expires_in - margin)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _retrieve(task: asyncio.Task[_Token]) -> None:
    # Every waiter may have left; mark the outcome as seen so asyncio does not complain.
    if not task.cancelled():
        task.exception()
