"""/admin/v1/keys over HTTP: admin auth, the secret shown once, never a hash, bad bodies."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from mpchat.errors import InvalidApiKey
from tests.utils import Running, running_app

ADMIN = "admin-token-keys-0123456789"
AUTH = {"Authorization": f"Bearer {ADMIN}"}


async def _call(app: Running, method: str, path: str, *, headers: dict[str, str] | None = AUTH,
                **kw: Any) -> tuple[int, Any, str]:
    async with app.http.request(method, app.base_url + path, headers=headers, **kw) as r:
        text = await r.text()
        body = await r.json() if r.content_type == "application/json" else None
        return r.status, body, text


async def test_off_without_an_admin_token(settings_factory: Any) -> None:
    async with running_app(settings_factory()) as app:
        for method, path in [("GET", "/admin/v1/keys"), ("POST", "/admin/v1/keys"),
                             ("POST", "/admin/v1/keys/k_1/revoke"),
                             ("DELETE", "/admin/v1/keys/k_1")]:
            status, body, _ = await _call(app, method, path, json={"name": "x"})
            assert status == 404 and body["error"]["code"] == "not_found"


async def test_refused_without_the_right_token(settings_factory: Any) -> None:
    async with running_app(settings_factory(admin_token=ADMIN)) as app:
        user = await app.login()
        for headers in [None, {"Authorization": "Bearer wrong"}, {"Authorization": ADMIN},
                        {"Authorization": f"Bearer {user}"}, {"Authorization": f"Basic {ADMIN}"}]:
            status, body, _ = await _call(app, "POST", "/admin/v1/keys", headers=headers,
                                          json={"name": "x"})
            assert status == 401 and body["error"]["code"] == "unauthorized"
        assert await app.services.api_keys.list(include_revoked=True) == []


async def test_issue_list_revoke_rotate(settings_factory: Any) -> None:
    async with running_app(settings_factory(admin_token=ADMIN)) as app:
        keys = app.services.api_keys
        expires = (datetime.now(UTC) + timedelta(days=30)).isoformat()
        async with app.http.post(app.base_url + "/admin/v1/keys", headers=AUTH, json={
            "name": "acc", "models": ["fake-model"], "rpm": 60, "tpm": 100_000,
            "quota": 10**7, "expires_at": expires,
        }) as r:
            assert r.status == 201 and r.headers["Cache-Control"] == "no-store"
            created = await r.json()
        secret = created.pop("key")
        assert (await keys.authenticate(secret)).id == created["id"]
        assert created["status"] == "active" and created["models"] == ["fake-model"]
        assert secret.startswith(created["prefix"]) and created["used_tokens"] == 0
        digest = hashlib.sha256(secret.encode()).hexdigest()

        status, listed, text = await _call(app, "GET", "/admin/v1/keys")
        assert status == 200 and listed["items"] == [created]
        status, one, text2 = await _call(app, "GET", f"/admin/v1/keys/{created['id']}")
        assert status == 200 and one == created
        for shown in (text, text2):
            assert secret not in shown and digest not in shown and "hash" not in shown

        status, rotated, _ = await _call(app, "POST", f"/admin/v1/keys/{created['id']}/rotate")
        assert status == 200 and rotated["id"] == created["id"] and rotated["key"] != secret
        with pytest.raises(InvalidApiKey):
            await keys.authenticate(secret)
        status, revoked, _ = await _call(app, "POST", f"/admin/v1/keys/{created['id']}/revoke")
        assert status == 200 and revoked["status"] == "revoked" and revoked["revoked_at"]
        assert "key" not in revoked
        status, body, _ = await _call(app, "POST", f"/admin/v1/keys/{created['id']}/rotate")
        assert status == 400 and body["error"]["code"] == "invalid_request"

        status, other, _ = await _call(app, "POST", "/admin/v1/keys", json={"name": "other"})
        assert status == 201 and other["models"] is None and other["expires_at"] is None
        status, _, text = await _call(app, "DELETE", f"/admin/v1/keys/{other['id']}")
        assert status == 204 and text == ""
        assert (await _call(app, "GET", "/admin/v1/keys"))[1] == {"items": []}
        everything = (await _call(app, "GET", "/admin/v1/keys?all=true"))[1]["items"]
        assert [k["id"] for k in everything] == [created["id"], other["id"]]
        assert {k["status"] for k in everything} == {"revoked"}

        for method, path in [("GET", "/admin/v1/keys/k_nope"),
                             ("POST", "/admin/v1/keys/k_nope/revoke"),
                             ("POST", "/admin/v1/keys/k_nope/rotate"),
                             ("DELETE", "/admin/v1/keys/k_nope")]:
            status, body, _ = await _call(app, method, path)
            assert status == 404 and body["error"]["code"] == "not_found"
        status, body, _ = await _call(app, "GET", "/admin/v1/keys/" + "x" * 40)
        assert status == 400 and body["error"]["code"] == "invalid_request"


BAD_BODIES: list[Any] = [
    {},
    [],
    {"name": ""},
    {"name": "x" * 65},
    {"name": 5},
    {"name": "ok", "models": []},
    {"name": "ok", "models": [f"m{i}" for i in range(51)]},
    {"name": "ok", "models": [" "]},
    {"name": "ok", "models": "gpt-4o"},
    {"name": "ok", "rpm": 0},
    {"name": "ok", "rpm": "5"},
    {"name": "ok", "tpm": -1},
    {"name": "ok", "quota": 1.5},
    {"name": "ok", "rpm": 2**31},
    {"name": "ok", "expires_at": "2001-01-01T00:00:00Z"},
    {"name": "ok", "expires_at": "2099-01-01T00:00:00"},  # no zone: ambiguous
    {"name": "ok", "expires_at": "soon"},
]


async def test_bad_bodies_are_refused(settings_factory: Any) -> None:
    async with running_app(settings_factory(admin_token=ADMIN)) as app:
        for body in BAD_BODIES:
            status, answer, text = await _call(app, "POST", "/admin/v1/keys", json=body)
            assert status == 400 and answer["error"]["code"] == "invalid_request", (body, text)
            assert "Traceback" not in text
        assert await app.services.api_keys.list(include_revoked=True) == []
