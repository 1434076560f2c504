"""Login modes over HTTP: wechat (against the fake WeChat) with errcode mapping, dev.

cloudrun: tests/api/test_cloudrun.py."""

from __future__ import annotations

import pytest

from mpchat.fakes.wechat import FakeWeChat
from tests.in_process import in_process_app

APPID, SECRET = "wx_app", "wechat-secret-abcdef"


@pytest.fixture
async def wechat():
    async with FakeWeChat(appid=APPID, secret=SECRET) as fake:
        yield fake


@pytest.mark.parametrize(("code", "status", "error"), [
    ("good-code", 200, None),
    ("invalid", 401, "invalid_code"),
    ("used", 401, "invalid_code"),
    ("limit", 429, "rate_limited"),
    ("busy", 503, "service_unavailable"),
])
async def test_wechat_login_maps_errcodes(settings_factory, wechat, code, status, error):
    settings = settings_factory(wechat_appid=APPID, wechat_secret=SECRET,
                                wechat_api_base=wechat.base_url)
    async with in_process_app(settings) as app:
        r = await app.http.post(f"{app.base_url}/api/v1/login", json={"code": code})
        body = r.json()
        assert r.status_code == status, body
        if error:
            assert body["error"]["code"] == error
            if status in (429, 503):
                assert int(r.headers["Retry-After"]) >= 1
        else:
            assert body["expires_in"] == settings.token_ttl
            assert "session_key" not in str(body) and "openid" not in str(body)
            headers = {"Authorization": f"Bearer {body['token']}"}
            r2 = await app.http.get(f"{app.base_url}/api/v1/conversations", headers=headers)
            assert r2.status_code == 200


async def test_wechat_login_same_code_owner_is_same_user(settings_factory, wechat):
    settings = settings_factory(wechat_appid=APPID, wechat_secret=SECRET,
                                wechat_api_base=wechat.base_url)
    async with in_process_app(settings) as app:
        first = await app.login("same-person")
        _, events = await app.chat_events(first, {"content": "hi"})
        second = await app.login("same-person")
        r = await app.http.get(f"{app.base_url}/api/v1/conversations",
                               headers={"Authorization": f"Bearer {second}"})
        ids = [c["id"] for c in r.json()["items"]]
        assert ids == [events[0]["conversation_id"]]


async def test_logins_are_limited_per_client_address(settings_factory):
    async with in_process_app(settings_factory(login_rate_limit="2/minute")) as app:
        statuses = []
        for code in ("a", "b", "c"):  # different codes: spraying codes from one address
            r = await app.http.post(f"{app.base_url}/api/v1/login", json={"code": code})
            statuses.append(r.status_code)
            last = r
            body = r.json()
        assert statuses == [200, 200, 429]
        assert body["error"]["code"] == "rate_limited"
        assert 1 <= int(last.headers["Retry-After"]) <= 60
