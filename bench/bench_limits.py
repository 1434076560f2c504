"""The limiter's own cost: per-decision latency, and chats/s through mpchat, Redis on vs off.

    .venv/bin/python bench/bench_limits.py [--n 3000] [--redis redis://127.0.0.1:6379/0]
    .venv/bin/python bench/bench_limits.py --chats 1500 --concurrency 16 --rounds 2

Part 1, sequential calls (latency, not throughput): rate-limit ``hit``, rate-limit ``peek``,
gate ``reserve`` + ``release`` with a free slot, and budget ``reserve``; p50/p99 side by side.

Part 2 (``--chats N``, 0 to skip): the fake provider and one ``mpchat serve`` as subprocesses
(SQLite, as bench/bench_chat.py), loaded by this process with ``--concurrency`` users chatting
at once. Once with ``MPCHAT_REDIS_URL`` unset (in-process limits) and once with it set (every
chat: one rate-limit script, a gate acquire and release on Redis), alternating ``--rounds``
times so drift on a shared machine hits both. The limits are set high enough never to refuse:
the figure is the cost of deciding, not of refusing. mpchat's keys go to Redis database
``--chat-redis-db`` (default 14), which is flushed before and after.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio import Redis

from mpchat.limits import ProviderBudget, RateLimiter, UpstreamGate

sys.path.insert(0, str(Path(__file__).resolve().parent))
# bench/ is not an installed package: its parts are found via sys.path.
from chatbench.drivers import run_phase
from chatbench.load import MpchatClient, new_session
from chatbench.stats import PhaseResult
from chatbench.targets import start_fake, start_mpchat


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


async def decisions(redis_url: str, n: int) -> None:
    prefix = f"mpchat-bench:{uuid.uuid4().hex[:8]}:"
    redis = Redis.from_url(redis_url)
    try:
        await redis.ping()
        local_cases, redis_cases = _cases(None, prefix), _cases(redis, prefix)
        print(f"{n} sequential calls each; microseconds per call")
        print(f"{'operation':<22} {'in-process p50':>15} {'p99':>8} {'Redis p50':>11} {'p99':>8}")
        for name in local_cases:
            lp50, lp99 = await _measure(local_cases[name], n)
            rp50, rp99 = await _measure(redis_cases[name], n)
            print(f"{name:<22} {lp50:>15.1f} {lp99:>8.1f} {rp50:>11.1f} {rp99:>8.1f}")
    finally:
        keys = [key async for key in redis.scan_iter(match=prefix + "*")]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()


def _with_db(url: str, db: int) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{db}"))


async def _chat_phase(
    tmp: Path, fake_port: int, env: dict[str, str], args: argparse.Namespace, run_id: str
) -> PhaseResult:
    child, port, _cold = start_mpchat(tmp, fake_port, env, None)
    try:
        async with new_session(args.concurrency + 16) as session:
            client = MpchatClient(session, f"http://127.0.0.1:{port}", turns=4)
            await client.login(args.concurrency, run_id=run_id)
            # A short warm-up (connections, script caches, first-use imports), not counted.
            await run_phase(client.chat, concurrency=args.concurrency,
                            chats=args.concurrency * 4, max_seconds=30)
            return await run_phase(client.chat, concurrency=args.concurrency,
                                   chats=args.chats, max_seconds=120)
    finally:
        child.stop()


async def chats_per_second(args: argparse.Namespace) -> None:
    redis_url = _with_db(args.redis, args.chat_redis_db)
    redis = Redis.from_url(redis_url)
    await redis.flushdb()
    modes = {
        "off (in-process)": {},
        "on (Redis)": {"MPCHAT_REDIS_URL": redis_url},
    }
    # Never refuse, but decide every chat: the rate limit far above the load, the gate wide.
    common = {"MPCHAT_RATE_LIMIT": "1000000/minute",
              "MPCHAT_UPSTREAM_MAX_CONCURRENCY": str(args.concurrency * 2)}
    results: dict[str, list[PhaseResult]] = {name: [] for name in modes}
    with tempfile.TemporaryDirectory(prefix="bench-limits-") as tmp_name:
        tmp = Path(tmp_name)
        fake, fake_port = start_fake(tmp, chunks=20)
        try:
            for round_no in range(args.rounds):
                for name, extra in modes.items():
                    phase = await _chat_phase(tmp, fake_port, common | extra, args,
                                              run_id=f"{os.getpid()}-{round_no}-{len(extra)}")
                    results[name].append(phase)
                    print(f"  round {round_no + 1} limits {name:<17} {phase.chats_per_s:8.1f}"
                          f" chats/s, errors {phase.errors}", flush=True)
        finally:
            fake.stop()
            await redis.flushdb()
            await redis.aclose()
    print(f"\n{args.chats} chats per round, {args.concurrency} users at once, "
          f"{args.rounds} round(s), median of rounds")
    print(f"{'limits':<18} {'chats/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
    for name, phases in results.items():
        rate = statistics.median(p.chats_per_s for p in phases)
        p50 = statistics.median(p.total_ms["p50"] for p in phases)
        p99 = statistics.median(p.total_ms["p99"] for p in phases)
        errors = sum(p.errors for p in phases)
        print(f"{name:<18} {rate:>9.1f} {p50:>8.2f} {p99:>8.2f} {errors:>7}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=3000, help="calls per decision (0 to skip)")
    parser.add_argument(
        "--redis", default=os.environ.get("MPCHAT_REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    parser.add_argument("--chats", type=int, default=1500, help="chats per round (0 to skip)")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--chat-redis-db", type=int, default=14)
    args = parser.parse_args()
    if args.n:
        await decisions(args.redis, args.n)
    if args.chats:
        print()
        await chats_per_second(args)


if __name__ == "__main__":
    asyncio.run(main())
