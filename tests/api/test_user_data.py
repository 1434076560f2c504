"""The user's data: GET /api/v1/me/export is exactly the caller's; deleting one's data
anonymises one's audit rows."""

from __future__ import annotations

from typing import Any

import orjson

from mpchat.fakes.upstream import FakeUpstream
from tests.utils import Running, running_app

ADMIN = "admin-token-0123456789"


async def _get(app: Running, path: str, token: str | None, **params: str) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with app.http.get(f"{app.base_url}{path}", headers=headers, params=params) as r:
        return r.status, await r.json()


async def _user(app: Running, code: str, turns: list[tuple[str, str]],
                upstream: FakeUpstream) -> dict[str, Any]:
    """Log in as ``code`` and hold one conversation of ``turns``; a refused question too."""
    token = await app.login(code)
    conversation = None
    for question, answer in turns:
        upstream.script = [{"text": [answer]}]
        body: dict[str, Any] = {"content": question}
        if conversation:
            body["conversation_id"] = conversation
        status, events = await app.chat_events(token, body)
        assert status == 200 and events[-1]["type"] == "done"
        conversation = events[0]["conversation_id"]
    status, _ = await app.chat_events(token, {"content": f"{code} 想问怎么洗钱"})
    assert status == 400  # a local hit: an audit row keyed to this user
    _, me = await _get(app, "/api/v1/me", token)
    return {"token": token, "id": me["user_id"], "conversation": conversation}


async def test_export_is_exactly_the_callers_data(settings_factory, fake_upstream):
    settings = settings_factory(upstream_base_url=fake_upstream.base_url,
                                upstream_api_key="sk-test-key-123456",
                                upstream_model="fake-model", admin_token=ADMIN)
    async with running_app(settings) as app:
        alice = await _user(app, "alice-code", [("爱丽丝的问题一", "给爱丽丝的回答一"),
                                                ("爱丽丝的问题二", "给爱丽丝的回答二")],
                            fake_upstream)
        bob = await _user(app, "bob-code", [("鲍勃的秘密问题", "给鲍勃的秘密回答")],
                          fake_upstream)

        status, doc = await _get(app, "/api/v1/me/export", alice["token"])
        assert status == 200
        assert doc["format"] == "mpchat-export-1" and doc["user"]["id"] == alice["id"]
        [conversation] = doc["conversations"]
        assert conversation["id"] == alice["conversation"]
        assert conversation["title"] == "爱丽丝的问题一"
        said = [(m["role"], m["content"], m["status"]) for m in conversation["messages"]]
        assert said == [
            ("user", "爱丽丝的问题一", "complete"), ("assistant", "给爱丽丝的回答一", "complete"),
            ("user", "爱丽丝的问题二", "complete"), ("assistant", "给爱丽丝的回答二", "complete"),
        ]
        answers = [m for m in conversation["messages"] if m["role"] == "assistant"]
        assert all(a["ai_generated"] is True and a["label"] == settings.ai_label
                   and a["model"] == "fake-model" for a in answers)
        assert doc["usage"]["answers"] == 2
        assert doc["usage"]["completion_tokens"] == sum(
            a["usage"]["completion_tokens"] for a in answers) > 0
        assert [(c["check"], c["verdict"]) for c in doc["content_checks"]] == [("local", "hit")]
        assert doc["sessions"] and "ledger" not in doc  # quotas do not exist yet

        # Nothing of Bob's: not his id, his conversation, his words or his openid.
        text = orjson.dumps(doc).decode()
        for foreign in (bob["id"], bob["conversation"], "鲍勃", "bob-code"):
            assert foreign not in text

        assert (await _get(app, "/api/v1/me/export", None))[0] == 401


async def test_deleting_ones_data_anonymises_ones_audit_rows(settings_factory, fake_upstream):
    settings = settings_factory(upstream_base_url=fake_upstream.base_url,
                                upstream_api_key="sk-test-key-123456",
                                upstream_model="fake-model", admin_token=ADMIN)
    async with running_app(settings) as app:
        alice = await _user(app, "alice-code", [("问题", "回答")], fake_upstream)
        bob = await _user(app, "bob-code", [("问题", "回答")], fake_upstream)
        async with app.http.delete(f"{app.base_url}/api/v1/me/data",
                                   headers={"Authorization": f"Bearer {alice['token']}"}) as r:
            assert r.status == 204
        _, mine = await _get(app, "/admin/v1/audit", ADMIN, user=alice["id"])
        _, his = await _get(app, "/admin/v1/audit", ADMIN, user=bob["id"])
        _, every = await _get(app, "/admin/v1/audit", ADMIN, check="local")
        assert mine["items"] == [] and len(his["items"]) == 1
        # The record of what was refused stays, no longer anyone's.
        assert sorted(e["user"] for e in every["items"]) == sorted(
            ["anonymised", his["items"][0]["user"]])
        assert {e["rule"] for e in every["items"]} == {"fraud"}
