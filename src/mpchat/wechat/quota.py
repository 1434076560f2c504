"""Keep msgSecCheck under WeChat's app-wide quota (4,000 calls a minute) by waiting.

The window is the project's sliding-window limiter (`mpchat.limits.RateLimiter`): shared by
every instance through Redis when one is given (timed by the Redis server's clock), in
process otherwise or while Redis is unreachable, with the same probe and degraded reporting
as every other limit. `CallQuota` only adds the waiting: the quota is WeChat's, and a short
wait is better than an unchecked message, so ``acquire()`` never fails.

Input checks take precedence over output checks: a *deferrable* call (an answer's check,
which can wait a moment) only takes a slot while ``reserve`` slots are left in the window,
so a fleet that is checking long answers flat out still has room for every instance's
input checks; and on one instance, deferrable waiters queue apart, never ahead of the others.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from mpchat.limits.ratelimit import Rate, RateLimiter

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["DEFAULT_RESERVE", "SEC_CHECK_PER_MINUTE", "CallQuota"]

SEC_CHECK_PER_MINUTE = 4000
# The share of the window only non-deferrable calls (input checks) may use.
DEFAULT_RESERVE = 0.2


class CallQuota:
    """At most ``limit`` calls per ``period`` seconds; ``acquire()`` waits for a slot.

    Waiters of one instance go first come, first served within their lane (deferrable or
    not), and only the first of a lane asks the window (then sleeps until the moment it
    names), so a queue costs Redis one call per slot, not one per waiter. Deferrable calls
    see a window of ``limit - reserve`` slots (``reserve`` defaults to a fifth of the limit).
    """

    def __init__(
        self,
        *,
        redis: Redis | None = None,
        name: str = "msg_sec_check",
        limit: int = SEC_CHECK_PER_MINUTE,
        period: float = 60.0,
        prefix: str = "mpchat:wechat:",
        on_degraded: Callable[[bool], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        reserve: int | None = None,
    ) -> None:
        if limit < 1 or period <= 0:
            raise ValueError("limit must be >= 1 and period > 0")
        if reserve is None:
            reserve = int(limit * DEFAULT_RESERVE)
        if not 0 <= reserve < limit:
            raise ValueError("reserve must be >= 0 and below the limit")
        self.name = name
        self._window = RateLimiter(
            Rate(limit, period), redis=redis, prefix=prefix, on_degraded=on_degraded,
            clock=clock, name=f"wechat {name} quota",
        )
        self._deferrable_rate = Rate(limit - reserve, period)
        self._sleep = sleep
        # asyncio.Lock wakes waiters in order, so each lane is first come, first served.
        self._lock = asyncio.Lock()
        self._deferrable_lock = asyncio.Lock()

    @property
    def rate(self) -> Rate:
        return self._window.rate

    @property
    def degraded(self) -> bool:
        return self._window.degraded

    def __repr__(self) -> str:
        return f"CallQuota(name={self.name!r}, rate='{self.rate}', degraded={self.degraded})"

    async def acquire(self, *, deferrable: bool = False) -> None:
        """Return when one more call is allowed; wait rather than fail.

        ``deferrable``: a call that may wait (an output check) leaves the window's reserve
        to the others (input checks).
        """
        lock, rate = self._lock, None
        if deferrable:
            lock, rate = self._deferrable_lock, self._deferrable_rate
        async with lock:
            while True:
                decision = await self._window.hit(self.name, rate=rate)
                if decision.allowed:
                    return
                await self._sleep(decision.retry_after or decision.reset_s)

    async def aclose(self) -> None:
        await self._window.aclose()
