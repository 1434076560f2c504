"""Upstream gate: a bounded number of calls in flight per provider, and a fair FIFO queue.

* ``max_concurrency`` leases may be held at once. With Redis the bound holds across all
  instances: leases live in a sorted set scored by their expiry, renewed while held, so a
  crashed instance's leases expire by themselves after ``lease_ttl``.
* Beyond it, up to ``queue_size`` requests wait *in this instance's* FIFO queue, each at most
  ``queue_timeout`` seconds. Only the head of the queue competes for a free slot (woken by a
  local release, and polling Redis every ``poll_interval`` for releases elsewhere), so the
  order is exact within an instance and best-effort across instances; the reported position
  is the position in this instance's queue.
* Fair share: one user may have at most ``max_waiting_per_user`` entries waiting (default
  ``max(1, queue_size // 4)``), so one client cannot fill the queue.
* A full queue, a user over their share, or an expired wait raise ``Busy(retry_after=...)``,
  estimated from the recent average time a slot is held.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import itertools
import random
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

from mpchat.errors import Busy
from mpchat.limits._redis import UNAVAILABLE, RedisGuard

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["Lease", "LeaseState", "UpstreamGate"]

# KEYS[1] = lease set; ARGV = max, ttl ms, lease id. Returns 1 when the lease is held.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZSCORE', KEYS[1], ARGV[3]) or
   redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[1], now + ttl, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], ttl * 2)
  return 1
end
return 0
"""

# KEYS[1] = lease set; ARGV = ttl ms, lease ids... Extends the leases that still exist.
_RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[1])
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[1], 'XX', now + ttl, ARGV[i])
end
redis.call('PEXPIRE', KEYS[1], ttl * 2)
return 1
"""


class LeaseState(enum.StrEnum):
    WAITING = "waiting"
    HELD = "held"
    RELEASED = "released"


class Lease:
    """One request's place at the gate: waiting, then holding a slot, then released."""

    def __init__(self, gate: UpstreamGate, user_key: str) -> None:
        self._gate = gate
        self.user_key = user_key
        self.id = uuid.uuid4().hex
        self.state = LeaseState.WAITING
        self.position = 0
        self._changed = asyncio.Event()
        self._enqueued_at = time.monotonic()
        self._held_at = 0.0
        self._maybe_in_redis = False

    async def wait(self) -> AsyncIterator[int]:
        """Yield 1-based queue positions as they change; return once a slot is held.

        Yields nothing when a slot was free at ``reserve``. Raises ``Busy`` when the wait
        exceeds the gate's ``queue_timeout`` (the lease has then left the queue).
        """
        gate = self._gate
        deadline = self._enqueued_at + gate.queue_timeout
        last = 0
        while self.state is LeaseState.WAITING:
            self._changed.clear()
            if self.position == 1 and await gate._try_acquire(self):
                if self.state is not LeaseState.WAITING:
                    break  # released meanwhile (gate closed): it must not look held
                gate._promote(self)
                return
            if self.state is not LeaseState.WAITING:
                break
            if self.position != last:
                last = self.position
                yield last
                continue  # the consumer may have taken a while: look again before sleeping
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                gate._leave_queue(self)
                self.state = LeaseState.RELEASED
                raise Busy(retry_after=gate.retry_estimate())
            if self.position == 1 and gate._polls:
                remaining = min(remaining, gate.poll_interval * random.uniform(0.5, 1.5))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._changed.wait()
        if self.state is LeaseState.RELEASED:
            raise Busy(retry_after=self._gate.retry_estimate())

    async def release(self) -> None:
        """Free the slot or leave the queue. Idempotent; safe in ``finally`` after a cancel."""
        state = self.state
        if state is LeaseState.RELEASED and not self._maybe_in_redis:
            return
        self.state = LeaseState.RELEASED
        if state is LeaseState.WAITING:
            self._gate._leave_queue(self)
        elif state is LeaseState.HELD:
            self._gate._free(self)
        if self._maybe_in_redis:
            # Also after a cancelled acquire: the script may have run without us seeing it.
            self._maybe_in_redis = False
            await self._gate._redis_release(self.id)

    async def __aenter__(self) -> Lease:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.release()


class UpstreamGate:
    """Concurrency bound plus fair bounded queue in front of one provider."""

    def __init__(
        self,
        name: str,
        *,
        max_concurrency: int = 32,
        queue_size: int = 256,
        queue_timeout: float = 30.0,
        max_waiting_per_user: int | None = None,
        redis: Redis | None = None,
        prefix: str = "mpchat:",
        lease_ttl: float = 30.0,
        poll_interval: float = 0.05,
        initial_hold_estimate: float = 10.0,
        op_timeout: float = 0.5,
        probe_interval: float = 2.0,
        on_degraded: Callable[[bool], None] | None = None,
    ) -> None:
        if max_concurrency < 1 or queue_size < 0:
            raise ValueError("max_concurrency must be >= 1 and queue_size >= 0")
        self.name = name
        self.max_concurrency = max_concurrency
        self.queue_size = queue_size
        self.queue_timeout = queue_timeout
        self.max_waiting_per_user = max_waiting_per_user or max(1, queue_size // 4)
        self.lease_ttl = lease_ttl
        self.poll_interval = poll_interval
        self._guard = RedisGuard(redis, name=f"gate {name}", op_timeout=op_timeout,
                                 probe_interval=probe_interval, on_change=on_degraded)
        self._polls = redis is not None
        self._key = f"{prefix}gate:{name}:leases"
        self._acquire = self._guard.script(_ACQUIRE)
        self._renew = self._guard.script(_RENEW)
        self._waiters: collections.deque[Lease] = collections.deque()
        self._per_user: collections.Counter[str] = collections.Counter()
        self._held: dict[str, Lease] = {}
        self._hold_estimate = initial_hold_estimate
        self._renewer: asyncio.Task[None] | None = None
        self._orphans: set[str] = set()

    @property
    def in_flight(self) -> int:
        """Slots held through this instance."""
        return len(self._held)

    @property
    def waiting(self) -> int:
        """Requests waiting in this instance's queue."""
        return len(self._waiters)

    @property
    def degraded(self) -> bool:
        return self._guard.degraded

    def retry_estimate(self) -> float:
        """Seconds after which a retry has a fair chance: the queue ahead drained at the
        recent pace of the slots, at least 1 s and at most ``queue_timeout``."""
        ahead = len(self._waiters) + 1
        estimate = self._hold_estimate * ahead / self.max_concurrency
        return min(max(1.0, self.queue_timeout), max(1.0, estimate))

    async def reserve(self, user_key: str) -> Lease:
        """Take a slot if one is free, else a place in the queue; ``Busy`` if neither."""
        lease = Lease(self, user_key)
        if not self._waiters and await self._try_acquire(lease):
            self._held[lease.id] = lease
            lease.state = LeaseState.HELD
            lease._held_at = time.monotonic()
            return lease
        if len(self._waiters) >= self.queue_size:
            await lease.release()
            raise Busy(retry_after=self.retry_estimate())
        if self._per_user[user_key] >= self.max_waiting_per_user:
            await lease.release()
            raise Busy("您的请求正在排队，请稍后再试", retry_after=self.retry_estimate())
        self._waiters.append(lease)
        self._per_user[user_key] += 1
        lease.position = len(self._waiters)
        return lease

    async def aclose(self) -> None:
        """Stop renewing leases (they then expire in Redis) and drop local state."""
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
            self._renewer = None
        for lease in itertools.chain(self._waiters, self._held.values()):
            lease.state = LeaseState.RELEASED
            lease._changed.set()
        self._waiters.clear()
        self._held.clear()
        self._per_user.clear()

    # -- internals, used by Lease ---------------------------------------------------------

    async def _try_acquire(self, lease: Lease) -> bool:
        script = self._acquire
        if script is not None:
            lease._maybe_in_redis = True
            args: list[int | str] = [self.max_concurrency, int(self.lease_ttl * 1000), lease.id]
            reply = await self._guard.run(lambda r: script(keys=[self._key], args=args, client=r))
            if reply is not UNAVAILABLE:
                if self._orphans:
                    await self._release_orphans()
                if reply != 1:
                    return False
                self._ensure_renewer()
                return True
        # No Redis, or Redis down: this instance enforces the bound on its own.
        return len(self._held) < self.max_concurrency

    def _promote(self, lease: Lease) -> None:
        self._leave_queue(lease)
        lease.state = LeaseState.HELD
        lease._held_at = time.monotonic()
        self._held[lease.id] = lease

    def _leave_queue(self, lease: Lease) -> None:
        with contextlib.suppress(ValueError):
            self._waiters.remove(lease)
            self._per_user[lease.user_key] -= 1
            if self._per_user[lease.user_key] <= 0:
                del self._per_user[lease.user_key]
        for position, waiter in enumerate(self._waiters, start=1):
            if waiter.position != position:
                waiter.position = position
                waiter._changed.set()
        if self._waiters:
            self._waiters[0]._changed.set()

    def _free(self, lease: Lease) -> None:
        if self._held.pop(lease.id, None) is None:
            return
        held_for = time.monotonic() - lease._held_at
        self._hold_estimate = 0.8 * self._hold_estimate + 0.2 * held_for
        if self._waiters:
            self._waiters[0]._changed.set()

    async def _redis_release(self, lease_id: str) -> None:
        reply = await self._guard.run(lambda r: r.zrem(self._key, lease_id))
        if reply is UNAVAILABLE:
            # Released while Redis was away: remove it once Redis is back (and if that never
            # happens, the lease expires by itself within lease_ttl).
            self._orphans.add(lease_id)

    async def _release_orphans(self) -> None:
        ids, self._orphans = self._orphans, set()
        reply = await self._guard.run(lambda r: r.zrem(self._key, *ids))
        if reply is UNAVAILABLE:
            self._orphans |= ids

    def _ensure_renewer(self) -> None:
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.create_task(self._renew_forever(), name=f"gate-{self.name}")

    async def _renew_forever(self) -> None:
        script = self._renew
        assert script is not None
        ttl_ms = int(self.lease_ttl * 1000)
        while True:
            await asyncio.sleep(self.lease_ttl / 3)
            ids = [lease.id for lease in self._held.values() if lease._maybe_in_redis]
            if not ids:
                return
            args: list[int | str] = [ttl_ms, *ids]
            await self._guard.run(
                lambda r: script(keys=[self._key], args=args, client=r)  # noqa: B023
            )
