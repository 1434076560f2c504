"""A request sent again under its ``Idempotency-Key``: one question, one answer, one cost.

A phone that lost its connection before ``start`` cannot tell whether its question arrived;
it sends it again with the same key, and follows the answer the first copy started.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from mpchat.fakes.upstream import FakeUpstream
from mpchat.storage import messages
from tests.utils import Running, running_app, shown_text

FULL = "".join(f"片段{i} " for i in range(20))


def _settings(settings_factory: Any, fake: FakeUpstream, **extra: Any) -> Any:
    return settings_factory(upstream_base_url=fake.base_url, upstream_api_key="k",
                            upstream_model="fake-model", **extra)


async def _post(app: Running, token: str, body: dict[str, Any],
                key: str | None) -> tuple[int, list[dict[str, Any]] | dict[str, Any]]:
    headers = {"Authorization": f"Bearer {token}"}
    if key is not None:
        headers["Idempotency-Key"] = key
    async with app.http.post(f"{app.base_url}/api/v1/chat", json=body, headers=headers) as r:
        raw = await r.read()
    if body.get("stream", True):
        return r.status, [orjson.loads(line) for line in raw.splitlines() if line]
    return r.status, orjson.loads(raw)




async def _rows(app: Running, token: str, conversation_id: str) -> list[tuple[str, str]]:
    async with app.http.get(f"{app.base_url}/api/v1/conversations/{conversation_id}/messages",
                            headers={"Authorization": f"Bearer {token}"}) as r:
        return [(m["role"], m["status"]) for m in (await r.json())["items"]]


async def test_a_retry_after_the_answer_ended_replays_it(settings_factory, fake_upstream):
    # One chat a minute: the retry costs no hit of the limit.
    async with running_app(_settings(settings_factory, fake_upstream,
                                     rate_limit="1/minute")) as app:
        token = await app.login()
        status, first = await _post(app, token, {"content": "你好"}, "req-1")
        assert status == 200 and shown_text(first) == FULL
        await app.services.chat.wait_idle()
        status, again = await _post(app, token, {"content": "你好"}, "req-1")
        assert status == 200
        assert again[0]["type"] == "start" and again[0]["message_id"] == first[0]["message_id"]
        assert shown_text(again) == FULL and again[-1]["type"] == "done"
        assert fake_upstream.stats.requests == 1
        assert await _rows(app, token, first[0]["conversation_id"]) == [
            ("user", "complete"), ("assistant", "complete")]
        # As a JSON body too.
        status, body = await _post(app, token, {"content": "你好", "stream": False}, "req-1")
        assert status == 200 and body["content"] == FULL
        assert body["message_id"] == first[0]["message_id"] and body["finish_reason"] == "stop"
        assert body["usage"] == first[-1]["usage"]
        # A new key is a new question (and this one is over the limit).
        status, refused = await _post(app, token, {"content": "你好"}, "req-2")
        assert status == 429 and refused[0]["code"] == "rate_limited"


async def test_a_retry_during_the_answer_follows_it_from_start(settings_factory,
                                                               fake_upstream):
    fake_upstream.config.gap = 0.02
    async with running_app(_settings(settings_factory, fake_upstream)) as app:
        token = await app.login()
        headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": "k1"}
        async with app.http.post(f"{app.base_url}/api/v1/chat", json={"content": "你好"},
                                 headers=headers) as r:
            start = orjson.loads(await r.content.readline())
            # The connection is lost here; the phone sends the request again.
        status, again = await _post(app, token, {"content": "你好"}, "k1")
        assert status == 200 and again[0]["message_id"] == start["message_id"]
        assert [e["seq"] for e in again] == list(range(len(again)))
        assert shown_text(again) == FULL
        assert fake_upstream.stats.requests == 1


async def test_keys_belong_to_their_user(settings_factory, fake_upstream):
    async with running_app(_settings(settings_factory, fake_upstream)) as app:
        alice, bob = await app.login("alice"), await app.login("bob")
        _, a = await _post(app, alice, {"content": "你好"}, "same")
        _, b = await _post(app, bob, {"content": "你好"}, "same")
        assert a[0]["message_id"] != b[0]["message_id"] and shown_text(b) == FULL
        assert fake_upstream.stats.requests == 2


@pytest.mark.parametrize("key", ["", "a" * 65, "空格 key", "ключ", "a/b"])
async def test_a_malformed_key_is_400(settings_factory, fake_upstream, key):
    async with running_app(_settings(settings_factory, fake_upstream)) as app:
        token = await app.login()
        status, events = await _post(app, token, {"content": "你好"}, key)
        assert status == 400 and events[0]["code"] == "invalid_request"
        assert fake_upstream.stats.requests == 0


async def test_a_key_used_for_another_message_is_400(settings_factory, fake_upstream):
    async with running_app(_settings(settings_factory, fake_upstream)) as app:
        token = await app.login()
        _, first = await _post(app, token, {"content": "你好"}, "k")
        status, events = await _post(app, token, {"content": "再见"}, "k")
        assert status == 400 and events[0]["code"] == "invalid_request"
        conv = first[0]["conversation_id"]
        status, events = await _post(app, token, {"content": "你好", "conversation_id": "0" * 32},
                                     "k")
        assert status == 400
        assert await _rows(app, token, conv) == [("user", "complete"), ("assistant", "complete")]


async def test_a_question_that_got_no_answer_is_not_asked_again(settings_factory,
                                                                fake_upstream):
    fake_upstream.script = [{"status": 400}]  # not retried: the question stays unanswered
    async with running_app(_settings(settings_factory, fake_upstream)) as app:
        token = await app.login()
        status, first = await _post(app, token, {"content": "你好"}, "k")
        assert first[-1]["type"] == "error"
        await app.services.chat.wait_idle()
        status, again = await _post(app, token, {"content": "你好"}, "k")
        assert status == 502 and again[0]["code"] == "upstream_error"
        assert fake_upstream.stats.requests == 1


QUOTA = """
[quota]
free_units = 0
max_completion_tokens = 50
[quota.prices]
default = { per_1k_completion = 1000 }
"""


async def test_the_copy_that_loses_the_race_gives_back_what_it_took(
        settings_factory, fake_upstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Two copies at once both miss the lookup; the second to store its question fails on
    the question's id, gives back its units and its slot, and follows the first's answer.

    The race is made certain by letting the second copy's first lookup miss.
    """
    config = tmp_path / "quota.toml"
    config.write_text(QUOTA, encoding="utf-8")
    real = messages.find_keyed_turn
    misses = [1]

    async def lookup(*args: Any, **kwargs: Any) -> Any:
        found = await real(*args, **kwargs)
        if found is not None and misses:
            misses.pop()
            return None  # as if the first copy had not stored its question yet
        return found

    monkeypatch.setattr(messages, "find_keyed_turn", lookup)
    settings = _settings(settings_factory, fake_upstream, config=config)
    async with running_app(settings) as app:
        quotas = app.services.quotas
        token = await app.login("phone")
        async with app.http.get(f"{app.base_url}/api/v1/me",
                                headers={"Authorization": f"Bearer {token}"}) as r:
            user_id = (await r.json())["user_id"]
        await quotas.grant(user_id, 500, reason="test", key="grant")
        _, first = await _post(app, token, {"content": "你好"}, "twice")
        _, second = await _post(app, token, {"content": "你好"}, "twice")
        assert not misses  # the second copy did miss its first lookup
        assert second[0]["message_id"] == first[0]["message_id"]
        assert shown_text(first) == shown_text(second) == FULL
        await app.services.chat.wait_idle()
        assert fake_upstream.stats.requests == 1
        assert int((await quotas.view(user_id)).credits) == 500 - 20  # one answer's cost
        ledger = await quotas.ledger(user_id, limit=100)
        assert sum(row.amount for row in ledger) == 500 - 20
        gate = app.services.chat.upstream.routes[0].gate
        assert gate.in_flight == 0 and gate.waiting == 0
        assert await _rows(app, token, first[0]["conversation_id"]) == [
            ("user", "complete"), ("assistant", "complete")]
