"""The default scenario: short answers back to back, at concurrency 1 and at a high level.

Per target (and, for OpenAI-style targets, per mode: streamed or one JSON body): a warm-up
(unmeasured, concurrency 8), then ``chats_c1`` chats at concurrency 1, then ``chats_high`` at
``concurrency`` (closed loops, each phase capped in time). The load runs in this process; CPU
per chat of the server, the fake and this process comes from /proc. mpchat is started
``cold_starts`` times (each a new process on a new data directory) and the last one takes
the load. mpchat's OpenAI-compatible surface (``/v1``, the ``mpchat-v1`` target) is in
`chatbench.surface`.
"""

from __future__ import annotations

import argparse
import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from .drivers import run_phase
from .load import Chat, Endpoint, make_chat, new_session
from .procs import Child, cpu_seconds, memory_kib
from .profiling import finish_profile, start_py_spy
from .stats import PhaseResult
from .targets import (
    direct_endpoint,
    litellm_endpoint,
    litellm_version,
    mpchat_endpoint,
    start_litellm,
    start_mpchat,
)

__all__ = [
    "Plan",
    "TargetResult",
    "bench_direct",
    "bench_litellm",
    "bench_mpchat",
    "fake_stats",
    "label",
    "measure",
    "measure_openai",
]


def label(target: str, stream: bool) -> str:
    """A result's name: the target's, with `` json`` for non-streamed OpenAI-style chats."""
    return target if stream else f"{target} json"


@dataclass
class TargetResult:
    name: str  # the column's label: target, plus " json" when not streamed
    target: str = ""  # direct, mpchat, mpchat-v1, litellm
    mode: str = "stream"  # stream (SSE, or mpchat's NDJSON) or json (one chat.completion)
    c1: PhaseResult | None = None
    c64: PhaseResult | None = None
    cold_start_s: list[float] = field(default_factory=list)
    memory_after_warmup_kib: dict[str, int] = field(default_factory=dict)
    memory_after_load_kib: dict[str, int] = field(default_factory=dict)
    # CPU milliseconds per chat during the high-concurrency phase, per process.
    cpu_ms_per_chat: dict[str, float] = field(default_factory=dict)
    failure: str = ""
    notes: list[str] = field(default_factory=list)


@dataclass
class Plan:
    warmup: int
    chats_c1: int
    chats_high: int
    concurrency: int
    max_phase_s: float


async def measure(
    result: TargetResult,
    chat: Chat,
    plan: Plan,
    pid: int | None,
    fake_pid: int,
    on_high_start: Callable[[], None] | None = None,
) -> None:
    await run_phase(
        chat, concurrency=min(8, plan.concurrency), chats=plan.warmup, max_seconds=plan.max_phase_s
    )
    if pid is not None:
        result.memory_after_warmup_kib = memory_kib(pid)
    result.c1 = await run_phase(
        chat, concurrency=1, chats=plan.chats_c1, max_seconds=plan.max_phase_s
    )
    if on_high_start is not None:
        on_high_start()
    pids = {"load generator": os.getpid(), "fake provider": fake_pid}
    if pid is not None:
        pids[result.name] = pid
    cpu_before = {name: cpu_seconds(p) for name, p in pids.items()}
    result.c64 = await run_phase(
        chat, concurrency=plan.concurrency, chats=plan.chats_high, max_seconds=plan.max_phase_s
    )
    done = max(1, result.c64.chats)
    result.cpu_ms_per_chat = {
        name: (cpu_seconds(p) - cpu_before[name]) * 1000 / done for name, p in pids.items()
    }
    if pid is not None:
        result.memory_after_load_kib = memory_kib(pid)


async def fake_stats(session: aiohttp.ClientSession, fake_port: int) -> dict[str, int]:
    async with session.get(f"http://127.0.0.1:{fake_port}/_control/stats") as resp:
        stats: dict[str, int] = await resp.json()
        return stats


async def measure_openai(
    result: TargetResult,
    endpoint: Endpoint,
    plan: Plan,
    pid: int | None,
    fake: tuple[int, int],
    on_high_start: Callable[[], None] | None = None,
) -> None:
    """`measure` with the OpenAI-style client; ``fake`` is the provider's (port, pid).

    Through a server (``pid`` given), also notes how many requests the provider saw.
    """
    fake_port, fake_pid = fake
    async with new_session(plan.concurrency + 16) as session:
        before = await fake_stats(session, fake_port)
        chat = await make_chat(session, endpoint)
        await measure(result, chat, plan, pid, fake_pid, on_high_start)
        after = await fake_stats(session, fake_port)
    if pid is not None:
        done = sum(p.chats for p in (result.c1, result.c64) if p) + plan.warmup
        sent = after["requests"] - before["requests"]
        result.notes.append(f"provider requests: {sent} for about {done} chats (with warm-up)")


async def bench_direct(
    fake_port: int, fake_pid: int, plan: Plan, *, stream: bool = True
) -> TargetResult:
    result = TargetResult(label("direct", stream), "direct", "stream" if stream else "json")
    endpoint = direct_endpoint(fake_port, stream=stream)
    await measure_openai(result, endpoint, plan, None, (fake_port, fake_pid))
    return result


async def bench_mpchat(
    tmp: Path,
    fake_port: int,
    fake_pid: int,
    plan: Plan,
    args: argparse.Namespace,
) -> tuple[TargetResult, dict[str, Any]]:
    result = TargetResult("mpchat", "mpchat", "stream")
    extra = dict(kv.split("=", 1) for kv in args.mpchat_env)
    profile: dict[str, Any] = {}
    child: Child | None = None
    try:
        # Cold starts: each one a new process on a new, empty data directory; the last one
        # stays up and takes the load.
        for i in range(args.cold_starts):
            child, port, cold = start_mpchat(tmp, fake_port, extra, args.mpchat_src)
            result.cold_start_s.append(cold)
            if i < args.cold_starts - 1:
                child.stop()
        assert child is not None
        async with new_session(plan.concurrency + 16) as session:
            before = await fake_stats(session, fake_port)
            chat = await make_chat(
                session,
                mpchat_endpoint(port),
                users=args.users,
                turns=args.turns,
                run_id=str(os.getpid()),
            )
            hook = None
            if args.py_spy and "mpchat" in getattr(args, "py_spy_targets", ("mpchat",)):
                hook = lambda: profile.update(start_py_spy(child, tmp, args.py_spy))  # noqa: E731
            await measure(result, chat, plan, child.pid, fake_pid, hook)
            after = await fake_stats(session, fake_port)
        sent = after["requests"] - before["requests"]
        result.notes.append(f"provider requests made by mpchat: {sent}")
        finish_profile(profile)
    except (RuntimeError, TimeoutError, OSError) as exc:
        result.failure = str(exc)
    finally:
        if child is not None:
            child.stop()
    return result, profile


async def bench_litellm(
    tmp: Path, fake_port: int, fake_pid: int, plan: Plan, *, stream: bool = True
) -> TargetResult:
    result = TargetResult(label("litellm", stream), "litellm", "stream" if stream else "json")
    child: Child | None = None
    try:
        child, port, cold = start_litellm(tmp, fake_port)
        result.cold_start_s.append(cold)
        result.notes.append(f"litellm {litellm_version()}, 1 worker, no database")
        endpoint = litellm_endpoint(port, stream=stream)
        await measure_openai(result, endpoint, plan, child.pid, (fake_port, fake_pid))
    except (RuntimeError, TimeoutError, OSError, subprocess.CalledProcessError) as exc:
        result.failure = f"{type(exc).__name__}: {exc}"
    finally:
        if child is not None:
            child.stop()
    return result
