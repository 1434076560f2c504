"""Fixtures for the WeChat client tests: the fake WeChat, an HTTP session, Redis."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import AsyncIterator

import aiohttp
import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from mpchat.fakes.wechat import FakeWeChat
from mpchat.wechat import Backoff

APPID = "wx_test_appid"
SECRET = "test-secret-never-logged"
FAST_BACKOFF = Backoff(attempts=3, initial=0.01, max_wait=0.05)


@pytest.fixture
def appid() -> str:
    return APPID


@pytest.fixture
def secret() -> str:
    return SECRET


@pytest.fixture
def fast_backoff() -> Backoff:
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
    client = Redis.from_url("redis://127.0.0.1:6379/0", socket_connect_timeout=1)
    try:
        await client.ping()
    except (RedisError, OSError):
        await client.aclose()
        if os.environ.get("CI") == "true":
            pytest.fail("Redis at 127.0.0.1:6379 is unreachable")
        pytest.skip("Redis at 127.0.0.1:6379 is unreachable")
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
