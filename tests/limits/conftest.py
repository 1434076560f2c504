"""Fixtures for the limits tests: clients on the shared Redis, and a private redis-server."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from redis.asyncio import Redis

REDIS_URL = os.environ.get("MPCHAT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
IN_CI = os.environ.get("CI", "").lower() == "true"

RedisFactory = Callable[[], Redis]


async def _require_redis(url: str) -> None:
    client = Redis.from_url(url)
    try:
        await client.ping()
    except Exception as exc:  # any failure means "not there"
        message = f"Redis is unreachable at {url}: {exc!r}"
        if IN_CI:
            pytest.fail(message + " (CI=true: services are required)")
        pytest.skip(message)
    finally:
        await client.aclose()


@pytest.fixture
def prefix() -> str:
    """A key prefix no other test (or helper) uses."""
    return f"mpchat-test-limits:{uuid.uuid4().hex[:12]}:"


@pytest.fixture
async def redis_factory(prefix: str) -> AsyncIterator[RedisFactory]:
    """Makes separate clients (one per simulated instance); deletes this test's keys after."""
    await _require_redis(REDIS_URL)
    clients: list[Redis] = []

    def make() -> Redis:
        client = Redis.from_url(REDIS_URL)
        clients.append(client)
        return client

    yield make
    cleaner = Redis.from_url(REDIS_URL)
    try:
        keys = [key async for key in cleaner.scan_iter(match=prefix + "*")]
        if keys:
            await cleaner.delete(*keys)
    finally:
        await cleaner.aclose()
        for client in clients:
            await client.aclose()


class PrivateRedis:
    """A redis-server subprocess on a free port, which a test may stop and start again."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            message = "redis-server is not installed"
            if IN_CI:
                pytest.fail(message)
            pytest.skip(message)
        self._proc = await asyncio.create_subprocess_exec(
            binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", str(self.workdir),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        await wait_until(self._accepts, within=10)

    async def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.terminate()
            await asyncio.wait_for(proc.wait(), 10)
        await wait_until(self._refuses, within=10)

    async def _accepts(self) -> bool:
        return await asyncio.to_thread(self._accepts_sync)

    async def _refuses(self) -> bool:
        return not await self._accepts()

    def _accepts_sync(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    async def kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None:
            proc.kill()
            await proc.wait()


async def wait_until(
    predicate: Callable[[], Awaitable[bool]], *, within: float, interval: float = 0.02
) -> None:
    """Poll ``predicate`` until it is true; fail the test after ``within`` seconds."""
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {within}s")
        await asyncio.sleep(interval)


@pytest.fixture
async def private_redis(tmp_path: Path) -> AsyncIterator[PrivateRedis]:
    server = PrivateRedis(tmp_path)
    yield server
    await server.kill()
