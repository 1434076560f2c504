"""Guarded access to an optional Redis: fall back, log once per transition, probe to come back.

Every shared limit works the same way: try Redis (bounded by a short timeout), and on any
failure serve from in-process state instead of raising. While degraded, Redis is tried again
at most once per ``probe_interval`` (by whichever request comes first), never per request.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Final, TypeVar

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.commands.core import AsyncScript

__all__ = ["UNAVAILABLE", "RedisGuard"]

T = TypeVar("T")
_log = logging.getLogger("mpchat.limits")


class _Unavailable(enum.Enum):
    """Sentinel: Redis was not used (absent, degraded or failing); use local state."""

    UNAVAILABLE = "unavailable"


UNAVAILABLE: Final = _Unavailable.UNAVAILABLE


class RedisGuard:
    """Runs Redis operations for one component and tracks whether Redis is usable."""

    def __init__(
        self,
        redis: Redis | None,
        *,
        name: str,
        op_timeout: float = 0.5,
        probe_interval: float = 2.0,
        on_change: Callable[[bool], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.redis = redis
        self.name = name
        self.op_timeout = op_timeout
        self.probe_interval = probe_interval
        self.on_change = on_change
        self._clock = clock
        self._degraded = False
        self._next_probe = 0.0
        self._probing = False
        # What a failing Redis raises. redis-py is imported only when there is a client,
        # which has loaded it already: without Redis the app never imports it (start-up).
        self._failures: tuple[type[BaseException], ...] = (OSError, TimeoutError)
        if redis is not None:
            from redis.exceptions import RedisError

            self._failures = (RedisError, OSError, TimeoutError)

    @property
    def degraded(self) -> bool:
        """True while a configured Redis is unreachable and local state is used instead."""
        return self._degraded

    def script(self, source: str) -> AsyncScript | None:
        """``source`` (Lua) registered on this guard's Redis; None without a Redis."""
        return self.redis.register_script(source) if self.redis is not None else None

    @property
    def shared(self) -> bool:
        """True when decisions are currently shared through Redis."""
        return self.redis is not None and not self._degraded

    async def run(self, op: Callable[[Redis], Awaitable[T]]) -> T | _Unavailable:
        """Run ``op`` against Redis, or return ``UNAVAILABLE`` without raising."""
        redis = self.redis
        if redis is None:
            return UNAVAILABLE
        probing = False
        task = asyncio.current_task()
        cancels_before = task.cancelling() if task is not None else 0
        if self._degraded:
            # Only one caller probes, and only when the interval has passed; the others
            # keep using local state so a dead Redis never slows every request down.
            if self._probing or self._clock() < self._next_probe:
                return UNAVAILABLE
            self._probing = probing = True
        try:
            async with asyncio.timeout(self.op_timeout):
                result = await op(redis)
        except self._failures as exc:
            self._set_degraded(True, exc)
            return UNAVAILABLE
        finally:
            if probing:
                self._probing = False
        if task is not None and task.cancelling() > cancels_before:
            # redis-py (8.x) can swallow a CancelledError that lands early in a command and
            # complete the command anyway. A client that left while queued must still be
            # cancelled, or it keeps its place (and later a slot) for nobody.
            raise asyncio.CancelledError
        self._set_degraded(False, None)
        return result

    def _set_degraded(self, degraded: bool, exc: BaseException | None) -> None:
        if degraded:
            self._next_probe = self._clock() + self.probe_interval
        if degraded == self._degraded:
            return
        self._degraded = degraded
        if degraded:
            _log.warning(
                "redis unavailable for %s, using in-process state: %s",
                self.name,
                type(exc).__name__,
            )
        else:
            _log.warning("redis back for %s, state is shared again", self.name)
        if self.on_change is not None:
            self.on_change(degraded)


