"""Keep msgSecCheck under WeChat's app-wide quota (4,000 calls a minute) by waiting.

The window is the project's sliding-window limiter (`mpchat.limits.RateLimiter`): shared by
every instance through Redis when one is given (timed by the Redis server's clock), in
process otherwise or while Redis is unreachable, with the same probe and degraded reporting
as every other limit. `CallQuota` only adds the waiting: the quota is WeChat's, and a short
wait is better than an unchecked message, so ``acquire()`` never fails.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis

from mpchat.limits.ratelimit import Rate, RateLimiter

__all__ = ["SEC_CHECK_PER_MINUTE", "CallQuota"]

SEC_CHECK_PER_MINUTE = 4000


class CallQuota:
    """At most ``limit`` calls per ``period`` seconds; ``acquire()`` waits for a slot.

    Waiters of one instance go first come, first served, and only the first of them asks
    the window (then sleeps until the moment it names), so a queue costs Redis one call
    per slot, not one per waiter.
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
    ) -> None:
        if limit < 1 or period <= 0:
            raise ValueError("limit must be >= 1 and period > 0")
        self.name = name
        self._window = RateLimiter(
            Rate(limit, period), redis=redis, prefix=prefix, on_degraded=on_degraded,
            clock=clock, name=f"wechat {name} quota",
        )
        self._sleep = sleep
        # asyncio.Lock wakes waiters in order, so the queue is first come, first served.
        self._lock = asyncio.Lock()

    @property
    def rate(self) -> Rate:
        return self._window.rate

    @property
    def degraded(self) -> bool:
        return self._window.degraded

    def __repr__(self) -> str:
        return f"CallQuota(name={self.name!r}, rate='{self.rate}', degraded={self.degraded})"

    async def acquire(self) -> None:
        """Return when one more call is allowed; wait rather than fail."""
        async with self._lock:
            while True:
                decision = await self._window.hit(self.name)
                if decision.allowed:
                    return
                await self._sleep(decision.retry_after or decision.reset_s)

    async def aclose(self) -> None:
        await self._window.aclose()
