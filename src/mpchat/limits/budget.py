"""Provider budgets: stay under a provider's requests/tokens per minute, and honour its 429s.

Each budget is a token bucket of one period's allowance that refills continuously (the way
providers account, so a full minute's budget may be spent at once, then it trickles back).
``reserve(tokens_estimate)`` takes one request and the estimated tokens before a call, both or
neither; ``commit(actual_tokens)`` afterwards corrects the tokens by the difference (a bucket
may go into debt when a call used more than estimated, which slows the next callers).

A provider's ``429`` with ``Retry-After`` becomes ``pause(seconds)``: with Redis every
instance sees it, so the whole fleet stops calling that provider until it said to come back.

When the budget is short, ``reserve`` waits up to ``max_wait`` seconds; beyond that it raises
``Busy(retry_after=...)`` at once rather than sleeping past what a user would accept.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mpchat.errors import Busy
from mpchat.limits._redis import UNAVAILABLE, RedisGuard

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["BudgetReservation", "ProviderBudget", "ProviderPaused"]

# KEYS = bucket hash, pause key; ARGV = request cap, token cap (0 = unlimited), period ms,
# tokens wanted. Returns {1, 0, 0} when taken, else {0, ms to wait, 1 if the provider's
# pause is the reason}. Times on Redis's clock.
_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local paused = redis.call('PTTL', KEYS[2])
if paused > 0 then return {0, paused, 1} end
local rcap, kcap = tonumber(ARGV[1]), tonumber(ARGV[2])
local period, want = tonumber(ARGV[3]), tonumber(ARGV[4])
local state = redis.call('HMGET', KEYS[1], 'r', 'k', 'ts')
local ts = tonumber(state[3]) or now
local elapsed = math.max(0, now - ts)
local r = math.min(rcap, (tonumber(state[1]) or rcap) + elapsed * rcap / period)
local k = math.min(kcap, (tonumber(state[2]) or kcap) + elapsed * kcap / period)
local needr, needk = 0, 0
if rcap > 0 then needr = 1 end
if kcap > 0 then needk = math.min(want, kcap) end
local wait = 0
if needr > r then wait = math.max(wait, (needr - r) * period / rcap) end
if needk > k then wait = math.max(wait, (needk - k) * period / kcap) end
if wait <= 0 then r = r - needr; k = k - needk end
redis.call('HSET', KEYS[1], 'r', tostring(r), 'k', tostring(k), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(period * 2))
if wait > 0 then return {0, math.ceil(wait), 0} end
return {1, 0, 0}
"""

# KEYS = bucket hash; ARGV = token cap, tokens to give back (negative: take more), request
# cap, requests to give back. Tokens may go into debt (down to -cap); requests never do.
_ADJUST = """
local state = redis.call('HMGET', KEYS[1], 'r', 'k')
local kcap, rcap = tonumber(ARGV[1]), tonumber(ARGV[3])
if state[2] and kcap > 0 then
  local k = math.max(-kcap, math.min(kcap, tonumber(state[2]) + tonumber(ARGV[2])))
  redis.call('HSET', KEYS[1], 'k', tostring(k))
end
if state[1] and rcap > 0 then
  local r = math.min(rcap, tonumber(state[1]) + tonumber(ARGV[4]))
  redis.call('HSET', KEYS[1], 'r', tostring(r))
end
return 1
"""

# KEYS = pause key; ARGV = ms. A pause is only ever extended, never shortened.
_PAUSE = """
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
end
return 1
"""


class ProviderPaused(Busy):
    """The provider asked the fleet to hold off (its 429's ``Retry-After``), not a short budget."""


@dataclass(slots=True)
class _Bucket:
    requests: float
    tokens: float
    at: float


@dataclass(slots=True)
class BudgetReservation:
    """What ``reserve`` took; ``commit`` settles the token count once it is known."""

    budget: ProviderBudget
    tokens_estimate: int
    settled: bool = False

    async def commit(self, actual_tokens: int) -> None:
        if self.settled:
            return
        self.settled = True
        await self.budget._adjust(self.tokens_estimate - actual_tokens)

    async def refund(self) -> None:
        """The request never reached the provider: give back the request and its tokens."""
        if self.settled:
            return
        self.settled = True
        await self.budget._adjust(self.tokens_estimate, requests=1)


class ProviderBudget:
    """Requests/tokens per period for one provider, shared through Redis when given."""

    def __init__(
        self,
        name: str,
        *,
        requests_per_minute: int | None = None,
        tokens_per_minute: int | None = None,
        period: float = 60.0,
        max_wait: float = 5.0,
        redis: Redis | None = None,
        prefix: str = "mpchat:",
        op_timeout: float = 0.5,
        probe_interval: float = 2.0,
        on_degraded: Callable[[bool], None] | None = None,
    ) -> None:
        self.name = name
        self.requests = requests_per_minute or 0  # 0 = unlimited
        self.tokens = tokens_per_minute or 0
        self.period = period  # "per minute" unless a test or a provider says otherwise
        self.max_wait = max_wait
        self._guard = RedisGuard(redis, name=f"budget {name}", op_timeout=op_timeout,
                                 probe_interval=probe_interval, on_change=on_degraded)
        self._bucket_key = f"{prefix}budget:{name}:bucket"
        self._pause_key = f"{prefix}budget:{name}:pause"
        self._reserve = self._guard.script(_RESERVE)
        self._adjust_script = self._guard.script(_ADJUST)
        self._pause = self._guard.script(_PAUSE)
        self._local = _Bucket(float(self.requests), float(self.tokens), time.monotonic())
        self._paused_until = 0.0

    @property
    def degraded(self) -> bool:
        return self._guard.degraded

    async def reserve(self, tokens_estimate: int = 0, *, max_wait: float | None = None) -> (
        BudgetReservation
    ):
        """Take one request and ``tokens_estimate`` tokens, waiting at most ``max_wait``.

        Raises ``Busy(retry_after=...)`` when the budget needs a longer wait, and
        `ProviderPaused` (a ``Busy``) when the provider's pause does.
        """
        limit = self.max_wait if max_wait is None else max_wait
        deadline = time.monotonic() + limit
        while True:
            wait, paused = await self._try_take(tokens_estimate)
            if wait <= 0:
                return BudgetReservation(self, tokens_estimate)
            if time.monotonic() + wait > deadline:
                raise (ProviderPaused if paused else Busy)(retry_after=wait)
            await asyncio.sleep(wait)  # the bounded wait is the point: the budget refills

    async def pause(self, seconds: float) -> None:
        """Stop calling this provider for ``seconds`` (its 429 ``Retry-After``), fleet-wide."""
        if seconds <= 0:
            return
        self._paused_until = max(self._paused_until, time.monotonic() + seconds)
        script = self._pause
        if script is not None:
            ms = max(1, int(seconds * 1000))
            await self._guard.run(lambda r: script(keys=[self._pause_key], args=[ms], client=r))

    async def paused_for(self) -> float:
        """Seconds until the provider may be called again (0 when not paused)."""
        local = max(0.0, self._paused_until - time.monotonic())
        pttl = await self._guard.run(lambda r: r.pttl(self._pause_key))
        shared = 0.0 if pttl is UNAVAILABLE else max(0, int(pttl)) / 1000
        return max(local, shared)

    async def aclose(self) -> None:
        """Nothing to close: the Redis client belongs to the caller."""

    async def _try_take(self, tokens: int) -> tuple[float, bool]:
        """Seconds to wait (0: taken), and whether the provider's pause is the reason."""
        script = self._reserve
        if script is not None:
            args = [self.requests, self.tokens, int(self.period * 1000), tokens]
            keys = [self._bucket_key, self._pause_key]
            reply = await self._guard.run(lambda r: script(keys=keys, args=args, client=r))
            if reply is not UNAVAILABLE:
                ok, wait_ms, paused = (int(v) for v in reply)
                return (0.0, False) if ok else (max(wait_ms, 1) / 1000, bool(paused))
        return self._take_locally(tokens)

    def _take_locally(self, tokens: int) -> tuple[float, bool]:
        now = time.monotonic()
        if now < self._paused_until:
            return self._paused_until - now, True
        b = self._local
        elapsed = max(0.0, now - b.at)
        b.at = now
        if self.requests:
            b.requests = min(self.requests, b.requests + elapsed * self.requests / self.period)
        if self.tokens:
            b.tokens = min(self.tokens, b.tokens + elapsed * self.tokens / self.period)
        need_r = 1 if self.requests else 0
        need_k = min(tokens, self.tokens) if self.tokens else 0
        wait = 0.0
        if need_r > b.requests:
            wait = max(wait, (need_r - b.requests) * self.period / self.requests)
        if need_k > b.tokens:
            wait = max(wait, (need_k - b.tokens) * self.period / self.tokens)
        if wait <= 0:
            b.requests -= need_r
            b.tokens -= need_k
        return wait, False

    async def _adjust(self, give_back: int, *, requests: int = 0) -> None:
        if not self.requests:
            requests = 0
        if not self.tokens:
            give_back = 0
        if give_back == 0 and requests == 0:
            return
        script = self._adjust_script
        if script is not None:
            args = [self.tokens, give_back, self.requests, requests]
            reply = await self._guard.run(
                lambda r: script(keys=[self._bucket_key], args=args, client=r)
            )
            if reply is not UNAVAILABLE:
                return
        b = self._local
        if self.tokens:
            b.tokens = max(-self.tokens, min(self.tokens, b.tokens + give_back))
        if self.requests:
            b.requests = min(self.requests, b.requests + requests)
