"""The app's access token from ``POST /cgi-bin/stable_token``, cached and renewed early.

* In memory: one token per provider, renewed ``refresh_margin`` seconds before it expires.
* Single-flight: concurrent callers during a renewal await one shared task, so a burst of
  requests on an expired token costs WeChat one call.
* With Redis: the token lives in a hash shared by every instance, and a lock with a TTL
  (``SET NX PX``) lets one instance renew while the others poll for the new value. Redis is
  used through `RedisGuard` (short timeout, probe interval, degraded report): while it is
  unreachable the provider renews in memory without waiting on it.
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
from typing import TYPE_CHECKING, Any, Literal

import aiohttp

from mpchat.errors import ServiceUnavailable
from mpchat.limits import UNAVAILABLE, RedisGuard
from mpchat.providers.retry import RetryPolicy
from mpchat.wechat._http import DEFAULT_TIMEOUT, WECHAT_RETRY, AppCredentials, Endpoint

if TYPE_CHECKING:
    from redis.asyncio import Redis

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


class AccessTokenProvider(Endpoint):
    def __init__(
        self,
        session: aiohttp.ClientSession,
        app: AppCredentials,
        *,
        redis: Redis | None = None,
        key_prefix: str = "mpchat:wechat",
        refresh_margin: float = 300.0,
        lock_ttl: float = 10.0,
        poll_interval: float = 0.05,
        backoff: RetryPolicy = WECHAT_RETRY,
        timeout: aiohttp.ClientTimeout = DEFAULT_TIMEOUT,
        clock: Callable[[], float] = time.time,
        on_degraded: Callable[[bool], None] | None = None,
    ) -> None:
        super().__init__(
            session, "/cgi-bin/stable_token", what="stable_token", base_url=app.base_url,
            timeout=timeout, retry=backoff,
        )
        appid = self._appid = app.appid
        self._secret = app.secret
        self._guard = RedisGuard(redis, name="wechat access token", on_change=on_degraded)
        self._token_key = f"{key_prefix}:{appid}:access_token"
        self._lock_key = f"{key_prefix}:{appid}:access_token:lock"
        self._stale_key = f"{key_prefix}:{appid}:access_token:stale"
        self._margin = refresh_margin
        self._lock_ttl = lock_ttl
        self._poll = poll_interval
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

    @property
    def degraded(self) -> bool:
        """True while the configured Redis is unreachable and the token is kept in memory."""
        return self._guard.degraded

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

        async def share(redis: Redis) -> None:
            async with redis.pipeline(transaction=False) as pipe:
                pipe.set(self._stale_key, stale_token, ex=600)
                pipe.eval(_DEL_IF_FIELD, 1, self._token_key, stale_token)
                await pipe.execute()

        await self._guard.run(share)

    async def aclose(self) -> None:
        self._closed = True
        task, self._inflight = self._inflight, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # -- renewal ---------------------------------------------------------------------

    async def _renew(self) -> _Token:
        token = await self._renew_shared()
        if token is None:
            token = await self._fetch(self._stale)
        self._cached = token
        return token

    async def _renew_shared(self) -> _Token | None:
        """The shared token, renewed by whichever instance takes the lock; ``None`` without
        a usable Redis, or when the lock holder looks stuck, and the caller renews alone."""
        give_up_at = time.monotonic() + 2 * self._lock_ttl
        while True:
            seen = await self._guard.run(self._read_shared)
            if seen is UNAVAILABLE:
                return None
            shared, stale = seen
            if shared is not None and self._usable(shared, stale):
                return shared
            lock_id = secrets.token_hex(8)
            lock_ms = int(self._lock_ttl * 1000)
            locked = await self._guard.run(
                lambda r: r.set(self._lock_key, lock_id, nx=True, px=lock_ms)  # noqa: B023
            )
            if locked is UNAVAILABLE:
                return None
            if locked:
                try:
                    return await self._renew_locked(stale)
                finally:
                    await self._guard.run(
                        lambda r: r.eval(_DEL_IF_VALUE, 1, self._lock_key, lock_id)  # noqa: B023
                    )
            if time.monotonic() > give_up_at:
                # The holder is stuck beyond its lock's life: renew without it.
                log.warning("token renewal lock held too long; renewing without it")
                return None
            await asyncio.sleep(self._poll)

    async def _renew_locked(self, stale: set[str]) -> _Token:
        # Another instance may have renewed between our read and our lock.
        seen = await self._guard.run(self._read_shared)
        if seen is not UNAVAILABLE:
            shared, stale = seen
            if shared is not None and self._usable(shared, stale):
                return shared
        token = await self._fetch(stale)
        ttl_ms = int((token.expires_at - self._clock()) * 1000)
        if ttl_ms > 0:
            # A failure here only costs the sharing (logged by the guard); keep the token.
            await self._guard.run(lambda r: self._write_shared(r, token, ttl_ms))
        return token

    def _usable(self, token: _Token, stale: Collection[str]) -> bool:
        return token.value not in stale and self._clock() < token.refresh_at

    async def _read_shared(self, redis: Redis) -> tuple[_Token | None, set[str]]:
        """The shared token (if well-formed) and every token known to be stale."""
        async with redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(self._token_key)
            pipe.get(self._stale_key)
            fields, shared_stale = await pipe.execute()
        stale = set(self._stale)
        if shared_stale is not None:
            stale.add(_text(shared_stale))
        return _parse_shared(fields), stale

    async def _write_shared(self, redis: Redis, token: _Token, ttl_ms: int) -> None:
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

        async def attempt() -> _Token:
            self.requests += 1
            return self._parse(await self._call("POST", json=payload))

        return await self._retrying(attempt)

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


def _parse_shared(fields: dict[Any, Any]) -> _Token | None:
    if not fields:
        return None
    try:
        data = {_text(k): _text(v) for k, v in fields.items()}
        return _Token(data["v"], float(data["exp"]), float(data["ref"]))
    except (KeyError, ValueError):
        return None


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _retrieve(task: asyncio.Task[_Token]) -> None:
    # Every waiter may have left; mark the outcome as seen so asyncio does not complain.
    if not task.cancelled():
        task.exception()
