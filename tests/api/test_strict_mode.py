"""MPCHAT_OUTPUT_MODE=strict over HTTP: no unchecked text reaches the client; first words
after one check."""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest

from mpchat.fakes.upstream import FakeUpstream
from mpchat.fakes.wechat import FakeWeChat
from mpchat.safety.segments import SegmentPolicy
from tests.utils import Running, running_app

APPID, SECRET = "wx_app", "wechat-secret-abcdef"
ADMIN = "admin-token-0123456789"
CHECK = 0.15  # the fake WeChat's time per msgSecCheck
TTFT = 0.3  # the fake provider's time to its first token


@pytest.fixture
async def wechat() -> Any:
    async with FakeWeChat(appid=APPID, secret=SECRET) as fake:
        yield fake


def _settings(settings_factory: Any, upstream: FakeUpstream, wechat: FakeWeChat) -> Any:
    return settings_factory(
        upstream_base_url=upstream.base_url, upstream_api_key="sk-test-key-123456",
        upstream_model="fake-model", admin_token=ADMIN, wechat_appid=APPID,
        wechat_secret=SECRET, wechat_api_base=wechat.base_url, output_mode="strict",
    )


async def _timed_chat(app: Running, token: str,
                      body: dict[str, Any]) -> list[tuple[float, dict[str, Any]]]:
    """The events of one chat, each with its arrival in seconds after the request."""
    began = time.monotonic()
    events = []
    async with app.http.post(f"{app.base_url}/api/v1/chat", json=body,
                             headers={"Authorization": f"Bearer {token}"}) as r:
        assert r.status == 200
        async for line in r.content:
            if line.strip():
                events.append((time.monotonic() - began, orjson.loads(line)))
    return events


async def test_a_risky_third_segment_never_reaches_the_client(
    settings_factory: Any, fake_upstream: FakeUpstream, wechat: FakeWeChat
) -> None:
    async with running_app(_settings(settings_factory, fake_upstream, wechat)) as app:
        # Every delta its own segment, so that the third one is the third delta.
        app.services.moderation.segment_policy = SegmentPolicy(ages=(0.0,))
        token = await app.login("strict-user")
        await app.chat_events(token, {"content": "热身"})  # token fetched, connections warm
        fake_upstream.script = [
            {"text": ["第一句。", "第二句。", "第三句有 risky-word。", "第四句。"],
             "trickle": 0.05},
            {"text": ["好的。"]},
        ]
        fake_upstream.config.ttft = TTFT
        wechat.latency["msg_sec_check"] = CHECK
        timed = await _timed_chat(app, token, {"content": "问题"})
        events = [event for _, event in timed]
        deltas = [(at, e["text"]) for at, e in timed if e["type"] == "delta"]
        assert "".join(text for _, text in deltas) == "第一句。第二句。"
        assert "retract" not in [e["type"] for e in events]
        assert events[-1]["type"] == "done"
        assert events[-1]["finish_reason"] == "content_filter"
        # The first words waited for one check after the provider's first token, no more.
        first = deltas[0][0]
        assert TTFT + CHECK <= first < TTFT + CHECK + 0.12, first

        conversation, answer_id = events[0]["conversation_id"], events[0]["message_id"]
        headers = {"Authorization": f"Bearer {token}"}
        async with app.http.get(
                f"{app.base_url}/api/v1/conversations/{conversation}/messages",
                headers=headers) as r:
            items = (await r.json())["items"]
        assert [(m["status"], m["content"]) for m in items[-2:]] == [
            ("complete", "问题"), ("filtered", "第一句。第二句。")]

        # The flagged turn is not context: its question and the shown part stay out.
        fake_upstream.config.ttft = 0.0
        await app.chat_events(token, {"content": "下一个", "conversation_id": conversation})
        assert [m["content"] for m in fake_upstream.stats.received[-1][1:]] == ["下一个"]

        # The operator sees which rule decided.
        await app.services.chat.moderation.flush_audit()
        async with app.http.get(f"{app.base_url}/admin/v1/audit",
                                params={"verdict": "risky"},
                                headers={"Authorization": f"Bearer {ADMIN}"}) as r:
            [row] = (await r.json())["items"]
        assert (row["check"], row["stage"], row["rule"]) == ("wechat", "output", "20001")
        assert row["message_id"] == answer_id and row["trace_id"]
        assert row["detail"] == {"suggest": "risky", "label": 20001, "refused": True}


async def test_a_clean_answer_streams_whole_after_its_checks(
    settings_factory: Any, fake_upstream: FakeUpstream, wechat: FakeWeChat
) -> None:
    async with running_app(_settings(settings_factory, fake_upstream, wechat)) as app:
        token = await app.login("strict-user")
        fake_upstream.script = [{"text": ["你好", "，这是", "一个回答。", "结尾"]}]
        _, events = await app.chat_events(token, {"content": "问题"})
        said = "".join(e["text"] for e in events if e["type"] == "delta")
        assert said == "你好，这是一个回答。结尾"
        assert events[-1]["type"] == "done" and events[-1]["finish_reason"] == "stop"
        # Whatever the segments, each piece of the answer was judged before it left.
        checked = wechat.stats.contents[1:]
        assert "".join(checked).count("结尾") >= 1 and all(len(c) <= 2500 for c in checked)
