"""The admin API's numbers equal what a scripted set of chats produced (issue 15)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from mpchat.storage.usage import purge_usage, read_usage, write_usage
from tests.utils import Running, running_app

ADMIN, READONLY = "admin-token-0123456789", "readonly-token-0123456789"


async def _admin(app: Running, path: str, token: str = ADMIN, **params: str) -> Any:
    async with app.http.get(f"{app.base_url}/admin/v1{path}", params=params,
                            headers={"Authorization": f"Bearer {token}"}) as r:
        assert r.status == 200, await r.text()
        return await r.json()


async def test_admin_numbers_equal_the_scripted_chats(settings_factory, fake_upstream):
    settings = settings_factory(
        upstream_base_url=fake_upstream.base_url, upstream_api_key="sk-test-key-123456",
        upstream_model="fake-model", admin_token=ADMIN, admin_readonly_token=READONLY,
        rate_limit="3/minute")
    async with running_app(settings) as app:
        alice, bob = await app.login("alice"), await app.login("bob")
        done: list[dict[str, Any]] = []
        for i in range(3):
            status, events = await app.chat_events(alice, {"content": f"问题 {i}"})
            assert status == 200
            done.append(events[-1])
        status, events = await app.chat_events(alice, {"content": "第四个"})
        assert status == 429  # refused by the per-user limit: no answer
        status, events = await app.chat_events(bob, {"content": "你好"})
        done.append(events[-1])
        fake_upstream.script = [{"status": 400}]  # refused by the provider: upstream_error
        status, events = await app.chat_events(bob, {"content": "再来"})
        assert status == 502, events
        await app.services.chat.wait_idle()

        s = await _admin(app, "/summary", READONLY)
        assert s["chats"] == 5 and s["refused"] == 1 and s["users"] == 2
        assert s["errors"] == {"rate_limited": 1, "upstream_error": 1}
        assert s["by_status"] == {"complete": 4, "unanswered": 1, "refused": 1}
        assert s["completion_tokens"] == sum(d["usage"]["completion_tokens"] for d in done)
        assert s["prompt_tokens"] > sum(d["usage"]["prompt_tokens"] for d in done)  # + failed
        assert s["by_model"]["fake-model"]["chats"] == 5
        assert s["phases_ms"]["first_delta"]["p50"] is not None
        assert [u["chats"] for u in s["top_users"]] in ([3, 2], [2, 3])
        assert s["cost"] == 0  # quotas off

        series = await _admin(app, "/series", step="hour")
        assert len(series["t"]) in (24, 25) and sum(series["chats"]) == 5
        assert {code: sum(v) for code, v in series["errors"].items()} == s["errors"]
        assert sum(series["tokens"]["fake-model"]) == s["prompt_tokens"] + s["completion_tokens"]
        assert series["p95_ms"]["first_delta"][-1] is not None
        days = await _admin(app, "/series", step="day",
                            since=(datetime.now(UTC) - timedelta(days=7)).isoformat())
        assert sum(days["chats"]) == 5

        alice_id = (await _admin(app, "/users", q=""))["items"]
        ids = {u["id"] for u in alice_id}
        per_user = [await _admin(app, f"/users/{uid}/usage") for uid in ids]
        assert sorted(u["summary"]["chats"] for u in per_user) == [2, 3]
        assert sorted(u["summary"]["refused"] for u in per_user) == [0, 1]

        providers = (await _admin(app, "/providers", READONLY))["items"]
        assert [p["breaker"] for p in providers] == ["closed"]
        assert providers[0]["attempts"]["ok"] == 4 and providers[0]["in_flight"] == 0


async def test_usage_records_are_purged_with_their_retention(engine):
    now = datetime.now(UTC)
    row = {"user_id": "u" * 32, "message_id": "m" * 32, "provider": "p", "model": "m",
           "profile": "", "status": "complete", "error_code": None, "prompt_tokens": 1,
           "completion_tokens": 2, "cost": None, "timings": {"total_ms": 1.0}}
    await write_usage(engine, [{**row, "created_at": now - timedelta(days=91)},
                               {**row, "created_at": now - timedelta(days=1)}])
    assert await purge_usage(engine, days=90) == 1
    left = await read_usage(engine, since=now - timedelta(days=400), until=now)
    assert [r["timings"] for r in left] == [{"total_ms": 1.0}]


async def test_old_days_are_rolled_up_before_their_rows_are_purged(engine):
    from mpchat.storage.usage_daily import read_daily
    from mpchat.storage.usage_stats import merge_daily, series

    now = datetime.now(UTC)
    base = {"message_id": "m" * 32, "provider": "p", "profile": "", "cost": 3}

    def row(days: float, model: str, status: str = "complete", code: str | None = None,
            first: float = 100.0) -> dict[str, Any]:
        return {**base, "created_at": now - timedelta(days=days), "user_id": "u" * 32,
                "model": model, "status": status, "error_code": code, "prompt_tokens": 10,
                "completion_tokens": 5, "timings": {"first_delta_ms": first}}

    old = [row(100, "a", first=100), row(100, "b", first=300), row(100, "a", "unanswered",
           "upstream_error", first=200), row(95, "a"),
           {**row(95, ""), "status": "refused", "error_code": "rate_limited", "timings": None,
            "prompt_tokens": 0, "completion_tokens": 0, "cost": None}]
    await write_usage(engine, [*old, row(1, "a")])
    assert await purge_usage(engine, days=90) == 5
    assert await purge_usage(engine, days=90) == 0  # rolled up once, nothing left to purge
    since = now - timedelta(days=120)
    daily = await read_daily(engine, since=since, until=now)
    assert sorted({(r["day"].date(), r["model"]) for r in daily}) == sorted({
        ((now - timedelta(days=d)).date(), m) for d, m in
        ((100, "*"), (100, "a"), (100, "b"), (95, "*"), (95, "a"), (95, ""))})
    left = await read_usage(engine, since=since, until=now)
    out = merge_daily(series(left, since=since, until=now, step="day"), daily)
    assert sum(out["chats"]) == 3 + 1 + 1  # 100 days ago, 95, yesterday's raw row
    assert sum(out["errors"]["upstream_error"]) == 1 and sum(out["errors"]["rate_limited"]) == 1
    assert sum(out["tokens"]["a"]) == 3 * 15 + 15 and sum(out["tokens"]["b"]) == 15
    assert sum(out["cost"]["a"]) == 3 * 3 + 3
    i = out["t"].index(int(min(r["day"] for r in daily).timestamp()))
    assert (out["p50_ms"]["first_delta"][i], out["p95_ms"]["first_delta"][i]) == (200.0, 300.0)


async def test_deleting_ones_data_deletes_ones_usage_records(settings_factory, fake_upstream):
    settings = settings_factory(
        upstream_base_url=fake_upstream.base_url, upstream_api_key="sk-test-key-123456",
        upstream_model="fake-model", admin_token=ADMIN)
    async with running_app(settings) as app:
        token, other = await app.login("frank"), await app.login("grace")
        for who in (token, other):
            assert (await app.chat_events(who, {"content": "你好"}))[0] == 200
        headers = {"Authorization": f"Bearer {token}"}
        async with app.http.get(f"{app.base_url}/api/v1/me", headers=headers) as r:
            user_id = (await r.json())["user_id"]
        async with app.http.delete(f"{app.base_url}/api/v1/me/data", headers=headers) as r:
            assert r.status == 204
        now = datetime.now(UTC)
        rows = await read_usage(app.services.engine, since=now - timedelta(hours=1), until=now)
        assert len(rows) == 1 and rows[0]["user_id"] != user_id
