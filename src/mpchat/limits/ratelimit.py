"""Sliding-window rate limits (per user, per address, per API key), exact across instances.

The window is a true sliding log: a hit is allowed when the hits accepted in the last
``window`` seconds weigh less than ``limit`` (each weighs 1: requests per minute; or what it
costs: tokens per minute), so ``retry_after`` is exact (the moment the oldest accepted hits
that make room for this one have left the window).

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
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mpchat.limits._redis import UNAVAILABLE, RedisGuard

if TYPE_CHECKING:
    from redis.asyncio import Redis

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


# KEYS[1] = the log: a sorted set of hits scored by time (µs), each member "<unique id>:<weight>"
# (a member without a weight, as earlier versions wrote, weighs 1); KEYS[2] = the sum of the
# log's weights, kept beside it so a decision never adds up the whole log (rebuilt from the log
# when missing). ARGV = limit, window µs, consume (1/0), unique id, cost.
# Returns {fits, total after, oldest µs or -1, now µs, µs until the cost fits or -1}.
_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local limit, window, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[5])
local edge = now - window
local function weight(member)
  return tonumber(string.match(member, ':(%d+)$')) or 1
end
local total = tonumber(redis.call('GET', KEYS[2]))
if total == nil then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', edge)
  total = 0
  for _, m in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do total = total + weight(m) end
else
  for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', edge)) do
    total = total - weight(m)
  end
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', edge)
end
if redis.call('ZCARD', KEYS[1]) == 0 then total = 0 end
local need = math.min(cost, limit)
local fits = total + need <= limit
if fits and ARGV[3] == '1' then
  redis.call('ZADD', KEYS[1], now, ARGV[4] .. ':' .. cost)
  total = total + cost
end
local ttl = math.ceil(window / 1000)
if total > 0 then
  redis.call('SET', KEYS[2], total, 'PX', ttl)
  redis.call('PEXPIRE', KEYS[1], ttl)
else
  redis.call('DEL', KEYS[2])
end
local oldest = -1
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if first[2] then oldest = tonumber(first[2]) end
local wait = -1
if not fits then
  -- The cost fits once the oldest hits that weigh at least the excess have left the window.
  local excess, start = total + need - limit, 0
  while wait < 0 do
    local page = redis.call('ZRANGE', KEYS[1], start, start + 99, 'WITHSCORES')
    if #page == 0 then wait = window break end
    for i = 1, #page, 2 do
      excess = excess - weight(page[i])
      if excess <= 0 then wait = tonumber(page[i + 1]) + window - now break end
    end
    start = start + 100
  end
end
return {fits and 1 or 0, total, oldest, now, wait}
"""


@dataclass(slots=True)
class _Log:
    """One key's accepted hits in the window (time, weight), oldest first, and their sum."""

    window: float
    hits: deque[tuple[float, int]] = field(default_factory=deque)
    total: int = 0

    def trim(self, now: float) -> None:
        edge = now - self.window
        while self.hits and self.hits[0][0] <= edge:
            self.total -= self.hits.popleft()[1]

    def fits_in(self, excess: int) -> float:
        """When the oldest hits weighing at least ``excess`` will have left the window."""
        for at, weight in self.hits:
            excess -= weight
            if excess <= 0:
                return at + self.window
        return self.hits[-1][0] + self.window if self.hits else 0.0


class RateLimiter:
    """Sliding-window limit keyed by a string (a user id, an address, ``key:rpm:<id>``).

    ``hit`` consumes ``cost`` units when they fit; ``peek`` only reports. Neither raises: the
    caller turns a refusal into ``RateLimited(retry_after=decision.retry_after)``. A hit
    weighs 1 unless told otherwise (tokens per minute weigh each request by its tokens), and
    the limit is the limiter's ``rate`` unless a call names its own (per-API-key limits).
    A cost larger than the whole limit is let through only on an empty window (then counts
    in full), as a provider lets one oversized request spend a full minute's budget.

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
        self._total_prefix = f"{prefix}rlw:"
        self._clock = clock
        self._guard = RedisGuard(redis, name=name, op_timeout=op_timeout,
                                 probe_interval=probe_interval, on_change=on_degraded, clock=clock)
        self._script = self._guard.script(_SCRIPT)
        self._local: dict[str, _Log] = {}
        self._hits_since_sweep = 0

    @property
    def degraded(self) -> bool:
        return self._guard.degraded

    async def hit(self, key: str, *, cost: int = 1, rate: Rate | None = None) -> Decision:
        return await self._decide(key, cost=cost, rate=rate, consume=True)

    async def peek(self, key: str, *, cost: int = 1, rate: Rate | None = None) -> Decision:
        return await self._decide(key, cost=cost, rate=rate, consume=False)

    async def aclose(self) -> None:
        """Nothing to close: the Redis client belongs to the caller."""
        self._local.clear()

    async def _decide(
        self, key: str, *, cost: int, rate: Rate | None, consume: bool
    ) -> Decision:
        if cost < 1:
            raise ValueError(f"a hit costs at least 1, not {cost}")
        rate = self.rate if rate is None else rate
        script = self._script
        if script is not None:
            window_us = int(rate.window * 1_000_000)
            args = [rate.limit, window_us, 1 if consume else 0, uuid.uuid4().hex, cost]
            keys = [self._prefix + key, self._total_prefix + key]
            reply = await self._guard.run(lambda r: script(keys=keys, args=args, client=r))
            if reply is not UNAVAILABLE:
                fits, total, oldest, now, wait = (int(v) for v in reply)
                return _decision(
                    rate,
                    fits=bool(fits),
                    total=total,
                    reset=None if oldest < 0 else (oldest + window_us - now) / 1_000_000,
                    wait=None if wait < 0 else wait / 1_000_000,
                )
        return self._decide_locally(key, cost=cost, rate=rate, consume=consume)

    def _decide_locally(self, key: str, *, cost: int, rate: Rate, consume: bool) -> Decision:
        now = self._clock()
        log = self._local.get(key)
        if log is None:
            log = self._local[key] = _Log(rate.window)
        log.window = rate.window
        log.trim(now)
        need = min(cost, rate.limit)
        fits = log.total + need <= rate.limit
        if fits and consume:
            log.hits.append((now, cost))
            log.total += cost
            self._maybe_sweep(now)
        wait = None if fits else log.fits_in(log.total + need - rate.limit) - now
        decision = _decision(
            rate,
            fits=fits,
            total=log.total,
            reset=log.hits[0][0] + log.window - now if log.hits else None,
            wait=wait,
        )
        if not log.hits:
            del self._local[key]
        return decision

    def _maybe_sweep(self, now: float) -> None:
        # Idle keys' logs would otherwise stay in memory forever.
        self._hits_since_sweep += 1
        if self._hits_since_sweep < 1000:
            return
        self._hits_since_sweep = 0
        idle = [k for k, log in self._local.items()
                if not log.hits or log.hits[-1][0] <= now - log.window]
        for key in idle:
            del self._local[key]


def _decision(
    rate: Rate, *, fits: bool, total: int, reset: float | None, wait: float | None
) -> Decision:
    """``reset``: seconds until the oldest hit leaves; ``wait``: until the cost fits."""
    return Decision(
        allowed=fits,
        limit=rate.limit,
        remaining=max(0, rate.limit - total),
        reset_s=0.0 if reset is None else max(0.0, reset) + _MARGIN,
        retry_after=None if fits or wait is None else max(0.0, wait) + _MARGIN,
    )
