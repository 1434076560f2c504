"""Helpers for the provider tests: a client against a base URL, collecting, a lag and RSS probe."""

from __future__ import annotations

import asyncio
import os
import time
from types import TracebackType
from typing import Any

import aiohttp

from mpchat.providers.openai import OpenAICompatible, StreamLimits, Timeouts
from mpchat.providers.types import Delta, Finish, Options, Reasoning, StreamEvent

MESSAGES = [{"role": "user", "content": "hi"}]


def make_client(http: aiohttp.ClientSession, base_url: str, *, limits: StreamLimits | None = None,
                **timeouts: float) -> OpenAICompatible:
    return OpenAICompatible(session=http, base_url=base_url, api_key="sk-abcdefghijkl",
                            model="m", timeouts=Timeouts(**timeouts), limits=limits)


async def collect(client: OpenAICompatible, options: Options | None = None) -> list[StreamEvent]:
    return [event async for event in client.stream(MESSAGES, options=options)]


def texts(events: list[Any]) -> tuple[str, str]:
    """The answer and the reasoning, each joined."""
    answer = "".join(e.text for e in events if isinstance(e, Delta))
    reasoning = "".join(e.text for e in events if isinstance(e, Reasoning))
    return answer, reasoning


def finish(events: list[Any]) -> Finish:
    assert isinstance(events[-1], Finish), events[-1:]
    assert sum(isinstance(e, Finish) for e in events) == 1
    return events[-1]


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class Probe:
    """Measures, while it runs, the longest the event loop was kept from a 1 ms sleeper
    (the loop's lag) and the highest RSS above where it started.

    ``max_lag`` counts the CPU time this thread spent between two wake-ups of the sleeper:
    the time the loop was busy elsewhere, which a machine shared with other test runs does
    not inflate (being descheduled costs wall time, not CPU time). ``max_wall_lag`` is the
    wall-clock figure, for the record.
    """

    def __init__(self) -> None:
        self.max_lag = 0.0
        self.max_wall_lag = 0.0
        self.rss_growth = 0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        base = rss_bytes()
        n = 0
        while True:
            before, cpu_before = time.monotonic(), time.thread_time()
            await asyncio.sleep(0.001)
            self.max_wall_lag = max(self.max_wall_lag, time.monotonic() - before - 0.001)
            self.max_lag = max(self.max_lag, time.thread_time() - cpu_before)
            n += 1
            if n % 10 == 0:
                self.rss_growth = max(self.rss_growth, rss_bytes() - base)

    async def __aenter__(self) -> Probe:
        self._task = asyncio.create_task(self._run())
        await asyncio.sleep(0)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        assert self._task is not None
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
