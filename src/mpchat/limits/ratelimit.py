"""Per-user sliding-window rate limit, exact across instances when Redis is given.

The window is a true sliding log: a hit is allowed when fewer than ``limit`` hits were
accepted in the last ``window`` seconds, so ``retry_after`` is exact (the moment the oldest
accepted hit leaves the window).

Why not the ``limits`` library: its Redis storage opens its own connection from a URI
(we inject one shared ``redis.asyncio.Redis`` and degrade to local state on failure), its
sliding-window *counter* is an approximation that cannot give an exact ``retry_after``, and
its moving window needs two round trips for hit + stats. One Lua script here does the whole
decision atomically, on Redis's clock so instances with skewed clocks agree.
"""

from __future__ import annotations

import re
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from redis.asyncio import Redis

from mpchat.limits._redis import UNAVAILABLE, RedisGuard

__all__ = ["Decision", "Rate", "RateLimiter", "parse_rate"]

_UNITS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
_RATE_RE = re.compile(
    r"^\s*(\d+)\s*(?:/|per)\s*(\d+)?\s*(second|minute|hour|day)s?\s*$", re.IGNORECASE
)
# A hit that waits exactly ``retry_after`` must land after the window edge, whatever the
# rounding between clocks: report one extra millisecond.
_MARGIN = 0.001


@dataclass(frozen=True, slots=True)
class Rate:
    limit: int
    window: float  # seconds

    def __str__(self) -> str:
        return f"{self.limit}/{self.window:g}s"


def parse_rate(text: str) -> Rate:
    """Parse ``5/minute``, ``5 per minute``, ``100/hour``, ``10/30 seconds``."""
    m = _RATE_RE.match(text)
    if m is None:
        raise ValueError(f"invalid rate {text!r}, expected e.g. '5/minute'")
    limit = int(m.group(1))
    if limit < 1:
        raise ValueError(f"invalid rate {text!r}: the limit must be at least 1")
    count = int(m.group(2) or 1)
    return Rate(limit=limit, window=float(count * _UNITS[m.group(3).lower()]))


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset_s: float  # seconds until the oldest counted hit leaves the window (0 when none)
    retry_after: float | None  # set when not allowed (peek: when the next hit would be refused)


# KEYS[1] = the user's log (sorted set of hit times in µs); ARGV = limit, window µs,
# consume (1/0), unique member. Returns {allowed, count after, oldest µs or -1, now µs}.
_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local count = redis.call('ZCARD', KEYS[1])
local allowed = 0
if ARGV[3] == '1' and count < limit then
  redis.call('ZADD', KEYS[1], now, ARGV[4])
  redis.call('PEXPIRE', KEYS[1], math.ceil(window / 1000))
  count = count + 1
  allowed = 1
end
local oldest = -1
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if first[2] then oldest = tonumber(first[2]) end
return {allowed, count, oldest, now}
"""


class RateLimiter:
    """Sliding-window limit keyed by user id.

    ``hit`` consumes one unit when allowed; ``peek`` only reports. Neither raises: the caller
    turns a refusal into ``RateLimited(retry_after=decision.retry_after)``.

    ``clock`` times the in-process window and the Redis probe interval (tests inject one); a
    shared decision is timed by the Redis server's clock.
    """

    def __init__(
        self,
        rate: Rate | str = "5/minute",
        *,
        redis: Redis | None = None,
        prefix: str = "mpchat:",
        op_timeout: float = 0.5,
        probe_interval: float = 2.0,
        on_degraded: Callable[[bool], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        name: str = "rate limit",
    ) -> None:
        self.rate = parse_rate(rate) if isinstance(rate, str) else rate
        self._prefix = f"{prefix}rl:"
        self._clock = clock
        self._guard = RedisGuard(
            redis,
            name=name,
            op_timeout=op_timeout,
            probe_interval=probe_interval,
            on_change=on_degraded,
            clock=clock,
        )
        self._script = redis.register_script(_SCRIPT) if redis is not None else None
        self._local: dict[str, deque[float]] = {}
        self._hits_since_sweep = 0

    @property
    def degraded(self) -> bool:
        return self._guard.degraded

    async def hit(self, key: str) -> Decision:
        return await self._decide(key, consume=True)

    async def peek(self, key: str) -> Decision:
        return await self._decide(key, consume=False)

    async def aclose(self) -> None:
        """Nothing to close: the Redis client belongs to the caller."""
        self._local.clear()

    async def _decide(self, key: str, *, consume: bool) -> Decision:
        script = self._script
        if script is not None:
            window_us = int(self.rate.window * 1_000_000)
            args = [self.rate.limit, window_us, 1 if consume else 0, uuid.uuid4().hex]
            reply = await self._guard.run(
                lambda r: script(keys=[self._prefix + key], args=args, client=r)
            )
            if reply is not UNAVAILABLE:
                allowed, count, oldest, now = (int(v) for v in reply)
                oldest_s = None if oldest < 0 else oldest / 1_000_000
                ok = bool(allowed) if consume else count < self.rate.limit
                return self._decision(ok, count, oldest_s, now / 1_000_000)
        return self._decide_locally(key, consume=consume)

    def _decide_locally(self, key: str, *, consume: bool) -> Decision:
        now = self._clock()
        log = self._local.get(key)
        if log is None:
            log = self._local[key] = deque()
        edge = now - self.rate.window
        while log and log[0] <= edge:
            log.popleft()
        allowed = len(log) < self.rate.limit
        if allowed and consume:
            log.append(now)
            self._maybe_sweep(now)
        decision = self._decision(allowed, len(log), log[0] if log else None, now)
        if not log:
            del self._local[key]
        return decision

    def _decision(self, allowed: bool, count: int, oldest: float | None, now: float) -> Decision:
        limit = self.rate.limit
        reset = 0.0 if oldest is None else max(0.0, oldest + self.rate.window - now) + _MARGIN
        retry_after = None
        if not allowed and count >= limit:
            retry_after = reset
        return Decision(
            allowed=allowed,
            limit=limit,
            remaining=max(0, limit - count),
            reset_s=reset,
            retry_after=retry_after,
        )

    def _maybe_sweep(self, now: float) -> None:
        # Idle users' logs would otherwise stay in memory forever.
        self._hits_since_sweep += 1
        if self._hits_since_sweep < 1000:
            return
        self._hits_since_sweep = 0
        edge = now - self.rate.window
        for key in [k for k, log in self._local.items() if not log or log[-1] <= edge]:
            del self._local[key]

