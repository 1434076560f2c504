"""Quotas in the chat: reserved before ``start`` (402 when they cannot be), settled however
the answer ends, at its real cost (the provider's usage, else what it said); ``done.quota``.

Prices here: one unit per completion token, so what each ending costs is visible.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from mpchat.estimate import estimate_tokens
from mpchat.fakes.upstream import FakeUpstream
from tests.utils import Running, running_app

CONFIG = """
[quota]
free_units = 0
max_completion_tokens = 50
[quota.prices]
default = { per_1k_completion = 1000 }
"""
CREDITS = 500
RESERVED = 50


def _settings(settings_factory: Any, fake: FakeUpstream, tmp_path: Path, **more: Any) -> Any:
    config = tmp_path / "quota.toml"
    config.write_text(CONFIG, encoding="utf-8")
    return settings_factory(upstream_base_url=fake.base_url, upstream_model="fake-model",
                            config=config, rate_limit="10000/minute", **more)


async def _user(app: Running, code: str, credits: int = CREDITS) -> tuple[str, str]:
    token = await app.login(code)
    async with app.http.get(f"{app.base_url}/api/v1/me",
                            headers={"Authorization": f"Bearer {token}"}) as r:
        user_id = (await r.json())["user_id"]
    await app.services.quotas.grant(user_id, credits, reason="test", key=f"grant-{code}")
    return token, user_id


async def _credits(app: Running, user_id: str) -> int:
    return int((await app.services.quotas.view(user_id)).credits)


async def _settled(app: Running, user_id: str, cost: int) -> None:
    await app.services.chat.wait_idle()
    assert await _credits(app, user_id) == CREDITS - cost
    ledger = await app.services.quotas.ledger(user_id, limit=500)
    assert sum(row.amount for row in ledger) == CREDITS - cost  # the ledger sums to it


async def test_a_complete_answer_costs_its_usage_and_says_so(settings_factory, fake_upstream,
                                                             tmp_path):
    async with running_app(_settings(settings_factory, fake_upstream, tmp_path)) as app:
        token, user = await _user(app, "complete")
        _, events = await app.chat_events(token, {"content": "你好"})
        done = events[-1]
        assert done["type"] == "done" and done["usage"]["completion_tokens"] == 20
        assert done["quota"]["credits"] == CREDITS - 20 and done["quota"]["enabled"] is True
        await _settled(app, user, 20)
        assert fake_upstream.stats.bodies[-1]["max_tokens"] == RESERVED  # what was reserved


async def test_endings_each_settle_at_their_cost(settings_factory, fake_upstream, tmp_path):
    async with running_app(_settings(settings_factory, fake_upstream, tmp_path)) as app:
        # Broken by the provider after three pieces: no usage, so what it said.
        token, user = await _user(app, "truncated")
        fake_upstream.script = [{"drop_after": 3}]
        _, events = await app.chat_events(token, {"content": "你好"})
        assert events[-1]["type"] == "error"
        await _settled(app, user, estimate_tokens("片段0 片段1 片段2 "))

        # Retracted (the call closed at the hit, before any usage): what it said was
        # produced, and is paid for.
        token, user = await _user(app, "retracted")
        fake_upstream.script = [{"text": ["好的，赌", "博网站在这里"], "trickle": 0.05}]
        _, events = await app.chat_events(token, {"content": "你好"})
        assert [e["type"] for e in events][-2:] == ["retract", "done"]
        cost = estimate_tokens("好的，赌博网站在这里")
        assert events[-1]["quota"]["credits"] == CREDITS - cost
        await _settled(app, user, cost)

        # Failed before any text, after every retry: nothing produced, nothing due.
        token, user = await _user(app, "failed")
        fake_upstream.script = [{"status": 500}] * 3
        status, events = await app.chat_events(token, {"content": "你好"})
        assert status == 502
        await _settled(app, user, 0)


@pytest.mark.parametrize("policy", ["finish", "cancel"])
async def test_a_client_that_leaves(settings_factory, fake_upstream, tmp_path, policy):
    settings = _settings(settings_factory, fake_upstream, tmp_path, on_disconnect=policy)
    async with running_app(settings) as app:
        token, user = await _user(app, f"gone-{policy}")
        fake_upstream.script = [{"trickle": 0.05}]
        async with app.http.post(f"{app.base_url}/api/v1/chat", json={"content": "你好"},
                                 headers={"Authorization": f"Bearer {token}"}) as r:
            async for line in r.content:
                if b'"delta"' in line:
                    break  # gone after the first words
        await app.services.chat.wait_idle()
        if policy == "finish":
            await _settled(app, user, 20)  # finished without the client: its usage
        else:
            said = await _said(app, token)
            assert said and len(said) < len("".join(f"片段{i} " for i in range(20)))
            await _settled(app, user, estimate_tokens(said))


async def _said(app: Running, token: str) -> str:
    headers = {"Authorization": f"Bearer {token}"}
    async with app.http.get(f"{app.base_url}/api/v1/conversations", headers=headers) as r:
        cid = (await r.json())["items"][0]["id"]
    async with app.http.get(f"{app.base_url}/api/v1/conversations/{cid}/messages",
                            headers=headers) as r:
        items = (await r.json())["items"]
    return str(items[-1]["content"])


async def test_too_little_left_is_402_before_start_and_stores_nothing(
    settings_factory, fake_upstream, tmp_path
):
    async with running_app(_settings(settings_factory, fake_upstream, tmp_path)) as app:
        token, user = await _user(app, "poor", credits=RESERVED - 1)
        status, events = await app.chat_events(token, {"content": "你好"})
        assert status == 402 and events == [{"type": "error", "code": "quota_exceeded",
                                              "message": events[0]["message"]}]
        assert fake_upstream.stats.requests == 0
        async with app.http.get(f"{app.base_url}/api/v1/conversations",
                                headers={"Authorization": f"Bearer {token}"}) as r:
            assert (await r.json())["items"] == []
        assert await _credits(app, user) == RESERVED - 1


async def test_many_chats_at_once_never_go_below_zero(settings_factory, fake_upstream,
                                                      tmp_path):
    """A balance that covers exactly ten answers' reservations: ten answered, the rest 402."""
    async with running_app(_settings(settings_factory, fake_upstream, tmp_path,
                                     upstream_max_concurrency=200,
                                     queue_size=200)) as app:
        token, user = await _user(app, "busy", credits=10 * RESERVED)
        fake_upstream.script = [{"text": ["好"] * 50}] * 100  # 50 units: costs its reservation

        async def one() -> int:
            status, _ = await app.chat_events(token, {"content": "你好"})
            return status

        statuses = await asyncio.gather(*(one() for _ in range(100)))
        assert sorted(statuses) == [200] * 10 + [402] * 90
        await _settled_at_zero(app, user)


async def _settled_at_zero(app: Running, user: str) -> None:
    await app.services.chat.wait_idle()
    assert await _credits(app, user) == 0
    ledger = await app.services.quotas.ledger(user, limit=1000)
    assert sum(row.amount for row in ledger) == 0


async def test_quota_in_the_non_streamed_body(settings_factory, fake_upstream, tmp_path):
    async with running_app(_settings(settings_factory, fake_upstream, tmp_path)) as app:
        token, _ = await _user(app, "json")
        async with app.http.post(f"{app.base_url}/api/v1/chat",
                                 json={"content": "你好", "stream": False},
                                 headers={"Authorization": f"Bearer {token}"}) as r:
            body = await r.json()
        assert body["quota"]["credits"] == CREDITS - 20


async def test_quotas_off_say_nothing(settings_factory, fake_upstream):
    settings = settings_factory(upstream_base_url=fake_upstream.base_url,
                                upstream_model="fake-model")
    async with running_app(settings) as app:
        token = await app.login("free")
        _, events = await app.chat_events(token, {"content": "你好"})
        assert "quota" not in events[-1]
        assert "max_tokens" not in fake_upstream.stats.bodies[-1]


async def test_the_sweep_releases_a_reservation_its_answer_never_settled(
    settings_factory, fake_upstream, tmp_path
):
    """A reservation whose answer never got a row (the instance died in between) is released
    by the sweep's backstop, at no cost."""
    async with running_app(_settings(settings_factory, fake_upstream, tmp_path)) as app:
        _, user = await _user(app, "orphan")
        quotas = app.services.quotas
        await quotas.reserve(user_id=user, model="fake-model", prompt_tokens=10,
                             max_completion_tokens=RESERVED, key="0" * 32)
        assert await _credits(app, user) == CREDITS - RESERVED
        from datetime import UTC, datetime, timedelta

        assert await quotas.release_stale(older_than=datetime.now(UTC) + timedelta(1)) == 1
        assert await _credits(app, user) == CREDITS


_ = aiohttp  # the client session type of Running
