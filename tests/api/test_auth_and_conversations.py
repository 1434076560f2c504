"""Tokens (forged, altered, expired, revoked), isolation between users, paging, deletion."""

from __future__ import annotations

import time

from sqlalchemy import func, select

from mpchat.auth.tokens import TokenSigner
from mpchat.storage.tables import conversations, messages, sessions
from tests.in_process import InProcess, in_process_app


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _status(app: InProcess, method: str, path: str, token: str, **kw) -> int:
    r = await app.http.request(method, app.base_url + path, headers=_auth(token), **kw)
    return r.status_code


async def test_tampered_expired_and_revoked_tokens_are_refused(settings_factory):
    settings = settings_factory(secret_key="s" * 40)
    async with in_process_app(settings) as app:
        token = await app.login("dave")
        assert await _status(app, "GET", "/api/v1/conversations", token) == 200
        head, payload, sig = token.split(".")
        altered = f"{head}.{payload[:-2]}AA.{sig}"
        assert await _status(app, "GET", "/api/v1/conversations", altered) == 401
        other_key = TokenSigner("x" * 40, ttl=60).issue(user_id="u", session_id="s")
        assert await _status(app, "GET", "/api/v1/conversations", other_key) == 401
        claims = app.services.auth._signer.verify(token)
        expired = TokenSigner("s" * 40, ttl=10).issue(
            user_id=claims.user_id, session_id=claims.session_id, now=time.time() - 3600)
        assert await _status(app, "GET", "/api/v1/conversations", expired) == 401
        assert await _status(app, "POST", "/api/v1/logout", token) == 204
        assert await _status(app, "GET", "/api/v1/conversations", token) == 401


async def test_same_code_is_same_user_and_other_users_see_404(settings_factory):
    async with in_process_app(settings_factory()) as app:
        alice, alice2 = await app.login("alice"), await app.login("alice")
        eve = await app.login("eve")
        _, events = await app.chat_events(alice, {"content": "secret plan"})
        conv = events[0]["conversation_id"]
        assert await _status(app, "GET", f"/api/v1/conversations/{conv}/messages", alice2) == 200
        for method, path, body in [
            ("GET", f"/api/v1/conversations/{conv}/messages", None),
            ("DELETE", f"/api/v1/conversations/{conv}", None),
            ("POST", "/api/v1/chat", {"content": "hi", "conversation_id": conv}),
        ]:
            r = await app.http.request(method, app.base_url + path, json=body, headers=_auth(eve))
            text = r.text
            assert r.status_code == 404, (method, path)
            assert "secret" not in text and conv not in text
        r = await app.http.get(f"{app.base_url}/api/v1/conversations", headers=_auth(eve))
        assert r.json()["items"] == []


async def test_conversation_paging_newest_first_and_message_paging(settings_factory):
    async with in_process_app(settings_factory()) as app:
        token = await app.login("pager")
        convs = []
        for i in range(5):
            _, events = await app.chat_events(token, {"content": f"topic {i}"})
            convs.append(events[0]["conversation_id"])
        seen, cursor = [], None
        while True:
            params = {"limit": "2", **({"before": cursor} if cursor else {})}
            r = await app.http.get(f"{app.base_url}/api/v1/conversations", params=params,
                                   headers=_auth(token))
            page = r.json()
            seen += [(c["id"], c["title"], c["message_count"]) for c in page["items"]]
            cursor = page["next"]
            if cursor is None:
                break
        assert [c[0] for c in seen] == list(reversed(convs))
        assert seen[0][1] == "topic 4" and seen[0][2] == 2

        conv = convs[0]
        for i in range(3):
            await app.chat_events(token, {"content": f"more {i}", "conversation_id": conv})
        collected, cursor = [], None
        while True:
            params = {"limit": "3", **({"before": cursor} if cursor else {})}
            r = await app.http.get(f"{app.base_url}/api/v1/conversations/{conv}/messages",
                                   params=params, headers=_auth(token))
            page = r.json()
            collected = page["items"] + collected  # each page is oldest-first
            cursor = page["next"]
            if cursor is None:
                break
        users = [m["content"] for m in collected if m["role"] == "user"]
        assert users == ["topic 0", "more 0", "more 1", "more 2"]
        assert len(collected) == 8
        assert await _status(app, "GET", "/api/v1/conversations?before=abc", token) == 400


async def test_delete_removes_rows(settings_factory):
    async with in_process_app(settings_factory()) as app:
        token, other = await app.login("del"), await app.login("keep")
        _, e1 = await app.chat_events(token, {"content": "one"})
        _, e2 = await app.chat_events(token, {"content": "two"})
        await app.chat_events(other, {"content": "other's"})
        engine = app.services.engine

        async def count(table, **where) -> int:
            q = select(func.count()).select_from(table)
            for k, v in where.items():
                q = q.where(table.c[k] == v)
            async with engine.connect() as conn:
                return int((await conn.execute(q)).scalar_one())

        conv1 = e1[0]["conversation_id"]
        assert await _status(app, "DELETE", f"/api/v1/conversations/{conv1}", token) == 204
        assert await count(messages, conversation_id=conv1) == 0
        assert await count(conversations, id=conv1) == 0
        assert await _status(app, "DELETE", f"/api/v1/conversations/{conv1}", token) == 404
        assert await _status(app, "DELETE", "/api/v1/me/data", token) == 204
        assert await count(messages) == 2  # only the other user's turn is left
        assert await count(conversations) == 1
        assert await _status(app, "GET", "/api/v1/conversations", token) == 401  # revoked
        assert await count(sessions) == 1
        assert e2  # second conversation went with the user's data
