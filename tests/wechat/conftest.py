"""Fixtures for the WeChat client tests: the fake WeChat, an HTTP session, Redis (a real one
and one that never answers)."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from mpchat.fakes.wechat import FakeWeChat
from mpchat.providers.retry import RetryPolicy
from tests.conftest import REDIS_URL

APPID = "wx_test_appid"
SECRET = "test-secret-never-logged"
FAST_BACKOFF = RetryPolicy(attempts=3, initial=0.01, max_wait=0.05)


class Clock:
    """An injected clock that moves only when a test moves it."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        """A sleep that moves this clock instead of waiting."""
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture
def appid() -> str:
    return APPID


@pytest.fixture
def secret() -> str:
    return SECRET


@pytest.fixture
def fast_backoff() -> RetryPolicy:
    return FAST_BACKOFF


@pytest.fixture
async def fake() -> AsyncIterator[FakeWeChat]:
    async with FakeWeChat(appid=APPID, secret=SECRET) as server:
        yield server


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def closed_url() -> str:
    """A local URL nobody listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
async def redis() -> AsyncIterator[Redis]:
    client = Redis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        await client.ping()
    except (RedisError, OSError):
        await client.aclose()
        if os.environ.get("CI") == "true":
            pytest.fail(f"Redis at {REDIS_URL} is unreachable")
        pytest.skip(f"Redis at {REDIS_URL} is unreachable")
    yield client
    await client.aclose()


@pytest.fixture
async def redis_prefix(redis: Redis) -> AsyncIterator[str]:
    """A key prefix of this test's own; its keys are deleted afterwards."""
    prefix = f"test-mpchat-wechat:{uuid.uuid4().hex}"
    yield prefix
    keys = [key async for key in redis.scan_iter(match=prefix + "*")]
    if keys:
        await redis.delete(*keys)


@dataclass
class HangingRedis:
    """A TCP server that reads Redis commands and never answers: a hung Redis."""

    client: Redis
    received: list[bytes] = field(default_factory=list)

    @property
    def bytes_received(self) -> int:
        return sum(len(chunk) for chunk in self.received)


@pytest.fixture
async def hanging_redis() -> AsyncIterator[HangingRedis]:
    received: list[bytes] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while chunk := await reader.read(4096):
            received.append(chunk)
        writer.close()

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    hanging = HangingRedis(Redis(host="127.0.0.1", port=port), received)
    try:
        yield hanging
    finally:
        await hanging.client.aclose()
        server.close()
        await server.wait_closed()
