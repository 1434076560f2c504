"""Traffic control: per-user rate limit, upstream gate and queue, provider budgets, breaker.

Everything works in-process; given a ``redis.asyncio.Redis`` client, limits are shared and
exact across instances, and degrade to in-process state (never raising) while Redis is away.
See ``docs/scaling.md``.
"""

from mpchat.limits._redis import UNAVAILABLE, RedisGuard
from mpchat.limits.breaker import BreakerState, CircuitBreaker
from mpchat.limits.budget import BudgetReservation, ProviderBudget, ProviderPaused
from mpchat.limits.gate import Lease, LeaseState, UpstreamGate
from mpchat.limits.ratelimit import Decision, Rate, RateLimiter, parse_rate

__all__ = [
    "UNAVAILABLE",
    "BreakerState",
    "BudgetReservation",
    "CircuitBreaker",
    "Decision",
    "Lease",
    "LeaseState",
    "ProviderBudget",
    "ProviderPaused",
    "Rate",
    "RateLimiter",
    "RedisGuard",
    "UpstreamGate",
    "parse_rate",
]
