"""Blocking a user (API.md, Operations), revoking their sessions, and the read-only admin token."""

from __future__ import annotations

from typing import Any

from tests.utils import Running, running_app

ADMIN, READONLY = "admin-token-0123456789", "readonly-token-0123456789"


def _settings(settings_factory: Any, fake_upstream: Any) -> Any:
    return settings_factory(
        upstream_base_url=fake_upstream.base_url, upstream_api_key="sk-test-key-123456",
        upstream_model="fake-model", admin_token=ADMIN, admin_readonly_token=READONLY)


async def _admin(app: Running, method: str, path: str, token: str = ADMIN) -> tuple[int, Any]:
    async with app.http.request(method, f"{app.base_url}/admin/v1{path}",
                                headers={"Authorization": f"Bearer {token}"}) as r:
        body = await r.json() if r.status != 204 else None
        return r.status, body


async def _get(app: Running, token: str, path: str) -> tuple[int, Any]:
    async with app.http.get(f"{app.base_url}{path}",
                            headers={"Authorization": f"Bearer {token}"}) as r:
        return r.status, await r.json()


async def test_a_blocked_user_is_refused_everything_but_login(settings_factory, fake_upstream):
    async with running_app(_settings(settings_factory, fake_upstream)) as app:
        token = await app.login("alice")
        user_id = (await _get(app, token, "/api/v1/me"))[1]["user_id"]
        assert (await app.chat_events(token, {"content": "你好"}))[0] == 200
        asked = fake_upstream.stats.requests

        assert (await _admin(app, "POST", f"/users/{user_id}/block"))[0] == 204
        status, body = await _admin(app, "GET", f"/users/{user_id}")
        assert status == 200 and body["blocked_at"] is not None
        for content, stream in (("还在吗", True), ("在吗", False)):
            status, events = await app.chat_events(token, {"content": content,
                                                           "stream": stream})
            # a streaming chat's error is an event line (API.md, Chat), else the usual body
            code = events[0]["code"] if stream else events[0]["error"]["code"]
            assert status == 403 and code == "blocked", events
        status, body = await _get(app, token, "/api/v1/conversations")
        assert status == 403 and body["error"]["code"] == "blocked"
        again = await app.login("alice")  # login still works; the token it gives does not
        assert (await _get(app, again, "/api/v1/me"))[0] == 403
        assert fake_upstream.stats.requests == asked  # nothing of theirs reached the provider
        other = await app.login("bob")  # others are untouched
        assert (await app.chat_events(other, {"content": "你好"}))[0] == 200

        assert (await _admin(app, "POST", f"/users/{user_id}/unblock"))[0] == 204
        assert (await app.chat_events(token, {"content": "回来了"}))[0] == 200
        assert (await _admin(app, "POST", f"/users/{'0' * 32}/block"))[0] == 404


async def test_revoking_sessions_logs_a_user_out_everywhere(settings_factory, fake_upstream):
    async with running_app(_settings(settings_factory, fake_upstream)) as app:
        first, second = await app.login("carol"), await app.login("carol")
        user_id = (await _get(app, first, "/api/v1/me"))[1]["user_id"]
        status, body = await _admin(app, "GET", f"/users?q={user_id[:8]}")
        assert status == 200 and [u["id"] for u in body["items"]] == [user_id]
        assert body["items"][0]["sessions"] == 2
        assert (await _admin(app, "DELETE", f"/users/{user_id}/sessions"))[0] == 204
        for token in (first, second):
            assert (await _get(app, token, "/api/v1/me"))[0] == 401
        fresh = await app.login("carol")  # not blocked: a new login works
        assert (await _get(app, fresh, "/api/v1/me"))[0] == 200


async def test_a_read_only_token_reads_but_cannot_block_or_revoke(settings_factory,
                                                                   fake_upstream):
    async with running_app(_settings(settings_factory, fake_upstream)) as app:
        token = await app.login("dave")
        user_id = (await _get(app, token, "/api/v1/me"))[1]["user_id"]
        assert (await _admin(app, "GET", "/users", READONLY))[0] == 200
        assert (await _admin(app, "GET", "/audit", READONLY))[0] == 200
        for method, path in (("POST", f"/users/{user_id}/block"),
                             ("POST", f"/users/{user_id}/unblock"),
                             ("DELETE", f"/users/{user_id}/sessions")):
            status, body = await _admin(app, method, path, READONLY)
            assert status == 403 and body["error"]["code"] == "forbidden", (path, body)
        assert (await _get(app, token, "/api/v1/me"))[0] == 200  # nothing happened
        assert (await _admin(app, "GET", "/users", "wrong-token-0123456789"))[0] == 401


async def test_a_blocked_cloudrun_user_is_refused_too(settings_factory, fake_upstream):
    settings = settings_factory(
        upstream_base_url=fake_upstream.base_url, upstream_api_key="sk-test-key-123456",
        upstream_model="fake-model", admin_token=ADMIN, auth_mode="cloudrun",
        cloudrun_header_auth="always")
    async with running_app(settings) as app:
        erin = {"X-WX-OPENID": "o-erin"}
        async with app.http.get(f"{app.base_url}/api/v1/me", headers=erin) as r:
            user_id = (await r.json())["user_id"]
        assert (await _admin(app, "POST", f"/users/{user_id}/block"))[0] == 204
        async with app.http.post(f"{app.base_url}/api/v1/chat", headers=erin,
                                 json={"content": "你好", "stream": False}) as r:
            assert r.status == 403 and (await r.json())["error"]["code"] == "blocked"
        assert fake_upstream.stats.requests == 0
        assert (await _admin(app, "POST", f"/users/{user_id}/unblock"))[0] == 204
        async with app.http.get(f"{app.base_url}/api/v1/me", headers=erin) as r:
            assert r.status == 200
