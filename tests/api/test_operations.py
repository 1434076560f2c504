"""Operations endpoints: health, readiness, metrics, meta; the start-up log names no secret."""

from __future__ import annotations

import logging

from tests.in_process import in_process_app


async def test_health_ready_meta_and_metrics(settings_factory, fake_upstream):
    settings = settings_factory(upstream_base_url=fake_upstream.base_url,
                                upstream_model="fake-model", filing_number="Beijing-123",
                                filed_model_name="示例大模型")
    async with in_process_app(settings) as app:
        r = await app.http.get(f"{app.base_url}/healthz")
        assert r.status_code == 200
        r = await app.http.get(f"{app.base_url}/readyz")
        body = r.json()
        assert r.status_code == 200 and body["checks"]["database"] == "ok"
        r = await app.http.get(f"{app.base_url}/api/v1/meta")
        meta = r.json()
        assert meta["label"] == settings.ai_label and meta["filing_number"] == "Beijing-123"
        assert meta["model_name"] == "fake-model" and meta["demo"] is False
        assert meta["filed_model_name"] == "示例大模型"
        token = await app.login()
        await app.chat_events(token, {"content": "hi"})
        await app.services.chat.wait_idle()  # counted once the answer has wholly ended
        r = await app.http.get(f"{app.base_url}/metrics")
        text = r.text
        assert 'mpchat_chats_total{status="complete"} 1.0' in text
        assert "mpchat_first_delta_seconds_count 1.0" in text


async def test_demo_model_is_announced(settings_factory, caplog):
    caplog.set_level(logging.INFO, logger="mpchat")
    async with in_process_app(settings_factory(upstream_api_key="sk-never-logged-999")) as app:
        token = await app.login()
        _, events = await app.chat_events(token, {"content": "hi"})
        answer = "".join(e["text"] for e in events if e["type"] == "delta")
        assert answer.startswith("【演示模型】")
        r = await app.http.get(f"{app.base_url}/api/v1/meta")
        assert r.json()["demo"] is True
    start_lines = [r.getMessage() for r in caplog.records if "mpchat starting" in r.getMessage()]
    assert start_lines and "DEMO" in start_lines[0] and "database=" in start_lines[0]
    assert "sk-never-logged-999" not in caplog.text


async def test_readyz_reports_redis_but_stays_ready_without_it(settings_factory):
    # Nothing listens on port 1: Redis is "configured" but unreachable.
    settings = settings_factory(redis_url="redis://127.0.0.1:1/0")
    async with in_process_app(settings) as app:
        r = await app.http.get(f"{app.base_url}/readyz")
        body = r.json()
        assert r.status_code == 200
        assert body["checks"] == {"database": "ok", "schema": "ok", "redis": "unavailable"}
        assert body["status"] == "degraded"
        token = await app.login()  # and chats still work, with in-process limits
        status, events = await app.chat_events(token, {"content": "hi"})
        assert status == 200 and events[-1]["type"] == "done"


async def test_cors_is_off_unless_configured(settings_factory):
    preflight = {"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    async with in_process_app(settings_factory()) as app:
        r = await app.http.options(f"{app.base_url}/api/v1/chat", headers=preflight)
        assert "Access-Control-Allow-Origin" not in r.headers
        r = await app.http.get(f"{app.base_url}/healthz",
                               headers={"Origin": "https://evil.example"})
        assert "Access-Control-Allow-Origin" not in r.headers
    settings = settings_factory(cors_origins="https://admin.example")
    async with in_process_app(settings) as app:
        ok = {**preflight, "Origin": "https://admin.example"}
        r = await app.http.options(f"{app.base_url}/api/v1/chat", headers=ok)
        assert r.headers["Access-Control-Allow-Origin"] == "https://admin.example"
        r = await app.http.options(f"{app.base_url}/api/v1/chat", headers=preflight)
        assert r.headers.get("Access-Control-Allow-Origin") != "https://evil.example"


async def test_me_reports_the_remaining_budget(settings_factory):
    async with in_process_app(settings_factory(rate_limit="3/minute")) as app:
        token = await app.login()
        headers = {"Authorization": f"Bearer {token}"}
        r = await app.http.get(f"{app.base_url}/api/v1/me", headers=headers)
        before = r.json()["rate_limit"]
        assert before["limit"] == 3 and before["remaining"] == 3 and before["window_s"] == 60
        await app.chat_events(token, {"content": "hi"})
        r = await app.http.get(f"{app.base_url}/api/v1/me", headers=headers)
        after = r.json()["rate_limit"]
        assert after["remaining"] == 2 and 0 < after["reset_s"] <= 60
