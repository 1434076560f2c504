"""The held-streams scenario: many long answers open at once against a slow provider.

The fake provider answers like a real model: ``ttft_ms`` to the first token, then ``chunks``
deltas ``gap_ms`` apart (by default 500 ms, 40 chunks, 250 ms: about 10 s per answer). Per
target, a load client in its own process (`chatbench.held_load`) logs in, warms up, and then
runs each phase while this process reads /proc around it:

- **burst**: ``streams`` chats started at once, each held to its end;
- **steady**: ``streams`` chats arriving at an even rate over one answer time, so that about
  ``streams`` are open at once in the middle of the phase.

CPU per chat is (utime + stime) over the phase of each process (the server with its
children, the fake, the load client) ÷ chats started. Between phases the fake's counters are
reset, so "streams open at the provider" is the most it held at once during that phase.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from .load import Endpoint
from .procs import Child, base_env, cpu_seconds, memory_kib, tree_cpu_seconds
from .profiling import finish_profile, start_py_spy
from .stats import PhaseResult
from .targets import (
    direct_endpoint,
    litellm_endpoint,
    litellm_version,
    mpchat_endpoint,
    start_fake,
    start_litellm,
    start_mpchat,
)

__all__ = ["HeldPlan", "HeldResult", "LoadProcess", "held_target", "run_held"]

BENCH_DIR = Path(__file__).resolve().parent.parent


@dataclass
class HeldPlan:
    streams: int
    modes: list[str]  # "burst", "steady"
    ttft_ms: float
    chunks: int
    gap_ms: float
    warmup: int
    turns: int

    @property
    def answer_s(self) -> float:
        """How long the fake takes over one answer, first byte to last delta."""
        return (self.ttft_ms + max(0, self.chunks - 1) * self.gap_ms) / 1000

    @property
    def timeout_s(self) -> float:
        """A chat still open after this long is counted as failed (the client's total)."""
        return max(120.0, 6 * self.answer_s)


@dataclass
class HeldResult:
    name: str
    phases: dict[str, PhaseResult] = field(default_factory=dict)
    # mode -> process -> CPU milliseconds per chat over that phase
    cpu_ms_per_chat: dict[str, dict[str, float]] = field(default_factory=dict)
    # mode -> the load client's CPU seconds ÷ the phase's wall seconds (1.0: one core busy)
    load_client_busy: dict[str, float] = field(default_factory=dict)
    provider_max_in_flight: dict[str, int] = field(default_factory=dict)
    memory_after_warmup_kib: dict[str, int] = field(default_factory=dict)
    memory_after_load_kib: dict[str, int] = field(default_factory=dict)
    failure: str = ""
    notes: list[str] = field(default_factory=list)


class LoadProcess:
    """`chatbench.held_load` as a child process, spoken to one JSON line at a time."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self._proc = proc

    @property
    def pid(self) -> int:
        return self._proc.pid

    @classmethod
    async def start(cls, tmp: Path, name: str) -> LoadProcess:
        env = base_env() | {"PYTHONPATH": str(BENCH_DIR)}
        with (tmp / f"{name}-load.log").open("wb") as log:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "chatbench.held_load",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
                env=env,
                cwd=tmp,
                limit=16 * 1024 * 1024,  # a phase's result is one long line
            )
        return cls(proc)

    async def ask(self, message: dict[str, Any], *, within: float) -> dict[str, Any]:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write(json.dumps(message).encode() + b"\n")
        await self._proc.stdin.drain()
        line = await asyncio.wait_for(self._proc.stdout.readline(), within)
        if not line:
            raise RuntimeError(f"the load client exited ({await self._proc.wait()}); see its log")
        answer: dict[str, Any] = json.loads(line)
        return answer

    async def stop(self) -> None:
        if self._proc.stdin is not None and not self._proc.stdin.is_closing():
            self._proc.stdin.close()
        try:
            await asyncio.wait_for(self._proc.wait(), 30)
        except TimeoutError:
            self._proc.kill()
            await self._proc.wait()


async def _fake_control(fake_port: int, action: str) -> dict[str, Any]:
    url = f"http://127.0.0.1:{fake_port}/_control/{action}"
    async with (
        aiohttp.ClientSession() as session,
        session.request("POST" if action == "reset" else "GET", url) as resp,
    ):
        answer: dict[str, Any] = await resp.json()
        return answer


async def held_target(
    name: str,
    endpoint: Endpoint,
    plan: HeldPlan,
    *,
    tmp: Path,
    fake: Child,
    fake_port: int,
    server: Child | None,
    on_first_phase: Callable[[], None] | None = None,
) -> HeldResult:
    """Every phase of ``plan`` against one target; the server (if any) is already running."""
    result = HeldResult(name)
    load = await LoadProcess.start(tmp, name)
    try:
        users = plan.streams if endpoint.kind == "mpchat" else 0
        job = {
            "endpoint": {"kind": endpoint.kind, "base": endpoint.base, "api_key": endpoint.api_key},
            "users": users,
            "turns": plan.turns,
            "connections": plan.streams + 64,
            "warmup": plan.warmup,
            "timeout_s": plan.timeout_s,
            "run_id": f"{os.getpid()}-{name}",
        }
        ready = await load.ask(job, within=600)
        result.notes.append(f"load client: pid {load.pid}, RLIMIT_NOFILE {ready['nofile']}")
        if server is not None:
            result.memory_after_warmup_kib = memory_kib(server.pid)
        for i, mode in enumerate(plan.modes):
            await _fake_control(fake_port, "reset")
            spec: dict[str, Any] = {"mode": mode, "n": plan.streams}
            if mode == "steady":
                spec["spread_s"] = plan.answer_s
            readers: dict[str, Callable[[], float]] = {
                "load client": lambda: cpu_seconds(load.pid),
                "fake provider": lambda: cpu_seconds(fake.pid),
            }
            if server is not None:
                readers[name] = lambda: tree_cpu_seconds(server.pid)
            before = {who: read() for who, read in readers.items()}
            started = time.perf_counter()
            if i == 0 and on_first_phase is not None:
                on_first_phase()
            answer = await load.ask(spec, within=plan.timeout_s + 3 * plan.answer_s + 60)
            wall = time.perf_counter() - started
            used = {who: read() - before[who] for who, read in readers.items()}
            phase = PhaseResult(**answer["result"])
            result.phases[mode] = phase
            chats = max(1, phase.chats)
            result.cpu_ms_per_chat[mode] = {who: s * 1000 / chats for who, s in used.items()}
            result.load_client_busy[mode] = used["load client"] / wall if wall else 0.0
            stats = await _fake_control(fake_port, "stats")
            result.provider_max_in_flight[mode] = int(stats["max_in_flight"])
            if server is not None and stats["requests"] != phase.chats:
                result.notes.append(
                    f"{mode}: the provider saw {stats['requests']} requests for {phase.chats} chats"
                )
            await asyncio.sleep(1.0)  # let the last streams' bookkeeping settle
        if server is not None:
            result.memory_after_load_kib = memory_kib(server.pid)
    except (RuntimeError, TimeoutError, OSError, ValueError, aiohttp.ClientError) as exc:
        result.failure = f"{type(exc).__name__}: {exc}"
    finally:
        await load.stop()
    return result


def _profile_into(profile: dict[str, Any], child: Child, tmp: Path, seconds: int) -> None:
    profile.update(start_py_spy(child, tmp, seconds))


async def run_held(
    plan: HeldPlan,
    tmp: Path,
    *,
    mpchat_env: dict[str, str],
    mpchat_src: Path | None = None,
    litellm: bool = False,
    py_spy: int = 0,
) -> tuple[list[HeldResult], dict[str, Any]]:
    """The scenario against direct, mpchat and (``litellm``) LiteLLM, one after the other.

    One slow fake serves them all; each server is started fresh for its turn and stopped
    after it. ``py_spy``: seconds of py-spy samples of mpchat from the start of the first phase.
    """
    results: list[HeldResult] = []
    profile: dict[str, Any] = {}
    fake, fake_port = start_fake(
        tmp, chunks=plan.chunks, gap_ms=plan.gap_ms, ttft_ms=plan.ttft_ms, name="slow"
    )
    try:
        print("direct to the fake provider ...", flush=True)
        results.append(
            await held_target(
                "direct",
                direct_endpoint(fake_port),
                plan,
                tmp=tmp,
                fake=fake,
                fake_port=fake_port,
                server=None,
            )
        )
        names = ["mpchat", "litellm"] if litellm else ["mpchat"]
        for name in names:
            print(f"through {name} ...", flush=True)
            child: Child | None = None
            try:
                if name == "mpchat":
                    child, port, _ = start_mpchat(tmp, fake_port, mpchat_env, mpchat_src)
                    endpoint = mpchat_endpoint(port)
                else:
                    child, port, _ = start_litellm(tmp, fake_port)
                    endpoint = litellm_endpoint(port)
                hook = None
                if py_spy and name == "mpchat":
                    hook = functools.partial(_profile_into, profile, child, tmp, py_spy)
                result = await held_target(
                    name,
                    endpoint,
                    plan,
                    tmp=tmp,
                    fake=fake,
                    fake_port=fake_port,
                    server=child,
                    on_first_phase=hook,
                )
                if name == "litellm":
                    result.notes.append(f"litellm {litellm_version()}, 1 worker, no database")
                finish_profile(profile, saved_as="mpchat-held-profile.txt")
            except (RuntimeError, TimeoutError, OSError) as exc:
                result = HeldResult(name, failure=f"{type(exc).__name__}: {exc}")
            finally:
                if child is not None:
                    child.stop()
            results.append(result)
    finally:
        fake.stop()
    return results, profile
