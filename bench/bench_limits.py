"""Per-decision latency of the traffic-control primitives, in-process vs Redis on loopback.

    .venv/bin/python bench/bench_limits.py [--n 3000] [--redis redis://127.0.0.1:6379/0]

Sequential calls (latency, not throughput): rate-limit ``hit``, rate-limit ``peek``, gate
``reserve`` + ``release`` with a free slot, and budget ``reserve``. Prints p50/p99 side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis

from mpchat.limits import ProviderBudget, RateLimiter, UpstreamGate


async def _measure(op: Callable[[int], Awaitable[object]], n: int) -> tuple[float, float]:
    for i in range(min(200, n)):  # warm up connections and script caches
        await op(i)
    samples = []
    for i in range(n):
        started = time.perf_counter()
        await op(i)
        samples.append((time.perf_counter() - started) * 1e6)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.99) - 1]


def _cases(redis: Redis | None, prefix: str) -> dict[str, Callable[[int], Awaitable[object]]]:
    limiter = RateLimiter("1000000/minute", redis=redis, prefix=prefix)
    gate = UpstreamGate("bench", max_concurrency=8, redis=redis, prefix=prefix)
    budget = ProviderBudget(
        "bench", requests_per_minute=10**9, tokens_per_minute=10**12, redis=redis, prefix=prefix
    )

    async def gate_op(i: int) -> None:
        lease = await gate.reserve(f"user{i % 100}")
        await lease.release()

    return {
        "rate limit hit": lambda i: limiter.hit(f"user{i % 100}"),
        "rate limit peek": lambda i: limiter.peek(f"user{i % 100}"),
        "gate reserve+release": gate_op,
        "budget reserve": lambda i: budget.reserve(100),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument(
        "--redis", default=os.environ.get("MPCHAT_REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    args = parser.parse_args()
    prefix = f"mpchat-bench:{uuid.uuid4().hex[:8]}:"
    redis = Redis.from_url(args.redis)
    try:
        await redis.ping()
        local_cases, redis_cases = _cases(None, prefix), _cases(redis, prefix)
        print(f"{args.n} sequential calls each; microseconds per call")
        print(f"{'operation':<22} {'in-process p50':>15} {'p99':>8} {'Redis p50':>11} {'p99':>8}")
        for name in local_cases:
            lp50, lp99 = await _measure(local_cases[name], args.n)
            rp50, rp99 = await _measure(redis_cases[name], args.n)
            print(f"{name:<22} {lp50:>15.1f} {lp99:>8.1f} {rp50:>11.1f} {rp99:>8.1f}")
    finally:
        keys = [key async for key in redis.scan_iter(match=prefix + "*")]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()


if __name__ == "__main__":
    asyncio.run(main())
