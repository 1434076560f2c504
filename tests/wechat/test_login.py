"""jscode2session: success, the errcode mapping, and session_key kept out of sight."""

from __future__ import annotations

import logging

import aiohttp
import pytest

from mpchat.errors import InvalidCode, RateLimited, ServiceUnavailable
from mpchat.fakes.wechat import FakeWeChat
from mpchat.wechat import AppCredentials, LoginClient, WxSession
from mpchat.wechat.login import LOGIN_RATE_LIMIT_RETRY_AFTER


@pytest.fixture
def make_client(http: aiohttp.ClientSession, appid: str, secret: str):
    def make(base_url: str, **kw: object) -> LoginClient:
        return LoginClient(http, AppCredentials(appid, secret, base_url), **kw)  # type: ignore[arg-type]

    return make


async def test_success_returns_openid_and_no_unionid(fake: FakeWeChat, make_client) -> None:
    session = await make_client(fake.base_url).exchange("good-code")
    assert session.openid.startswith("o") and len(session.openid) == 28
    assert session.unionid is None
    assert session.session_key
    # Same code, same user: the openid is derived from the code.
    assert await make_client(fake.base_url).openid("good-code") == session.openid


async def test_unionid_when_bound(fake: FakeWeChat, make_client) -> None:
    session = await make_client(fake.base_url).exchange("union-1")
    assert session.unionid is not None and session.unionid.startswith("u")


@pytest.mark.parametrize("code", ["invalid", "used"])
async def test_invalid_or_used_code(fake: FakeWeChat, make_client, code: str) -> None:
    with pytest.raises(InvalidCode):
        await make_client(fake.base_url).exchange(code)


async def test_frequency_limit_is_rate_limited(fake: FakeWeChat, make_client) -> None:
    with pytest.raises(RateLimited) as caught:
        await make_client(fake.base_url).exchange("limit")
    assert caught.value.retry_after == LOGIN_RATE_LIMIT_RETRY_AFTER


async def test_system_busy_is_unavailable_with_retry_after(fake: FakeWeChat, make_client) -> None:
    with pytest.raises(ServiceUnavailable) as caught:
        await make_client(fake.base_url).exchange("busy")
    assert caught.value.retry_after == 1
    assert fake.stats.calls["jscode2session"] == 1  # a code is single-use: no retry


async def test_other_errcode_is_logged_without_the_secret(
    fake: FakeWeChat, http, appid, caplog
) -> None:
    caplog.set_level(logging.DEBUG)
    client = LoginClient(http, AppCredentials(appid, "wrong-secret", fake.base_url))
    with pytest.raises(ServiceUnavailable):
        await client.exchange("good-code")
    assert "errcode=40125" in caplog.text
    assert "wrong-secret" not in caplog.text


async def test_unreachable_is_unavailable(make_client, closed_url: str, secret, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(ServiceUnavailable) as caught:
        await make_client(closed_url).exchange("good-code")
    assert caught.value.__cause__ is None  # the aiohttp error (with the URL) is not chained
    assert secret not in caplog.text


async def test_timeout_is_unavailable(fake: FakeWeChat, make_client) -> None:
    fake.hang("jscode2session")
    client = make_client(fake.base_url, timeout=aiohttp.ClientTimeout(total=0.2))
    with pytest.raises(ServiceUnavailable):
        await client.exchange("good-code")


async def test_session_key_never_in_repr_or_logs(
    fake: FakeWeChat, make_client, secret, caplog
) -> None:
    caplog.set_level(logging.DEBUG)
    client = make_client(fake.base_url)
    session = await client.exchange("good-code")
    logging.getLogger("test").info("logged in %s via %r", session, client)
    assert session.session_key not in repr(session)
    assert session.session_key not in str(session)
    assert session.session_key not in caplog.text
    assert secret not in repr(client) and secret not in caplog.text
    assert repr(session) == f"WxSession(openid={session.openid!r}, unionid=None)"


def test_session_is_frozen() -> None:
    session = WxSession(openid="o1", unionid=None, session_key="k")
    with pytest.raises(AttributeError):
        session.openid = "o2"  # type: ignore[misc]
