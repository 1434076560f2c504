"""Per-phase timings (issue 15): they add up, and the header, the stream, the stored answer
and the histogram tell the same story, with a slow WeChat check and a slow provider."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from mpchat.fakes.upstream import FakeUpstream
from mpchat.fakes.wechat import FakeWeChat
from mpchat.storage.tables import messages
from tests.utils import Running, running_app

APPID, SECRET = "wx_app", "wechat-secret-abcdef"
FIRST = ("input_local", "input_wechat", "queue", "provider_first_token", "overhead")


@pytest.fixture
async def wechat():
    async with FakeWeChat(appid=APPID, secret=SECRET) as fake:
        yield fake


def _settings(settings_factory: Any, upstream: FakeUpstream, wechat: FakeWeChat) -> Any:
    return settings_factory(
        upstream_base_url=upstream.base_url, upstream_api_key="sk-test-key-123456",
        upstream_model="fake-model", wechat_appid=APPID, wechat_secret=SECRET,
        wechat_api_base=wechat.base_url)


async def _phase_sums(app: Running) -> dict[str, float]:
    async with app.http.get(f"{app.base_url}/metrics") as r:
        text = await r.text()
    sums: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name == "mpchat_answer_phase_seconds":
            for sample in family.samples:
                if sample.name.endswith("_sum"):
                    phase = sample.labels["phase"]
                    sums[phase] = sums.get(phase, 0.0) + sample.value
                    assert set(sample.labels) == {"phase", "provider", "model", "profile"}
    return sums


def _adds_up(ms: dict[str, float]) -> None:
    ms = {name.removesuffix("_ms"): value for name, value in ms.items()}
    assert set(FIRST) <= set(ms), ms
    assert abs(ms["input_check"] - ms["input_local"] - ms["input_wechat"]) < 0.2, ms
    assert abs(sum(ms[p] for p in FIRST) - ms["first_delta"]) < 1.0, ms  # rounding only
    assert abs(ms["first_delta"] + ms["streaming"] - ms["total"]) < 1.0, ms


@pytest.mark.timing  # bounds on wall-clock phases: run alone, not beside parallel workers
@pytest.mark.parametrize(("check", "ttft"), [(0.3, 0.1), (0.1, 0.4)])
async def test_phases_add_up_with_slow_wechat_and_slow_provider(
        settings_factory, fake_upstream, wechat, engine, check, ttft):
    async with running_app(_settings(settings_factory, fake_upstream, wechat)) as app:
        token = await app.login("alice")
        await app.chat_events(token, {"content": "热身"})  # WeChat's token fetched
        wechat.latency["msg_sec_check"] = check
        fake_upstream.config.ttft = ttft
        fake_upstream.config.gap = 0.02
        status, events = await app.chat_events(token, {"content": "你好", "stream": True})
        assert status == 200
        done = events[-1]
        assert done["type"] == "done"
        ms = {name.removesuffix("_ms"): value for name, value in done["timings"].items()}
        _adds_up(ms)
        # WeChat's check is the wait up to its answer; the provider's first token counts
        # only for the part the check did not hide (the call starts with the check).
        assert check * 1000 - 5 <= ms["input_wechat"] < check * 1000 + 150, ms
        hidden = max(0.0, ttft - check) * 1000
        assert hidden - 60 <= ms["provider_first_token"] + ms["queue"] <= hidden + 150, ms
        assert ms["overhead"] < 150, ms
        # 20 chunks 20 ms apart after the first token (those the check hid came at once)
        assert ms["streaming"] >= 380 - max(0.0, check - ttft) * 1000 - 50, ms
        async with engine.connect() as conn:
            meta = (await conn.execute(select(messages.c.meta).where(
                messages.c.id == events[0]["message_id"]))).scalar_one()
        assert meta["timings"] == done["timings"]


async def test_server_timing_header_and_metrics_agree(settings_factory, fake_upstream, wechat):
    async with running_app(_settings(settings_factory, fake_upstream, wechat)) as app:
        token = await app.login("bob")
        await app.chat_events(token, {"content": "热身"})
        wechat.latency["msg_sec_check"] = 0.2
        fake_upstream.config.ttft = 0.3
        before = await _phase_sums(app)
        async with app.http.post(f"{app.base_url}/api/v1/chat",
                                 json={"content": "你好", "stream": False},
                                 headers={"Authorization": f"Bearer {token}"}) as r:
            assert r.status == 200
            header = r.headers["Server-Timing"]
        ms = {}
        for part in header.split(","):
            name, _, dur = part.strip().partition(";dur=")
            ms[name] = float(dur)
        _adds_up(ms)
        assert ms["input_wechat"] >= 195, ms
        after = await _phase_sums(app)
        assert set(ms) == {*FIRST, "input_check", "first_delta", "streaming", "total"}
        for phase, value in ms.items():
            if phase == "input_check":
                continue  # not a phase of its own: the two checks together
            assert abs((after[phase] - before.get(phase, 0.0)) * 1000 - value) < 0.2, phase
