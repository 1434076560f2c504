"""The fake WeChat itself: standalone serving, credentials, control endpoints."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest

from mpchat.fakes.wechat import FakeWeChat, run
from tests.utils import free_port, wait_until

APPID, SECRET = "wx_fake_appid", "fake-secret"


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
    """A local URL nobody listens on (yet)."""
    return f"http://127.0.0.1:{free_port()}"


async def _wait_until_up(http: aiohttp.ClientSession, url: str) -> dict:
    answers: list[dict] = []

    async def up() -> bool:
        try:
            async with http.get(url) as response:
                answers.append(await response.json(content_type=None))
        except aiohttp.ClientConnectionError:
            return False
        return True

    await wait_until(up, timeout=5, what="the fake WeChat listening")
    return answers[0]


async def test_standalone_server_answers(http, closed_url: str) -> None:
    host, port = closed_url.removeprefix("http://").split(":")
    server = asyncio.create_task(run(host, int(port)))
    try:
        stats = await _wait_until_up(http, f"{closed_url}/_control/stats")
        assert stats["calls"]["stable_token"] == 0
        payload = {"grant_type": "client_credential", "appid": "wx1", "secret": "any"}
        async with http.post(f"{closed_url}/cgi-bin/stable_token", json=payload) as response:
            body = await response.json(content_type=None)
        assert body["expires_in"] == 7200 and body["access_token"].startswith("fake-")
    finally:
        server.cancel()
        with pytest.raises(asyncio.CancelledError):
            await server


async def test_wrong_appid_is_refused(http, fake: FakeWeChat) -> None:
    payload = {"grant_type": "client_credential", "appid": "wx_other", "secret": fake.secret}
    async with http.post(f"{fake.base_url}/cgi-bin/stable_token", json=payload) as response:
        body = await response.json(content_type=None)
    assert body["errcode"] == 40013


async def test_missing_token_is_refused_unless_credential_free(http, fake: FakeWeChat) -> None:
    payload = {"content": "hi", "version": 2, "scene": 1, "openid": "o1"}
    async with http.post(f"{fake.base_url}/wxa/msg_sec_check", json=payload) as response:
        assert (await response.json(content_type=None))["errcode"] == 41001


async def test_reset_over_http(http, fake: FakeWeChat) -> None:
    fake.fail("stable_token", 3)
    async with http.get(f"{fake.base_url}/sns/jscode2session") as response:
        assert (await response.json(content_type=None))["errcode"] == 40002
    async with http.post(f"{fake.base_url}/_control/reset") as response:
        assert response.status == 200
    assert fake.stats.calls["jscode2session"] == 0
    payload = {"grant_type": "client_credential", "appid": fake.appid, "secret": fake.secret}
    async with http.post(f"{fake.base_url}/cgi-bin/stable_token", json=payload) as response:
        assert "access_token" in await response.json(content_type=None)
