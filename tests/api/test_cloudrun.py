"""WeChat Cloud Run: where the platform's ``X-WX-OPENID`` header is believed.

A service with public access (``MPCHAT_CLOUDRUN_HEADER_AUTH=off``, the default) believes it
nowhere: a forged header neither logs in nor identifies a call. A service that only
`wx.cloud.callContainer` reaches (``login``) turns it into a session token, which the public
service accepts (same database, same secret key). ``always`` keeps the header on every call.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy import func, select

from mpchat.storage.tables import users as users_table
from tests.in_process import InProcess, in_process_app

SECRET = "s" * 40
ADMIN = "admin-token-0123456789"
ALICE = {"X-WX-OPENID": "o-alice-0123456789abcdefghij"}


def _cloudrun(settings_factory: Any, header_auth: str, **more: Any) -> Any:
    return settings_factory(auth_mode="cloudrun", cloudrun_header_auth=header_auth,
                            secret_key=SECRET, wechat_security=False, **more)


@contextlib.asynccontextmanager
async def _services(settings_factory: Any) -> AsyncIterator[tuple[InProcess, InProcess]]:
    """The login service (callContainer only) and the public one, on one database."""
    async with in_process_app(_cloudrun(settings_factory, "login")) as login, \
            in_process_app(_cloudrun(settings_factory, "off", admin_token=ADMIN)) as public:
        yield login, public


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _user_count(app: InProcess) -> int:
    async with app.services.engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(users_table))).scalar())


async def test_the_public_service_believes_no_platform_header(settings_factory):
    async with in_process_app(_cloudrun(settings_factory, "off")) as app:
        r = await app.http.get(f"{app.base_url}/api/v1/me", headers=ALICE)
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
        r = await app.http.post(f"{app.base_url}/api/v1/login", json={"code": "x"},
                                headers=ALICE)
        assert r.status_code == 401, r.text
        assert r.json()["error"]["message"] == "请通过 wx.cloud.callContainer 登录"
        r = await app.http.post(f"{app.base_url}/api/v1/chat", headers=ALICE,
                                json={"content": "你好", "stream": False})
        assert r.status_code == 401
        assert await _user_count(app) == 0  # the forged openid did not even create a user


async def test_a_token_from_the_login_service_works_on_the_public_one(settings_factory):
    async with _services(settings_factory) as (login, public):
        r = await login.http.post(f"{login.base_url}/api/v1/login", json={"code": "cloudrun"},
                                  headers=ALICE)
        assert r.status_code == 200, r.text
        token = r.json()["token"]
        r = await public.http.get(f"{public.base_url}/api/v1/me", headers=_bearer(token))
        assert r.status_code == 200, r.text
        alice = r.json()["user_id"]
        status, events = await public.chat_events(token, {"content": "你好"})
        assert status == 200 and events[-1]["type"] == "done", events
        # The same openid logs in again as the same user.
        r = await login.http.post(f"{login.base_url}/api/v1/login", json={"code": "x"},
                                  headers=ALICE)
        r = await public.http.get(f"{public.base_url}/api/v1/me",
                                  headers=_bearer(r.json()["token"]))
        assert r.json()["user_id"] == alice
        # The login service believes the header at login only: calls need the token there too.
        r = await login.http.get(f"{login.base_url}/api/v1/me", headers=ALICE)
        assert r.status_code == 401
        # Logout ends the session (on another instance within 5 s: docs/api.md).
        r = await public.http.post(f"{public.base_url}/api/v1/logout", headers=_bearer(token))
        assert r.status_code == 204
        r = await public.http.get(f"{public.base_url}/api/v1/me", headers=_bearer(token))
        assert r.status_code == 401


async def test_the_login_service_needs_the_header(settings_factory):
    async with in_process_app(_cloudrun(settings_factory, "login")) as app:
        r = await app.http.post(f"{app.base_url}/api/v1/login", json={"code": "x"})
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
        too_long = {"X-WX-OPENID": "o" * 129}
        r = await app.http.post(f"{app.base_url}/api/v1/login", json={"code": "x"},
                                headers=too_long)
        assert r.status_code == 401
        assert await _user_count(app) == 0


async def test_always_identifies_every_call_by_the_header(settings_factory):
    async with in_process_app(_cloudrun(settings_factory, "always")) as app:
        url = f"{app.base_url}/api/v1/conversations"
        assert (await app.http.get(url)).status_code == 401
        assert (await app.http.get(url, headers=ALICE)).status_code == 200
        r = await app.http.get(url, headers=_bearer("forged"))
        assert r.status_code == 401  # tokens mean nothing here; only the platform header does
        r = await app.http.get(url, headers={"X-WX-OPENID": "o" * 129})
        assert r.status_code == 401


async def test_a_blocked_user_logs_in_but_is_refused_with_the_token(settings_factory):
    async with _services(settings_factory) as (login, public):
        r = await login.http.post(f"{login.base_url}/api/v1/login", json={"code": "x"},
                                  headers=ALICE)
        token = r.json()["token"]
        user_id = (await public.http.get(f"{public.base_url}/api/v1/me",
                                         headers=_bearer(token))).json()["user_id"]
        admin = f"{public.base_url}/admin/v1/users/{user_id}"
        r = await public.http.post(f"{admin}/block", headers=_bearer(ADMIN))
        assert r.status_code == 204
        r = await public.http.get(f"{public.base_url}/api/v1/me", headers=_bearer(token))
        assert r.status_code == 403 and r.json()["error"]["code"] == "blocked"
        # Login still answers (as in every mode); the new token is refused the same way.
        r = await login.http.post(f"{login.base_url}/api/v1/login", json={"code": "x"},
                                  headers=ALICE)
        assert r.status_code == 200
        status, events = await public.chat_events(r.json()["token"], {"content": "你好"})
        assert status == 403 and events[0]["code"] == "blocked", events
        r = await public.http.post(f"{admin}/unblock", headers=_bearer(ADMIN))
        assert r.status_code == 204
        r = await public.http.get(f"{public.base_url}/api/v1/me", headers=_bearer(token))
        assert r.status_code == 200


async def _logins(app: InProcess, openids: list[str]) -> list[int]:
    url = f"{app.base_url}/api/v1/login"
    return [(await app.http.post(url, json={"code": "x"},
                                 headers={"X-WX-OPENID": openid})).status_code
            for openid in openids]


async def test_believed_openids_have_a_login_bucket_each(settings_factory):
    async with in_process_app(_cloudrun(settings_factory, "login",
                                        login_rate_limit="2/minute")) as app:
        assert await _logins(app, ["o-alice"] * 3) == [200, 200, 429]
        assert await _logins(app, ["o-bob"]) == [200]


async def test_forged_openids_share_their_address_bucket(settings_factory):
    async with in_process_app(_cloudrun(settings_factory, "off",
                                        login_rate_limit="2/minute")) as app:
        # Not believed: each forged openid is one more try from the same address.
        assert await _logins(app, ["o-1", "o-2", "o-3"]) == [401, 401, 429]
