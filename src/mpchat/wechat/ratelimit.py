"""Keep msgSecCheck under WeChat's app-wide quota (4,000 calls a minute) by waiting.

A sliding window: a call may go when fewer than ``limit`` calls went in the last
``period`` seconds; otherwise it sleeps until the oldest one leaves the window. It never
fails: the quota is WeChat's, and a short wait is better than an unchecked message.

* `LocalRateLimiter`: per process. With N instances, give each ``limit // N``.
* `RedisRateLimiter`: one window for every instance (a sorted set, timed by the Redis
  server's clock); falls back to a local window while Redis is unreachable.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError

__all__ = ["WECHAT_SEC_CHECK_PER_MINUTE", "LocalRateLimiter", "RateLimiter", "RedisRateLimiter"]

log = logging.getLogger("mpchat.wechat.ratelimit")

WECHAT_SEC_CHECK_PER_MINUTE = 4000

# Returns 0 when a slot was taken, else the milliseconds until the oldest call expires.
_SLIDING_WINDOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local period = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - period)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], period)
  return 0
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return math.max(1, tonumber(oldest[2]) + period - now)
"""


class RateLimiter(Protocol):
    async def acquire(self) -> None:
        """Return when one more call is allowed; wait rather than fail."""
        ...


class LocalRateLimiter:
    def __init__(
        self,
        *,
        limit: int = WECHAT_SEC_CHECK_PER_MINUTE,
        period: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if limit < 1 or period <= 0:
            raise ValueError("limit must be >= 1 and period > 0")
        self.limit = limit
        self.period = period
        self._clock = clock
        self._sent: deque[float] = deque()
        # asyncio.Lock wakes waiters in order, so the queue is first come, first served.
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        async with self._lock:
            while True:
                now = self._clock()
                while self._sent and self._sent[0] <= now - self.period:
                    self._sent.popleft()
                if len(self._sent) < self.limit:
                    self._sent.append(now)
                    return
                await asyncio.sleep(self._sent[0] + self.period - now)


class RedisRateLimiter:
    def __init__(
        self,
        redis: Redis,
        *,
        key: str = "mpchat:wechat:msg_sec_check:window",
        limit: int = WECHAT_SEC_CHECK_PER_MINUTE,
        period: float = 60.0,
    ) -> None:
        self._redis = redis
        self._key = key
        self.limit = limit
        self.period = period
        self._fallback = LocalRateLimiter(limit=limit, period=period)
        self._degraded = False  # log the switch to the fallback once, not per call

    async def acquire(self) -> None:
        while True:
            try:
                wait_ms = await self._redis.eval(
                    _SLIDING_WINDOW,
                    1,
                    self._key,
                    self.limit,
                    int(self.period * 1000),
                    secrets.token_hex(8),
                )
            except RedisError as exc:
                if not self._degraded:
                    log.warning("redis unavailable, limiting sec checks in process: %s", exc)
                    self._degraded = True
                await self._fallback.acquire()
                return
            if self._degraded:
                log.info("redis is back, sec checks share one window again")
                self._degraded = False
            if int(wait_ms) == 0:
                return
            await asyncio.sleep(int(wait_ms) / 1000)
