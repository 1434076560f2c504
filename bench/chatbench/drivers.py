"""How many chats are driven: a closed loop (N workers), a burst, and a steady arrival rate."""

from __future__ import annotations

import asyncio
import time

from .load import Chat, Sample
from .stats import PhaseResult, summarise

__all__ = ["burst", "run_phase", "steady"]


async def run_phase(chat: Chat, *, concurrency: int, chats: int, max_seconds: float) -> PhaseResult:
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
    return summarise(samples, concurrency=concurrency, wall_s=time.perf_counter() - started)


def _max_overlap(spans: list[tuple[float, float]]) -> int:
    edges = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    most = now = 0
    for _, step in edges:
        now += step
        most = max(most, now)
    return most


async def _open_loop(chat: Chat, due: list[float]) -> PhaseResult:
    """Start chat i at ``due[i]`` seconds from now, never waiting for earlier ones to end."""
    spans: list[tuple[float, float]] = []
    lags: list[float] = [0.0]
    started = time.perf_counter()

    async def one() -> Sample:
        t0 = time.perf_counter() - started
        sample = await chat()
        spans.append((t0, time.perf_counter() - started))
        return sample

    tasks: list[asyncio.Task[Sample]] = []
    for at in due:
        delay = started + at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        lags.append(time.perf_counter() - started - at)
        tasks.append(asyncio.create_task(one()))
    samples = list(await asyncio.gather(*tasks))
    result = summarise(samples, concurrency=len(due), wall_s=time.perf_counter() - started)
    result.max_in_flight = _max_overlap(spans)
    result.max_start_lag_ms = max(lags) * 1000
    return result


async def burst(chat: Chat, n: int) -> PhaseResult:
    """``n`` chats started together, all held open until each ends."""
    return await _open_loop(chat, [0.0] * n)


async def steady(chat: Chat, n: int, spread_s: float) -> PhaseResult:
    """``n`` chats arriving at an even rate over ``spread_s`` seconds (an open loop)."""
    return await _open_loop(chat, [i * spread_s / n for i in range(n)])
