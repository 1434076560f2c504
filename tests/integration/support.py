"""Helpers for the integration tests: mpchat subprocesses, NDJSON clients, a held fake provider."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from mpchat.fakes.upstream import FakeUpstream
from tests.utils import free_port

__all__ = [
    "ChatResult",
    "HeldUpstream",
    "Instance",
    "Transcript",
    "chat",
    "child_base_env",
    "login",
    "mpchat_argv",
    "read_stream",
    "run_command",
    "spawn_fleet",
    "start_instance",
    "stored_messages",
    "wait_until",
]


async def wait_until(
    predicate: Callable[[], Awaitable[bool] | bool], *, within: float, what: str,
    interval: float = 0.02,
) -> None:
    """Poll ``predicate`` until it is true; fail the test after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        value = predicate()
        if not isinstance(value, bool):
            value = await value
        if value:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {within}s")
        await asyncio.sleep(interval)


@dataclass
class ChatResult:
    """One chat as the client saw it: status, headers, events and when each line arrived."""

    status: int
    retry_after_header: str | None
    events: list[dict[str, Any]] = field(default_factory=list)
    elapsed: float = 0.0  # seconds from sending to the end of the body

    @property
    def types(self) -> list[str]:
        return [e.get("type", "") for e in self.events]

    @property
    def positions(self) -> list[int]:
        return [int(e["position"]) for e in self.events if e.get("type") == "queued"]

    @property
    def completed(self) -> bool:
        return self.status == 200 and self.types[:1] == ["start"] and self.types[-1:] == ["done"]

    @property
    def error(self) -> dict[str, Any]:
        """The error object of a refused request (body line) or of a failed stream."""
        for event in self.events:
            if event.get("type") == "error":
                return event
            if "error" in event:
                return dict(event["error"])
        return {}


async def login(http: aiohttp.ClientSession, base_url: str, code: str) -> str:
    async with http.post(f"{base_url}/api/v1/login", json={"code": code}) as r:
        assert r.status == 200, await r.text()
        return str((await r.json())["token"])


async def chat(
    http: aiohttp.ClientSession, base_url: str, token: str, content: str = "你好",
    *, on_event: Callable[[dict[str, Any]], None] | None = None,
) -> ChatResult:
    """POST /api/v1/chat and read the NDJSON body line by line as it arrives."""
    started = time.monotonic()
    async with http.post(f"{base_url}/api/v1/chat", json={"content": content},
                         headers={"Authorization": f"Bearer {token}"}) as r:
        result = ChatResult(r.status, r.headers.get("Retry-After"))
        while line := await r.content.readline():
            if line.strip():
                event = orjson.loads(line)
                result.events.append(event)
                if on_event is not None:
                    on_event(event)
    result.elapsed = time.monotonic() - started
    return result


class HeldUpstream(FakeUpstream):
    """The fake provider, but every answer waits until the test calls ``release()``.

    So a test can first see the whole queue form (every request admitted or refused)
    and only then let answers flow, instead of hoping the timing works out.
    """

    def __init__(self) -> None:
        super().__init__()
        self.released = asyncio.Event()

    def release(self) -> None:
        self.released.set()

    async def __aenter__(self) -> HeldUpstream:
        await self.start()
        return self

    async def _answer(
        self, request: web.Request, body: dict[str, Any], step: dict[str, Any]
    ) -> web.StreamResponse:
        await self.released.wait()
        return await super()._answer(request, body, step)


def mpchat_argv(*args: str) -> list[str]:
    """``.venv/bin/mpchat ...`` next to this interpreter, else ``python -m mpchat ...``."""
    script = Path(sys.executable).with_name("mpchat")
    if script.exists():
        return [str(script), *args]
    return [sys.executable, "-m", "mpchat", *args]


@dataclass
class Instance:
    name: str
    base_url: str
    proc: asyncio.subprocess.Process
    log_path: Path

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return "(no log)"

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 15)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


def child_base_env() -> dict[str, str]:
    """This environment without any ``MPCHAT_*`` setting that would change a child's run."""
    return {k: v for k, v in os.environ.items() if not k.startswith("MPCHAT_")}


async def run_command(argv: list[str], *, env: dict[str, str], log_path: Path) -> None:
    """Run a command to completion; fail the test with its output when it fails."""
    with log_path.open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            *argv, env=env, stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log)
        code = await asyncio.wait_for(proc.wait(), 60)
    if code != 0:
        output = await asyncio.to_thread(log_path.read_text, errors="replace")
        pytest.fail(f"{argv} exited {code}:\n{output}")


async def _start(
    name: str, env: dict[str, str], log_dir: Path, data_dir: Path | None = None
) -> Instance:
    port = free_port()
    log_path = log_dir / f"{name}.log"
    child_env = {**env, "MPCHAT_PORT": str(port), "MPCHAT_HOST": "127.0.0.1",
                 "MPCHAT_DATA_DIR": str(data_dir or log_dir / f"{name}-data")}
    with log_path.open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            *mpchat_argv("serve"), env=child_env, stdin=asyncio.subprocess.DEVNULL,
            stdout=log, stderr=log)
    return Instance(name, f"http://127.0.0.1:{port}", proc, log_path)


async def _healthy(instance: Instance, http: aiohttp.ClientSession) -> bool:
    if instance.proc.returncode is not None:
        pytest.fail(f"{instance.name} exited {instance.proc.returncode}:\n{instance.log_tail()}")
    try:
        async with http.get(f"{instance.base_url}/readyz") as r:
            return r.status == 200
    except aiohttp.ClientError:
        return False


@contextlib.asynccontextmanager
async def spawn_fleet(
    count: int, env: dict[str, str], log_dir: Path
) -> AsyncIterator[list[Instance]]:
    """``count`` `mpchat serve` processes with ``env`` (plus a port and data dir each)."""
    full_env = {**child_base_env(), **env}
    instances: list[Instance] = []
    try:
        for i in range(count):
            instances.append(await _start(f"mpchat{i}", full_env, log_dir))
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
            for instance in instances:
                await wait_until(lambda i=instance: _healthy(i, http),  # type: ignore[misc]
                                 within=30, what=f"{instance.name} ready", interval=0.05)
        yield instances
    finally:
        await asyncio.gather(*(instance.stop() for instance in instances))


async def start_instance(
    name: str, env: dict[str, str], log_dir: Path, *, data_dir: Path | None = None
) -> Instance:
    """One `mpchat serve` process (``env`` over a clean environment), ready; stop it yourself.

    ``data_dir`` lets two runs share one (the default SQLite file, development keys).
    """
    instance = await _start(name, {**child_base_env(), **env}, log_dir, data_dir)
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
            await wait_until(lambda: _healthy(instance, http), within=30,
                             what=f"{name} ready", interval=0.05)
    except BaseException:
        await instance.stop()
        raise
    return instance


@dataclass
class Transcript:
    """What one client following one answer has seen, across all its connections.

    The text as a client shows it: a ``delta`` appends, a ``snapshot`` replaces everything
    before it, a ``retract`` clears it. Pings are not kept.
    """

    events: list[dict[str, Any]] = field(default_factory=list)
    text: str = ""

    def feed(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "ping":
            return
        self.events.append(event)
        if kind == "delta":
            self.text += event["text"]
        elif kind == "snapshot":
            self.text = event["text"]
        elif kind == "retract":
            self.text = ""

    @property
    def types(self) -> list[str]:
        return [str(e.get("type")) for e in self.events]

    @property
    def seqs(self) -> list[int]:
        return [int(e["seq"]) for e in self.events]

    @property
    def last_seq(self) -> int:
        return self.seqs[-1] if self.events else -1

    @property
    def ended(self) -> bool:
        return bool(self.events) and self.types[-1] in ("done", "error")

    @property
    def start(self) -> dict[str, Any]:
        assert self.events and self.events[0]["type"] == "start", self.events[:1]
        return self.events[0]


async def read_stream(
    http: aiohttp.ClientSession, method: str, url: str, token: str, transcript: Transcript,
    *, json: Any = None, cut_after: int | None = None,
    on_event: Callable[[dict[str, Any]], None] | None = None,
) -> int:
    """Read an answer's NDJSON stream into ``transcript``; the HTTP status.

    With ``cut_after``, the connection is closed as soon as the event with that seq was
    read, as a client cut mid-answer would (whatever else the last chunk held is lost).
    """
    async with http.request(method, url, json=json,
                            headers={"Authorization": f"Bearer {token}"}) as r:
        if r.status != 200:
            return r.status
        while line := await r.content.readline():
            if not line.strip():
                continue
            event = orjson.loads(line)
            transcript.feed(event)
            if on_event is not None:
                on_event(event)
            if cut_after is not None and event.get("seq") == cut_after:
                r.close()  # the connection goes, not back to the pool
                break
        return r.status


async def stored_messages(
    http: aiohttp.ClientSession, base_url: str, token: str, conversation_id: str
) -> list[dict[str, Any]]:
    """The conversation's messages as ``GET .../messages`` lists them, oldest first."""
    async with http.get(f"{base_url}/api/v1/conversations/{conversation_id}/messages",
                        headers={"Authorization": f"Bearer {token}"}) as r:
        assert r.status == 200, await r.text()
        return list((await r.json())["items"])
