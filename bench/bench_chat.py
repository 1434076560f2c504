"""Streaming chat benchmark: direct to the fake provider vs through mpchat (vs LiteLLM's proxy).

    .venv/bin/python bench/bench_chat.py             # direct and mpchat, about 30-60 s
    .venv/bin/python bench/bench_chat.py --litellm   # and LiteLLM's proxy, side by side

Every server is a subprocess on a free loopback port: the fake OpenAI-compatible provider
(``mpchat fake-upstream``, 0 ms to first token, 20 chunks, no gap), mpchat (``mpchat serve``,
SQLite in a temporary directory) and, with ``--litellm``, LiteLLM's proxy from its own
virtualenv ``bench/.litellm-venv``. The load generator is this script's own process (aiohttp
client on uvloop), so it shares no interpreter and no GIL with anything it measures; on a
2-core machine it still shares the CPUs, which every figure here includes.

See docs/benchmarks.md for what each figure means and the bars they are checked against.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _procs import (
    Child,
    base_env,
    cpu_seconds,
    free_port,
    memory_kib,
    start_child,
)

BENCH_DIR = Path(__file__).resolve().parent
LITELLM_VENV = BENCH_DIR / ".litellm-venv"
MODEL = "fake-model"
LITELLM_MASTER_KEY = "sk-bench-master-key"
PROMPT = "你好，请简单介绍一下你自己。"

# The bars of issue 2 (2-core machine, SQLite, fake provider with 0 ms TTFT and 20 chunks).
BAR_TTFB_OVERHEAD_MS = 3.0
BAR_CHATS_PER_S_C64 = 300.0
BAR_COLD_START_S = 1.5
BAR_RSS_MIB = 150.0


# ---------------------------------------------------------------------------- measurements


@dataclass(slots=True)
class Sample:
    """One streamed chat, times in seconds from just before the request was sent."""

    ok: bool
    ttfb: float = 0.0  # status line and headers received
    first_delta: float = 0.0  # first piece of content parsed
    total: float = 0.0  # the stream's terminating event parsed and the body read to its end
    deltas: int = 0
    error: str = ""


@dataclass
class PhaseResult:
    concurrency: int
    chats: int
    errors: int
    wall_s: float
    ttfb_ms: dict[str, float]
    first_delta_ms: dict[str, float]
    total_ms: dict[str, float]
    error_examples: list[str] = field(default_factory=list)
    deltas_per_chat: float = 0.0  # content events the client received per chat (mean)

    @property
    def chats_per_s(self) -> float:
        return (self.chats - self.errors) / self.wall_s if self.wall_s else 0.0


def percentiles(values: list[float]) -> dict[str, float]:
    """p50 and p99 in milliseconds (nearest-rank), plus the mean."""
    if not values:
        return {"p50": float("nan"), "p99": float("nan"), "mean": float("nan")}
    ordered = sorted(values)

    def rank(p: float) -> float:
        index = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))
        return ordered[index] * 1000

    return {"p50": rank(50), "p99": rank(99), "mean": sum(ordered) / len(ordered) * 1000}


async def run_phase(
    chat: Callable[[], Awaitable[Sample]], *, concurrency: int, chats: int, max_seconds: float
) -> PhaseResult:
    """``chats`` chats by ``concurrency`` workers, each starting the next as soon as one ends.

    Stops starting new chats after ``max_seconds`` so a slow target cannot stretch the run;
    the chats actually done are what the figures count.
    """
    samples: list[Sample] = []
    remaining = chats
    deadline = time.perf_counter() + max_seconds

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0 and time.perf_counter() < deadline:
            remaining -= 1
            samples.append(await chat())

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - started
    good = [s for s in samples if s.ok]
    bad = [s for s in samples if not s.ok]
    return PhaseResult(
        concurrency=concurrency,
        chats=len(samples),
        errors=len(bad),
        wall_s=wall,
        ttfb_ms=percentiles([s.ttfb for s in good]),
        first_delta_ms=percentiles([s.first_delta for s in good]),
        total_ms=percentiles([s.total for s in good]),
        error_examples=sorted({s.error for s in bad})[:5],
        deltas_per_chat=sum(s.deltas for s in good) / len(good) if good else 0.0,
    )


# ---------------------------------------------------------------------------- clients


async def openai_stream_chat(
    session: aiohttp.ClientSession, url: str, headers: dict[str, str]
) -> Sample:
    """One OpenAI-style streamed completion (SSE), as a direct caller or a LiteLLM client."""
    body = orjson.dumps(
        {"model": MODEL, "stream": True, "messages": [{"role": "user", "content": PROMPT}]}
    )
    sample = Sample(ok=False)
    t0 = time.perf_counter()
    try:
        async with session.post(url, data=body, headers=headers) as resp:
            sample.ttfb = time.perf_counter() - t0
            if resp.status != 200:
                sample.error = f"HTTP {resp.status}: {(await resp.text())[:200]}"
                return sample
            done = False
            async for line in resp.content:
                if not line.startswith(b"data: "):
                    continue
                data = line[6:].strip()
                if data == b"[DONE]":
                    done = True
                    continue
                event = orjson.loads(data)
                choices = event.get("choices") or []
                if choices and (choices[0].get("delta") or {}).get("content"):
                    if not sample.deltas:
                        sample.first_delta = time.perf_counter() - t0
                    sample.deltas += 1
            sample.total = time.perf_counter() - t0
            sample.ok = done and sample.deltas > 0
            if not sample.ok:
                sample.error = f"stream ended without [DONE] after {sample.deltas} deltas"
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        sample.error = f"{type(exc).__name__}: {exc}"[:200]
    return sample


@dataclass(slots=True)
class User:
    token: str
    conversation_id: str | None = None
    turns: int = 0


class MpchatClient:
    """Chats as many users, each continuing its own conversation for ``turns`` turns.

    Users wait in a queue, so no user ever has two chats in flight (as on a phone), and a
    continued conversation makes mpchat read and decrypt the history on every turn. After
    ``turns`` turns the user starts a new conversation, which keeps the history bounded.
    """

    def __init__(self, session: aiohttp.ClientSession, base: str, *, turns: int) -> None:
        self._session = session
        self._base = base
        self._turns = turns
        self._idle: asyncio.Queue[User] = asyncio.Queue()

    async def login(self, users: int, *, run_id: str) -> None:
        sem = asyncio.Semaphore(16)

        async def one(i: int) -> None:
            async with (
                sem,
                self._session.post(
                    f"{self._base}/api/v1/login", json={"code": f"bench-{run_id}-{i}"}
                ) as resp,
            ):
                if resp.status != 200:
                    raise RuntimeError(f"login failed: HTTP {resp.status} {await resp.text()}")
                self._idle.put_nowait(User(token=(await resp.json())["token"]))

        await asyncio.gather(*(one(i) for i in range(users)))

    async def chat(self) -> Sample:
        user = await self._idle.get()
        try:
            return await self._chat_as(user)
        finally:
            self._idle.put_nowait(user)

    async def _chat_as(self, user: User) -> Sample:
        payload: dict[str, Any] = {"content": PROMPT}
        if user.conversation_id and user.turns < self._turns:
            payload["conversation_id"] = user.conversation_id
        else:
            user.conversation_id, user.turns = None, 0
        headers = {"Authorization": f"Bearer {user.token}", "Content-Type": "application/json"}
        sample = Sample(ok=False)
        t0 = time.perf_counter()
        try:
            async with self._session.post(
                f"{self._base}/api/v1/chat", data=orjson.dumps(payload), headers=headers
            ) as resp:
                sample.ttfb = time.perf_counter() - t0
                if resp.status != 200:
                    sample.error = f"HTTP {resp.status}: {(await resp.text())[:200]}"
                    return sample
                done = False
                async for line in resp.content:
                    event = orjson.loads(line)
                    kind = event.get("type")
                    if kind == "delta":
                        if not sample.deltas:
                            sample.first_delta = time.perf_counter() - t0
                        sample.deltas += 1
                    elif kind == "start":
                        user.conversation_id = event["conversation_id"]
                    elif kind == "done":
                        done = True
                    elif kind in ("error", "retract"):
                        sample.error = f"{kind}: {event.get('code') or event.get('reason')}"
                sample.total = time.perf_counter() - t0
                sample.ok = done and sample.deltas > 0
                if done:
                    user.turns += 1
                elif not sample.error:
                    sample.error = f"stream ended without done after {sample.deltas} deltas"
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            sample.error = f"{type(exc).__name__}: {exc}"[:200]
        return sample


# ---------------------------------------------------------------------------- servers


def mpchat_argv(*args: str) -> list[str]:
    """The ``mpchat`` console script next to this interpreter (the project's .venv)."""
    script = Path(sys.executable).with_name("mpchat")
    if script.exists():
        return [str(script), *args]
    return [sys.executable, "-m", "mpchat", *args]


def start_fake(tmp: Path, *, chunks: int, gap_ms: float = 0.0) -> tuple[Child, int]:
    port = free_port()
    child = start_child(
        "fake-upstream",
        mpchat_argv(
            "fake-upstream",
            "--port",
            str(port),
            "--ttft-ms",
            "0",
            "--chunks",
            str(chunks),
            "--gap-ms",
            str(gap_ms),
        ),
        env=base_env(),
        log_dir=tmp,
    )
    child.wait_http_ok(port, "/v1/models", timeout=30)
    return child, port


def start_mpchat(
    tmp: Path, fake_port: int, extra_env: dict[str, str], src: Path | None
) -> tuple[Child, int, float]:
    """A fresh mpchat (new data dir, so new SQLite file and dev keys): child, port, cold start.

    ``src``: run the ``mpchat`` package found there instead of the installed one, e.g. a
    ``git archive`` of another commit, to compare two versions with the same harness.
    """
    port = free_port()
    data_dir = Path(tempfile.mkdtemp(prefix="mpchat-data-", dir=tmp))
    env = (
        base_env()
        | {
            "MPCHAT_HOST": "127.0.0.1",
            "MPCHAT_PORT": str(port),
            "MPCHAT_DATA_DIR": str(data_dir),
            "MPCHAT_AUTH_MODE": "dev",
            "MPCHAT_UPSTREAM_BASE_URL": f"http://127.0.0.1:{fake_port}/v1",
            "MPCHAT_UPSTREAM_API_KEY": "bench-upstream-key",
            "MPCHAT_UPSTREAM_MODEL": MODEL,
            # Measure the chat path, not the limiter (bench/bench_limits.py measures that);
            # the load logs in many users from one address, so login is opened up as well.
            "MPCHAT_RATE_LIMIT": "100000/second",
            "MPCHAT_LOGIN_RATE_LIMIT": "100000/second",
            "MPCHAT_LOG_LEVEL": "WARNING",
        }
        | extra_env
    )
    argv = mpchat_argv("serve")
    if src is not None:
        env["PYTHONPATH"] = str(src)
        argv = [sys.executable, "-m", "mpchat", "serve"]
    child = start_child("mpchat", argv, env=env, log_dir=tmp)
    cold = child.wait_http_ok(port, "/healthz", timeout=60)
    return child, port, cold


def ensure_litellm() -> Path:
    """LiteLLM's proxy in its own virtualenv (never a project dependency); its CLI path."""
    cli = LITELLM_VENV / "bin" / "litellm"
    if cli.exists():
        return cli
    print(f"installing LiteLLM's proxy into {LITELLM_VENV} (first use only) ...", flush=True)
    python3 = shutil.which("python3") or sys.executable
    subprocess.run([python3, "-m", "venv", str(LITELLM_VENV)], check=True)
    subprocess.run(
        [str(LITELLM_VENV / "bin" / "python"), "-m", "pip", "install", "-q", "litellm[proxy]"],
        check=True,
    )
    if not cli.exists():
        raise RuntimeError(f"pip installed litellm[proxy] but {cli} is missing")
    return cli


def litellm_version() -> str:
    out = subprocess.run(
        [
            str(LITELLM_VENV / "bin" / "python"),
            "-c",
            "import importlib.metadata as m; print(m.version('litellm'))",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    return out.stdout.strip() or "unknown"


def start_litellm(tmp: Path, fake_port: int) -> tuple[Child, int, float]:
    cli = ensure_litellm()
    port = free_port()
    config = tmp / "litellm.yaml"
    # JSON is YAML: no YAML library needed here.
    config.write_text(
        json.dumps(
            {
                "model_list": [
                    {
                        "model_name": MODEL,
                        "litellm_params": {
                            "model": f"openai/{MODEL}",
                            "api_base": f"http://127.0.0.1:{fake_port}/v1",
                            "api_key": "x",
                        },
                    }
                ],
                "general_settings": {"master_key": LITELLM_MASTER_KEY},
                "litellm_settings": {"telemetry": False},
            }
        )
    )
    env = {k: v for k, v in base_env().items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env |= {
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no fetch of the price list from the internet
        "LITELLM_LOG": "ERROR",
        "LITELLM_TELEMETRY": "False",
        "DISABLE_SCHEMA_UPDATE": "True",
    }
    child = start_child(
        "litellm",
        [
            str(cli),
            "--config",
            str(config),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--num_workers",
            "1",
        ],
        env=env,
        log_dir=tmp,
    )
    cold = child.wait_http_ok(port, "/health/liveliness", timeout=180)
    return child, port, cold


# ---------------------------------------------------------------------------- one target


@dataclass
class TargetResult:
    name: str
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
    chat: Callable[[], Awaitable[Sample]],
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


def new_session(concurrency: int) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=concurrency + 16, limit_per_host=0, keepalive_timeout=30)
    return aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=120, sock_connect=10)
    )


async def fake_stats(session: aiohttp.ClientSession, fake_port: int) -> dict[str, int]:
    async with session.get(f"http://127.0.0.1:{fake_port}/_control/stats") as resp:
        stats: dict[str, int] = await resp.json()
        return stats


async def bench_direct(fake_port: int, fake_pid: int, plan: Plan) -> TargetResult:
    result = TargetResult("direct")
    url = f"http://127.0.0.1:{fake_port}/v1/chat/completions"
    headers = {"Authorization": "Bearer x", "Content-Type": "application/json"}
    async with new_session(plan.concurrency) as session:
        await measure(
            result, lambda: openai_stream_chat(session, url, headers), plan, None, fake_pid
        )
    return result


async def bench_mpchat(
    tmp: Path,
    fake_port: int,
    fake_pid: int,
    plan: Plan,
    args: argparse.Namespace,
) -> tuple[TargetResult, dict[str, Any]]:
    result = TargetResult("mpchat")
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
        base = f"http://127.0.0.1:{port}"
        async with new_session(plan.concurrency) as session:
            before = await fake_stats(session, fake_port)
            client = MpchatClient(session, base, turns=args.turns)
            await client.login(args.users, run_id=str(os.getpid()))
            hook = None
            if args.py_spy:
                hook = lambda: profile.update(start_py_spy(child, tmp, args.py_spy))  # noqa: E731
            await measure(result, client.chat, plan, child.pid, fake_pid, hook)
            after = await fake_stats(session, fake_port)
        sent = after["requests"] - before["requests"]
        result.notes.append(f"provider requests made by mpchat: {sent}")
        if profile:
            profile["proc"].wait(timeout=120)
            profile.update(summarise_profile(Path(profile["raw"]), Path(profile["log"])))
            del profile["proc"]
    except (RuntimeError, TimeoutError, OSError) as exc:
        result.failure = str(exc)
    finally:
        if child is not None:
            child.stop()
    return result, profile


async def bench_litellm(tmp: Path, fake_port: int, fake_pid: int, plan: Plan) -> TargetResult:
    result = TargetResult("litellm")
    child: Child | None = None
    try:
        child, port, cold = start_litellm(tmp, fake_port)
        result.cold_start_s.append(cold)
        result.notes.append(f"litellm {litellm_version()}, 1 worker, no database")
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        headers = {
            "Authorization": f"Bearer {LITELLM_MASTER_KEY}",
            "Content-Type": "application/json",
        }
        async with new_session(plan.concurrency) as session:
            await measure(
                result, lambda: openai_stream_chat(session, url, headers), plan, child.pid, fake_pid
            )
    except (RuntimeError, TimeoutError, OSError, subprocess.CalledProcessError) as exc:
        result.failure = f"{type(exc).__name__}: {exc}"
    finally:
        if child is not None:
            child.stop()
    return result


# ---------------------------------------------------------------------------- profiling


def start_py_spy(child: Child, tmp: Path, seconds: int) -> dict[str, Any]:
    """Sample mpchat with py-spy during the high-concurrency phase (collapsed stacks).

    ``--gil`` keeps only samples of the thread holding the GIL, i.e. Python CPU time, so
    threads blocked in a queue (aiosqlite's worker) do not show up as busy.
    """
    py_spy = Path(sys.executable).with_name("py-spy")
    raw = tmp / "mpchat-profile.txt"
    log_path = tmp / "py-spy.log"
    argv = [str(py_spy), "record", "--pid", str(child.pid), "--duration", str(seconds)]
    argv += ["--gil", "--rate", "250", "--format", "raw", "--output", str(raw), "--nonblocking"]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    return {"proc": proc, "raw": str(raw), "log": str(log_path)}


def summarise_profile(raw: Path, log: Path, top: int = 25) -> dict[str, Any]:
    """Self time and inclusive time per frame, from py-spy's collapsed-stack output."""
    if not raw.exists():
        detail = log.read_text(errors="replace")[-500:] if log.exists() else ""
        return {"error": f"py-spy wrote no profile: {detail}"}
    self_time: dict[str, int] = {}
    packages: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        self_time[frames[-1]] = self_time.get(frames[-1], 0) + count
        # "func (sqlalchemy/engine/base.py:1494)" -> "sqlalchemy"; native loop time shows
        # up as the Runner.run frame, i.e. under "asyncio".
        package = frames[-1].rpartition("(")[2].split("/")[0].split(":")[0] or "?"
        packages[package] = packages.get(package, 0) + count
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + count

    def share(table: dict[str, int]) -> list[tuple[str, float]]:
        best = sorted(table.items(), key=lambda kv: kv[1], reverse=True)[:top]
        return [(frame, round(100 * n / total, 1)) for frame, n in best]

    saved = BENCH_DIR / "results" / "mpchat-profile.txt"
    saved.parent.mkdir(exist_ok=True)
    shutil.copyfile(raw, saved)
    return {
        "packages": share(packages),
        "samples": total,
        "self": share(self_time),
        "inclusive": share(inclusive),
        "raw": str(saved),
    }


# ---------------------------------------------------------------------------- report


def fmt(value: float | None, digits: int = 2) -> str:
    if value is None or value != value:  # None or NaN
        return "-"
    return f"{value:.{digits}f}"


def table(results: list[TargetResult], concurrency: int) -> str:
    def phase(r: TargetResult, level: str) -> PhaseResult | None:
        return r.c1 if level == "c1" else r.c64

    def pct(getter: str, level: str, p: str) -> Callable[[TargetResult], str]:
        def cell(r: TargetResult) -> str:
            ph = phase(r, level)
            return fmt(getattr(ph, getter)[p]) if ph else "-"

        return cell

    def rate(level: str) -> Callable[[TargetResult], str]:
        def cell(r: TargetResult) -> str:
            ph = phase(r, level)
            return fmt(ph.chats_per_s, 1) if ph else "-"

        return cell

    def mem(attr: str, key: str) -> Callable[[TargetResult], str]:
        def cell(r: TargetResult) -> str:
            value = getattr(r, attr).get(key)
            return fmt(value / 1024, 1) if value else "-"

        return cell

    def cold(r: TargetResult) -> str:
        if not r.cold_start_s:
            return "-"
        ordered = sorted(r.cold_start_s)
        median = ordered[len(ordered) // 2]
        return fmt(median) + (f" (max {fmt(ordered[-1])})" if len(ordered) > 1 else "")

    def cpu(who: str) -> Callable[[TargetResult], str]:
        def cell(r: TargetResult) -> str:
            value = r.cpu_ms_per_chat.get(r.name if who == "server" else who)
            return fmt(value) if value is not None else "-"

        return cell

    def deltas(r: TargetResult) -> str:
        ph = phase(r, "c64")
        return fmt(ph.deltas_per_chat, 1) if ph else "-"

    def errors(r: TargetResult) -> str:
        phases = [p for p in (r.c1, r.c64) if p]
        return ", ".join(f"{p.errors}/{p.chats}" for p in phases) if phases else "-"

    c = concurrency
    rows: list[tuple[str, Callable[[TargetResult], str]]] = [
        ("time to first byte p50, c=1 (ms)", pct("ttfb_ms", "c1", "p50")),
        ("time to first byte p99, c=1 (ms)", pct("ttfb_ms", "c1", "p99")),
        ("time to first delta p50, c=1 (ms)", pct("first_delta_ms", "c1", "p50")),
        ("time to first delta p99, c=1 (ms)", pct("first_delta_ms", "c1", "p99")),
        ("total latency p50, c=1 (ms)", pct("total_ms", "c1", "p50")),
        ("total latency p99, c=1 (ms)", pct("total_ms", "c1", "p99")),
        (f"total latency p50, c={c} (ms)", pct("total_ms", "c64", "p50")),
        (f"total latency p99, c={c} (ms)", pct("total_ms", "c64", "p99")),
        (f"time to first delta p50, c={c} (ms)", pct("first_delta_ms", "c64", "p50")),
        ("chats/s, c=1", rate("c1")),
        (f"chats/s, c={c}", rate("c64")),
        ("cold start to /healthz 200 (s)", cold),
        ("peak RSS, VmHWM (MiB)", mem("memory_after_load_kib", "VmHWM")),
        ("RSS after warm-up (MiB)", mem("memory_after_warmup_kib", "VmRSS")),
        ("RSS after load, VmRSS (MiB)", mem("memory_after_load_kib", "VmRSS")),
        (f"CPU ms per chat at c={c}: the server", cpu("server")),
        (f"CPU ms per chat at c={c}: fake provider", cpu("fake provider")),
        (f"CPU ms per chat at c={c}: load generator", cpu("load generator")),
        (f"delta events per chat received, c={c} (mean)", deltas),
        (f"failed chats (c=1, c={c})", errors),
    ]
    header = ["", *(r.name for r in results)]
    body = [[label, *(cell(r) for r in results)] for label, cell in rows]
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    lines = [
        "| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |",
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    for row in body:
        cells = [
            row[0].ljust(widths[0]),
            *(v.rjust(w) for v, w in zip(row[1:], widths[1:], strict=True)),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def bars(direct: TargetResult, mpchat: TargetResult, concurrency: int) -> list[dict[str, Any]]:
    checks: list[dict[str, Any]] = []

    def add(name: str, value: float | None, limit: float, ok: bool | None, unit: str) -> None:
        verdict = "n/a" if ok is None else ("PASS" if ok else "FAIL")
        checks.append(
            {"bar": name, "value": value, "limit": limit, "unit": unit, "verdict": verdict}
        )

    if direct.c1 and mpchat.c1:
        extra = mpchat.c1.ttfb_ms["p50"] - direct.c1.ttfb_ms["p50"]
        add(
            "mpchat adds <= 3 ms p50 to time to first byte at c=1",
            extra,
            BAR_TTFB_OVERHEAD_MS,
            extra <= BAR_TTFB_OVERHEAD_MS,
            "ms",
        )
    else:
        add(
            "mpchat adds <= 3 ms p50 to time to first byte at c=1",
            None,
            BAR_TTFB_OVERHEAD_MS,
            None,
            "ms",
        )
    rate = mpchat.c64.chats_per_s if mpchat.c64 else None
    add(
        f">= 300 streamed chats/s through mpchat at c={concurrency}",
        rate,
        BAR_CHATS_PER_S_C64,
        None if rate is None else rate >= BAR_CHATS_PER_S_C64,
        "chats/s",
    )
    cold = max(mpchat.cold_start_s) if mpchat.cold_start_s else None
    add(
        "mpchat cold start < 1.5 s (worst of the runs)",
        cold,
        BAR_COLD_START_S,
        None if cold is None else cold < BAR_COLD_START_S,
        "s",
    )
    rss = mpchat.memory_after_load_kib.get("VmRSS")
    rss_mib = rss / 1024 if rss else None
    add(
        "mpchat RSS after load < 150 MB",
        rss_mib,
        BAR_RSS_MIB,
        None if rss_mib is None else rss_mib < BAR_RSS_MIB,
        "MiB",
    )
    return checks


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_at_start": os.getloadavg(),
    }


# ---------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--litellm",
        action="store_true",
        help="also measure LiteLLM's proxy (installed into bench/.litellm-venv)",
    )
    p.add_argument("--concurrency", type=int, default=64, help="the high-concurrency level")
    p.add_argument("--warmup", type=int, default=200, help="unmeasured chats first (at c=8)")
    p.add_argument("--chats-c1", type=int, default=300, help="chats at concurrency 1")
    p.add_argument("--chats", type=int, default=3000, help="chats at high concurrency")
    p.add_argument(
        "--max-phase-seconds",
        type=float,
        default=20.0,
        help="stop starting chats in a phase after this long",
    )
    p.add_argument("--users", type=int, default=128, help="distinct mpchat users (logins)")
    p.add_argument(
        "--turns",
        type=int,
        default=8,
        help="turns a user continues one conversation before starting a new one",
    )
    p.add_argument("--chunks", type=int, default=20, help="deltas per answer from the fake")
    p.add_argument(
        "--gap-ms", type=float, default=0.0,
        help="the fake's pause between deltas (0: back to back, as the bars specify)",
    )
    p.add_argument("--cold-starts", type=int, default=3, help="mpchat cold starts to time")
    p.add_argument(
        "--mpchat-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for mpchat, e.g. MPCHAT_UPSTREAM_MAX_CONCURRENCY=64",
    )
    p.add_argument(
        "--mpchat-src",
        type=Path,
        metavar="DIR",
        help="run mpchat from this source directory (PYTHONPATH) instead of the installed one",
    )
    p.add_argument(
        "--py-spy",
        type=int,
        default=0,
        metavar="SECONDS",
        help="profile mpchat with py-spy for SECONDS during the high phase",
    )
    p.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    p.add_argument("--strict", action="store_true", help="exit 1 when a bar is missed")
    args = p.parse_args(argv)
    if args.users < args.concurrency:
        p.error("--users must be at least --concurrency (no user has two chats in flight)")
    return args


async def amain(args: argparse.Namespace) -> int:
    plan = Plan(
        warmup=args.warmup,
        chats_c1=args.chats_c1,
        chats_high=args.chats,
        concurrency=args.concurrency,
        max_phase_s=args.max_phase_seconds,
    )
    info = machine()
    print(
        f"machine: {info['nproc']} CPUs ({info['cpu']}), Python {info['python']}, "
        f"load average at start {', '.join(f'{x:.2f}' for x in info['loadavg_at_start'])}"
    )
    print(
        f"plan: warm-up {plan.warmup}, {plan.chats_c1} chats at c=1, {plan.chats_high} at "
        f"c={plan.concurrency} (each phase capped at {plan.max_phase_s:.0f} s); "
        f"{args.chunks} chunks per answer; {args.users} mpchat users, "
        f"{args.turns} turns per conversation",
        flush=True,
    )
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-chat-") as tmp_name:
        tmp = Path(tmp_name)
        fake, fake_port = start_fake(tmp, chunks=args.chunks, gap_ms=args.gap_ms)
        try:
            print("direct to the fake provider ...", flush=True)
            direct = await bench_direct(fake_port, fake.pid, plan)
            print("through mpchat ...", flush=True)
            mpchat, profile = await bench_mpchat(tmp, fake_port, fake.pid, plan, args)
            results = [direct, mpchat]
            if args.litellm:
                print("through LiteLLM's proxy ...", flush=True)
                results.append(await bench_litellm(tmp, fake_port, fake.pid, plan))
        finally:
            fake.stop()
    elapsed = time.perf_counter() - started

    print()
    print(table(results, plan.concurrency))
    for r in results:
        for note in r.notes:
            print(f"{r.name}: {note}")
        for phase in (r.c1, r.c64):
            if phase and phase.error_examples:
                print(f"{r.name} c={phase.concurrency} errors: {phase.error_examples}")
        if r.failure:
            print(f"{r.name} FAILED: {r.failure}")
    print()
    checks = bars(direct, mpchat, plan.concurrency)
    for check in checks:
        print(f"[{check['verdict']}] {check['bar']}: {fmt(check['value'])} {check['unit']}")
    if profile:
        print(
            f"\npy-spy profile of mpchat ({profile.get('samples', 0)} samples, "
            f"raw stacks in {profile.get('raw')}):"
        )
        for label in ("packages", "self", "inclusive"):
            print(f"  {'self time by package' if label == 'packages' else f'top by {label} time'}:")
            for frame, share in profile.get(label, [])[:15]:
                print(f"    {share:5.1f}%  {frame}")
        if "error" in profile:
            print(f"  {profile['error']}")
    print(f"\nwhole run: {elapsed:.1f} s")

    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "machine": info,
                    "plan": asdict(plan),
                    "results": [
                        asdict(r)
                        | {
                            "chats_per_s": {
                                "c1": r.c1.chats_per_s if r.c1 else None,
                                "high": r.c64.chats_per_s if r.c64 else None,
                            }
                        }
                        for r in results
                    ],
                    "bars": checks,
                    "profile": profile,
                },
                indent=2,
                default=str,
            )
        )
    missed = any(c["verdict"] == "FAIL" for c in checks)
    return 1 if (args.strict and missed) else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
        return asyncio.run(amain(args))
    return uvloop.run(amain(args))


if __name__ == "__main__":
    sys.exit(main())
