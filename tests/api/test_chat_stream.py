"""The core chat path over real HTTP: login, streamed answer, stored turn, context order."""

from __future__ import annotations

from typing import Any

import orjson

from mpchat.chat.summarize import PROMPT as SUMMARY_PROMPT
from mpchat.fakes.upstream import FakeUpstream
from tests.utils import running_app


def _upstream(fake: FakeUpstream) -> dict[str, Any]:
    return {"upstream_base_url": fake.base_url, "upstream_api_key": "sk-test-key-123456",
            "upstream_model": "fake-model"}


async def test_stream_events_in_order_and_answer_stored(settings_factory, fake_upstream):
    settings = settings_factory(**_upstream(fake_upstream))
    async with running_app(settings) as app:
        token = await app.login("alice")
        status, events = await app.chat_events(token, {"content": "你好"})
        assert status == 200
        kinds = [e["type"] for e in events]
        assert kinds[0] == "start" and kinds[-1] == "done"
        assert set(kinds[1:-1]) == {"delta"} and len(kinds) >= 3
        start = events[0]
        assert start["ai_generated"] is True and start["label"] and start["model"] == "fake-model"
        answer = "".join(e["text"] for e in events if e["type"] == "delta")
        assert answer == "".join(f"片段{i} " for i in range(20))
        assert events[-1]["usage"]["completion_tokens"] == 20
        # The provider saw the key, the system prompt and the new message.
        assert fake_upstream.stats.authorization[-1] == "Bearer sk-test-key-123456"
        sent = fake_upstream.stats.received[-1]
        assert [m["role"] for m in sent] == ["system", "user"]
        assert sent[-1]["content"] == "你好"

        headers = {"Authorization": f"Bearer {token}"}
        conv = start["conversation_id"]
        async with app.http.get(f"{app.base_url}/api/v1/conversations/{conv}/messages",
                                headers=headers) as r:
            page = await r.json()
        assert [(m["role"], m["status"]) for m in page["items"]] == [
            ("user", "complete"), ("assistant", "complete")]
        assert page["items"][1]["content"] == answer
        assert page["items"][1]["id"] == start["message_id"]


async def test_context_is_chronological_and_ends_with_new_message(settings_factory, fake_upstream):
    settings = settings_factory(**_upstream(fake_upstream))
    async with running_app(settings) as app:
        token = await app.login("bob")
        fake_upstream.script = [{"text": ["A1"]}, {"text": ["A2"]}, {"text": ["A3"]}]
        _, events = await app.chat_events(token, {"content": "Q1"})
        conv = events[0]["conversation_id"]
        for q in ("Q2", "Q3"):
            await app.chat_events(token, {"content": q, "conversation_id": conv})
        sent = fake_upstream.stats.received[-1]
        assert [(m["role"], m["content"]) for m in sent[1:]] == [
            ("user", "Q1"), ("assistant", "A1"), ("user", "Q2"), ("assistant", "A2"),
            ("user", "Q3")]


async def test_context_budget_keeps_newest_turns_in_order(settings_factory, fake_upstream):
    # Each short turn costs about 5 estimated tokens. 70: what is left after the prompt,
    # the question and the note of omitted turns holds a few turns, not all of them.
    settings = settings_factory(**_upstream(fake_upstream), context_token_budget=70,
                                system_prompt="S")
    async with running_app(settings) as app:
        app.services.chat.summarizer = None  # budget alone here; summaries are tested below
        token = await app.login("carol")
        fake_upstream.script = [{"text": [f"A{i}"]} for i in range(8)]
        _, events = await app.chat_events(token, {"content": "Q0"})
        conv = events[0]["conversation_id"]
        for i in range(1, 8):
            await app.chat_events(token, {"content": f"Q{i}", "conversation_id": conv})
        sent = fake_upstream.stats.received[-1]
        body = [m["content"] for m in sent[1:]]
        assert body[-1] == "Q7"
        assert 3 <= len(body) < 15  # older turns were left out
        # What was kept is the newest contiguous run, oldest first.
        kept = body[:-1]
        expected_tail = [x for i in range(7) for x in (f"Q{i}", f"A{i}")][-len(kept):]
        assert kept == expected_tail
        assert "更早的对话" in sent[0]["content"]


async def test_older_turns_are_summarised_into_the_context(settings_factory, fake_upstream):
    settings = settings_factory(**_upstream(fake_upstream), context_token_budget=40,
                                system_prompt="S")
    async with running_app(settings) as app:
        token = await app.login("dora")
        summarizer = app.services.chat.summarizer
        _, events = await app.chat_events(token, {"content": "我叫小明"})
        conv = events[0]["conversation_id"]
        for i in range(1, 6):
            await summarizer.wait_idle()
            fake_upstream.script = [{"text": [f"A{i}"]}, {"text": ["SUMMARY-小明"]}]
            await app.chat_events(token, {"content": f"Q{i}", "conversation_id": conv})
        await summarizer.wait_idle()
        summary_requests = [r for r in fake_upstream.stats.received
                            if r[0]["content"] == SUMMARY_PROMPT]
        assert summary_requests
        # The summariser saw the first turn, in order, as a transcript.
        assert "user: 我叫小明" in summary_requests[0][-1]["content"]
        fake_upstream.script = [{"text": ["ok"]}]
        await app.chat_events(token, {"content": "我叫什么？", "conversation_id": conv})
        system = fake_upstream.stats.received[-1][0]["content"]
        assert "此前对话的摘要：SUMMARY-小明" in system
        sent = [m["content"] for m in fake_upstream.stats.received[-1][1:]]
        assert "我叫小明" not in sent and sent[-1] == "我叫什么？"


async def test_stored_answer_carries_the_implicit_ai_label(settings_factory, fake_upstream):
    from sqlalchemy import select

    from mpchat.storage.tables import messages

    async with running_app(settings_factory(**_upstream(fake_upstream))) as app:
        token = await app.login("erin")
        _, events = await app.chat_events(token, {"content": "hi"})
        async with app.services.engine.connect() as conn:
            meta = (await conn.execute(
                select(messages.c.meta).where(messages.c.id == events[0]["message_id"])
            )).scalar_one()
            question = (await conn.execute(
                select(messages.c.id).where(messages.c.role == "user")
            )).scalar_one()
    assert meta.pop("timings") == events[-1]["timings"]  # tests/console/test_timings.py
    assert meta == {"ai_generated": True, "content_id": events[0]["message_id"],
                    "provider": "upstream", "model": "fake-model", "reply_to": question,
                    "finish_reason": "stop"}


async def test_streams_tell_proxies_not_to_buffer_them(settings_factory, fake_upstream):
    """nginx buffers a proxied body unless told otherwise; a gzip layer holds lines back."""
    settings = settings_factory(**_upstream(fake_upstream))
    async with running_app(settings) as app:
        token = await app.login("proxied")
        headers = {"Authorization": f"Bearer {token}"}
        async with app.http.post(f"{app.base_url}/api/v1/chat", headers=headers,
                                 json={"content": "你好"}) as r:
            assert r.status == 200
            stream_headers = r.headers
            first = orjson.loads(await r.content.readline())
            await r.read()
        async with app.http.get(
                f"{app.base_url}/api/v1/messages/{first['message_id']}/events?after=-1",
                headers=headers) as r:
            assert r.status == 200
            events_headers = r.headers
            await r.read()
        async with app.http.post(f"{app.base_url}/api/v1/chat", headers=headers,
                                 json={"content": "你好", "stream": False}) as r:
            assert r.status == 200
            body_headers = r.headers
        for seen in (stream_headers, events_headers):
            assert seen["X-Accel-Buffering"] == "no"
            assert seen["Cache-Control"] == "no-cache, no-transform"
            assert seen["Content-Type"].startswith("application/x-ndjson")
        assert "X-Accel-Buffering" not in body_headers  # one JSON body: nothing to hold back
