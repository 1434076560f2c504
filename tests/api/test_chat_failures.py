"""Retries before the first delta, failures after it, and clients that go away."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson

from mpchat.fakes.upstream import FakeUpstream
from tests.utils import Running, running_app


def _settings(settings_factory, fake: FakeUpstream, **extra: Any):
    return settings_factory(upstream_base_url=fake.base_url, upstream_api_key="k",
                            upstream_model="fake-model", **extra)


def _record_sleeps(app: Running) -> list[float]:
    waits: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        waits.append(seconds)

    app.services.upstream.sleep = fake_sleep
    return waits


async def test_429_retry_honours_retry_after(settings_factory, fake_upstream):
    async with running_app(_settings(settings_factory, fake_upstream)) as app:
        waits: list[float] = []

        async def recording_sleep(seconds: float) -> None:
            waits.append(seconds)
            await asyncio.sleep(seconds)

        app.services.upstream.sleep = recording_sleep
        fake_upstream.script = [{"status": 429, "retry_after": 1}]
        token = await app.login()
        began = time.monotonic()
        status, events = await app.chat_events(token, {"content": "hi"})
        assert status == 200
        assert [e["type"] for e in events][-1] == "done"
        assert fake_upstream.stats.requests == 2
        assert waits == [1]  # the provider's Retry-After, not our backoff
        assert time.monotonic() - began >= 1


async def test_5xx_is_retried_with_jittered_backoff(settings_factory, fake_upstream):
    async with running_app(_settings(settings_factory, fake_upstream)) as app:
        waits = _record_sleeps(app)
        fake_upstream.script = [{"status": 503}, {"status": 500}]
        token = await app.login()
        _, events = await app.chat_events(token, {"content": "hi"})
        assert [e["type"] for e in events][-1] == "done"
        assert fake_upstream.stats.requests == 3
        assert len(waits) == 2 and all(0 <= w <= 0.05 for w in waits)  # the test cap


async def test_retry_after_is_capped(settings_factory, fake_upstream):
    async with running_app(_settings(settings_factory, fake_upstream)) as app:
        waits = _record_sleeps(app)
        fake_upstream.script = [{"status": 429, "retry_after": 3600}]
        token = await app.login()
        await app.chat_events(token, {"content": "hi"})
        assert waits == [app.services.upstream.retry.retry_after_cap]


async def test_exhausted_retries_end_in_error_event_and_question_kept(
    settings_factory, fake_upstream
):
    async with running_app(_settings(settings_factory, fake_upstream)) as app:
        _record_sleeps(app)
        fake_upstream.script = [{"status": 500}] * 3
        token = await app.login()
        status, events = await app.chat_events(token, {"content": "hi"})
        # Failed before its start: the HTTP status says so, with the one error line.
        assert status == 502
        assert [e["type"] for e in events] == ["error"]
        assert events[-1]["code"] == "upstream_error"
        assert "scripted" not in orjson.dumps(events).decode()  # no provider body leaks
        assert fake_upstream.stats.requests == 3
        async with app.http.get(f"{app.base_url}/api/v1/conversations",
                                headers={"Authorization": f"Bearer {token}"}) as r:
            conv = (await r.json())["items"][0]["id"]
        async with app.http.get(f"{app.base_url}/api/v1/conversations/{conv}/messages",
                                headers={"Authorization": f"Bearer {token}"}) as r:
            items = (await r.json())["items"]
        assert [(m["role"], m["status"]) for m in items] == [("user", "unanswered")]


async def test_other_4xx_is_not_retried(settings_factory, fake_upstream):
    async with running_app(_settings(settings_factory, fake_upstream)) as app:
        _record_sleeps(app)
        fake_upstream.script = [{"status": 400}]
        token = await app.login()
        _, events = await app.chat_events(token, {"content": "hi"})
        assert events[-1]["code"] == "upstream_error"
        assert fake_upstream.stats.requests == 1


async def test_non_streaming_failure_maps_to_status(settings_factory, fake_upstream):
    async with running_app(_settings(settings_factory, fake_upstream)) as app:
        _record_sleeps(app)
        fake_upstream.script = [{"status": 502}] * 3
        token = await app.login()
        async with app.http.post(f"{app.base_url}/api/v1/chat",
                                 json={"content": "hi", "stream": False},
                                 headers={"Authorization": f"Bearer {token}"}) as r:
            assert r.status == 502
            assert r.content_type == "application/json"
            assert (await r.json())["error"]["code"] == "upstream_error"


async def test_first_token_timeout_is_retried_then_504(settings_factory, fake_upstream):
    settings = _settings(settings_factory, fake_upstream, upstream_first_token_timeout=0.2,
                         upstream_retry_attempts=2)
    async with running_app(settings) as app:
        _record_sleeps(app)
        fake_upstream.script = [{"hang": True}, {"hang": True}]
        token = await app.login()
        _, events = await app.chat_events(token, {"content": "hi"})
        assert events[-1]["code"] == "upstream_timeout"
        assert fake_upstream.stats.requests == 2
        await asyncio.wait_for(fake_upstream.wait_idle(), 5)
        assert fake_upstream.stats.cancelled == 2  # both hung requests were abandoned


async def test_drop_mid_stream_is_not_retried_and_stored_truncated(
    settings_factory, fake_upstream
):
    async with running_app(_settings(settings_factory, fake_upstream)) as app:
        fake_upstream.script = [{"drop_after": 3}]
        token = await app.login()
        _, events = await app.chat_events(token, {"content": "hi"})
        kinds = [e["type"] for e in events]
        assert kinds[0] == "start" and kinds[-1] == "error" and "delta" in kinds
        assert "".join(e["text"] for e in events if e["type"] == "delta") == "片段0 片段1 片段2 "
        assert fake_upstream.stats.requests == 1  # output had reached the client
        conv = events[0]["conversation_id"]
        async with app.http.get(f"{app.base_url}/api/v1/conversations/{conv}/messages",
                                headers={"Authorization": f"Bearer {token}"}) as r:
            items = (await r.json())["items"]
        assert items[-1]["status"] == "truncated"
        assert items[-1]["content"] == "片段0 片段1 片段2 "


async def test_client_disconnect_cancels_provider_and_stores_partial(
    settings_factory, fake_upstream
):
    fake_upstream.config.gap = 0.05  # slow enough that the client leaves mid-answer
    settings = _settings(settings_factory, fake_upstream, on_disconnect="cancel")
    async with running_app(settings) as app:
        token = await app.login()
        seen: list[dict[str, Any]] = []
        async with app.http.post(f"{app.base_url}/api/v1/chat", json={"content": "hi"},
                                 headers={"Authorization": f"Bearer {token}"}) as r:
            async for line in r.content:
                seen.append(orjson.loads(line))
                if sum(e["type"] == "delta" for e in seen) == 2:
                    break
            r.close()  # the mini program went to the background
        await asyncio.wait_for(fake_upstream.wait_idle(), 5)
        assert fake_upstream.stats.cancelled == 1
        assert fake_upstream.stats.completed == 0
        conv = seen[0]["conversation_id"]

        await asyncio.wait_for(app.services.chat.wait_idle(), 5)
        async with app.http.get(f"{app.base_url}/api/v1/conversations/{conv}/messages",
                                headers={"Authorization": f"Bearer {token}"}) as resp:
            items = (await resp.json())["items"]
        assert items[-1]["status"] == "truncated"
        assert items[-1]["content"].startswith("片段0 片段1 ")
        assert not items[-1]["content"].endswith("片段19 ")


async def test_a_client_leaving_frees_its_upstream_slot(settings_factory, fake_upstream):
    settings = _settings(settings_factory, fake_upstream, upstream_max_concurrency=1,
                         on_disconnect="cancel")
    async with running_app(settings) as app:
        gate = app.services.upstream.routes[0].gate
        token = await app.login()
        fake_upstream.script = [{"hang": True}]
        async with app.http.post(f"{app.base_url}/api/v1/chat", json={"content": "hi"},
                                 headers={"Authorization": f"Bearer {token}"}) as r:
            first = orjson.loads(await r.content.readline())
            assert first["type"] == "start"
            await asyncio.wait_for(fake_upstream.wait_for_requests(1), 5)
            r.close()
        await asyncio.wait_for(app.services.chat.wait_idle(), 5)
        assert gate.in_flight == 0 and gate.waiting == 0
        # The one slot is free again: the next chat is answered, not queued or refused.
        _, events = await app.chat_events(token, {"content": "again"})
        assert [e["type"] for e in events][-1] == "done"
        assert not any(e["type"] == "queued" for e in events)
