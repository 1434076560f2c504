"""Providers as they really are, through the whole app (part 2): which route served and what
names it, every route down against a full queue, and the bounds on a hostile provider.

Part 1 (failure modes, dialects, reasoning, random chunks): ``test_provider_outcomes.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson
import pytest

from mpchat.fakes.upstream import FakeUpstream
from tests.api.test_provider_outcomes import (
    FULL,
    auth,
    chat,
    chat_json,
    check_stream,
    delta_text,
    messages,
    no_tracebacks,
    provider_settings,
    stored_answer,
)
from tests.utils import Running, free_port, running_app, wait_until

MODELS = {"alpha": "model-a", "beta": "model-b"}
QUEUE_WORDS = ("排队", "队列", "queue", "繁忙")


@pytest.fixture
async def fakes(fake_upstream: FakeUpstream) -> AsyncIterator[dict[str, FakeUpstream]]:
    async with FakeUpstream() as beta:
        yield {"alpha": fake_upstream, "beta": beta}


def _config(tmp_path: Path, fakes: dict[str, FakeUpstream], **per: dict[str, Any]) -> Path:
    """Two providers, alpha (model-a) and beta (model-b), with per-provider overrides."""
    text = ""
    for name, fake in fakes.items():
        text += (f'[[providers]]\nname = "{name}"\nbase_url = "{fake.base_url}"\n'
                 f'models = ["{MODELS[name]}"]\n')
        for key, value in per.get(name, {}).items():
            text += f"{key} = {value}\n"
    path = tmp_path / "providers.toml"
    path.write_text(text)
    return path


def _served(fakes: dict[str, FakeUpstream], before: dict[str, int]) -> list[str]:
    return [n for n, f in fakes.items() if f.stats.requests != before[n]]


def _requests(fakes: dict[str, FakeUpstream]) -> dict[str, int]:
    return {n: f.stats.requests for n, f in fakes.items()}


async def _names(app: Running, message_id: str) -> tuple[str, str]:
    row = await stored_answer(app, message_id)
    assert row.status == "complete" and row.content == FULL
    return row.meta["provider"], row.meta["model"]


# -- 3. the route that served is the one named ------------------------------------------------

async def test_weighted_routes_name_the_provider_that_served(
    settings_factory, fakes, tmp_path, caplog
):
    """Over many chats, start, X-AI-Provider and the stored meta name the fake that answered."""
    config = _config(tmp_path, fakes, alpha={"weight": 3}, beta={"weight": 1})
    async with running_app(settings_factory(config=config)) as app:
        app.services.upstream._rand = random.Random(20240611).random  # a fixed weighted draw
        token = await app.login()
        count = {"alpha": 0, "beta": 0}
        for i in range(30):
            before = _requests(fakes)
            if i % 3:
                status, headers, events = await chat(app, token, {"content": f"问{i}"})
                assert status == 200
                check_stream(events)
                assert events[-1]["type"] == "done"
                model, message_id = events[0]["model"], events[0]["message_id"]
            else:
                status, headers, body = await chat_json(app, token, f"问{i}")
                assert status == 200 and body["content"] == FULL
                model, message_id = None, body["message_id"]
            served = _served(fakes, before)
            assert len(served) == 1, served  # exactly one provider was called, once
            name = served[0]
            count[name] += 1
            assert model in (None, MODELS[name])
            assert headers["X-AI-Provider"] == MODELS[name]
            assert await _names(app, message_id) == (name, MODELS[name])
        # Weight 3 against 1: both serve, alpha more often.
        assert count["alpha"] > count["beta"] > 0, count
    no_tracebacks(caplog)


@pytest.mark.parametrize("how", ["answers 500", "answers 429", "breaker open", "hangs"])
async def test_after_failover_everything_names_the_second_route(
    settings_factory, fakes, tmp_path, caplog, how
):
    """alpha (priority 1) fails or is down: beta serves, and start, header and meta say so."""
    config = _config(tmp_path, fakes, alpha={"priority": 1}, beta={"priority": 2})
    settings = settings_factory(config=config, upstream_first_token_timeout=0.3)
    async with running_app(settings) as app:
        token = await app.login()
        alpha = app.services.upstream.routes[0]
        step = {"answers 500": {"status": 500}, "answers 429": {"status": 429, "retry_after": 5},
                "hangs": {"hang": True}}.get(how)
        if how == "breaker open":
            for _ in range(alpha.breaker.failure_threshold):
                alpha.breaker.record_failure()
            assert alpha.breaker.state == "open"
        for stream in (True, False):
            # After its 429 alpha is paused (Retry-After): the second chat skips it.
            tried = step is not None and (stream or how != "answers 429")
            if tried:
                fakes["alpha"].script = [step]
                alpha.breaker.record_success()  # one failure each time, never the breaker
            before = _requests(fakes)
            if stream:
                status, headers, events = await chat(app, token, {"content": "hi"})
                assert status == 200
                check_stream(events)
                assert events[0]["model"] == "model-b"
                message_id = events[0]["message_id"]
            else:
                status, headers, body = await chat_json(app, token, "hi")
                assert status == 200
                message_id = body["message_id"]
            called = {n: fakes[n].stats.requests - before[n] for n in fakes}
            assert called == {"alpha": int(tried), "beta": 1}
            assert headers["X-AI-Provider"] == "model-b"
            assert await _names(app, message_id) == ("beta", "model-b")
    no_tracebacks(caplog)


async def test_a_failover_after_start_left_is_named_by_done_and_storage(
    settings_factory, fakes, tmp_path, caplog
):
    """alpha hangs past start's wait, beta serves: done and the stored meta name beta.

    `start` (and the headers with it) had to leave naming the admitted route, so the client
    could resume; a failover after it is named by `done.model` (docs/chat.md).
    """
    config = _config(tmp_path, fakes, alpha={"priority": 1}, beta={"priority": 2})
    settings = settings_factory(config=config, upstream_first_token_timeout=0.5)
    async with running_app(settings) as app:
        app.services.chat.ctx.start_wait = 0.05  # start leaves while alpha still hangs
        token = await app.login()
        fakes["alpha"].script = [{"hang": True}]
        status, headers, events = await chat(app, token, {"content": "hi"})
        assert status == 200 and events[-1]["type"] == "done"
        assert _requests(fakes) == {"alpha": 1, "beta": 1}
        served = await _names(app, events[0]["message_id"])
        assert served == ("beta", "model-b")
        assert (events[0]["model"], headers["X-AI-Provider"]) == ("model-a", "model-a")
        assert events[-1]["model"] == "model-b"
    no_tracebacks(caplog)


async def test_display_name_is_the_header_and_the_real_model_is_stored(
    settings_factory, fake_upstream, caplog
):
    """MPCHAT_MODEL_DISPLAY_NAME names the header (percent-encoded); meta keeps the real model."""
    settings = provider_settings(settings_factory, fake_upstream, model_display_name="小助手 AI")
    async with running_app(settings) as app:
        token = await app.login()
        status, headers, events = await chat(app, token, {"content": "hi"})
        assert status == 200 and headers["X-AI-Provider"] == quote("小助手 AI", safe="")
        assert events[0]["model"] == "fake-model"
        row = await stored_answer(app, events[0]["message_id"])
        assert (row.meta["provider"], row.meta["model"]) == ("upstream", "fake-model")
    no_tracebacks(caplog)


# -- 4. every route down, or only busy ---------------------------------------------------------

async def _no_wait(seconds: float) -> None:
    """The retry's backoff, skipped: a pause is about the provider, not the test's clock."""


def _check_unavailable(status: int, error: dict[str, Any]) -> None:
    assert status == 503 and error["code"] == "service_unavailable", error
    assert error["retry_after"] > 0
    assert not any(word in error["message"] for word in QUEUE_WORDS), error["message"]


async def test_every_breaker_open_is_service_unavailable(
    settings_factory, fakes, tmp_path, caplog
):
    """Both providers keep failing until their breakers open: 503 service_unavailable."""
    async with running_app(settings_factory(config=_config(tmp_path, fakes))) as app:
        token = await app.login()
        routes = app.services.upstream.routes
        for fake in fakes.values():
            fake.script = [{"status": 500}] * 100
        for _ in range(10):  # 3 attempts a chat, 5 failures open a breaker
            status, _, events = await chat(app, token, {"content": "hi"})
            assert status in (502, 503) and [e["type"] for e in events] == ["error"]
            if all(r.breaker.state == "open" for r in routes):
                break
        assert [r.breaker.state for r in routes] == ["open", "open"]
        before = _requests(fakes)
        status, headers, events = await chat(app, token, {"content": "hi"})
        _check_unavailable(status, events[0])
        assert int(headers["Retry-After"]) > 0
        assert events[0]["retry_after"] <= routes[0].breaker.cooldown
        status, _, body = await chat_json(app, token, "hi")
        _check_unavailable(status, body["error"])
        assert _requests(fakes) == before  # nobody was called
    no_tracebacks(caplog)


async def test_every_provider_paused_by_429_is_service_unavailable(
    settings_factory, fakes, tmp_path, caplog
):
    """Both providers answer 429 with Retry-After: the fleet-wide pause is service_unavailable."""
    async with running_app(settings_factory(config=_config(tmp_path, fakes))) as app:
        app.services.upstream.sleep = _no_wait
        token = await app.login()
        for fake in fakes.values():
            fake.script = [{"status": 429, "retry_after": 15}]
        status, _, events = await chat(app, token, {"content": "hi"})
        # Both tried once; no third attempt can be admitted while both are paused.
        assert _requests(fakes) == {"alpha": 1, "beta": 1}
        _check_unavailable(status, events[0])
        assert 10 < events[0]["retry_after"] <= 15
        status, _, events = await chat(app, token, {"content": "again"})
        _check_unavailable(status, events[0])
        assert 10 < events[0]["retry_after"] <= 15
        assert _requests(fakes) == {"alpha": 1, "beta": 1}
        assert all(r.breaker.state == "closed" for r in app.services.upstream.routes)
    no_tracebacks(caplog)


async def test_retry_after_is_the_soonest_route_back(settings_factory, fakes, tmp_path, caplog):
    """One breaker open for 3 s, the other route paused 15 s: come back in 3 s, not 15."""
    async with running_app(settings_factory(config=_config(tmp_path, fakes))) as app:
        app.services.upstream.sleep = _no_wait
        alpha = app.services.upstream.routes[0]
        alpha.breaker.cooldown = 3.0
        for _ in range(alpha.breaker.failure_threshold):
            alpha.breaker.record_failure()
        token = await app.login()
        fakes["beta"].script = [{"status": 429, "retry_after": 15}]
        for content in ("hi", "again"):  # the 429 itself, then one refused at admission
            status, _, events = await chat(app, token, {"content": content})
            _check_unavailable(status, events[0])
            assert events[0]["retry_after"] <= 3, events
        assert _requests(fakes) == {"alpha": 0, "beta": 1}
    no_tracebacks(caplog)


async def test_a_pause_does_not_spend_the_half_open_probe(
    settings_factory, fake_upstream, caplog
):
    """A half-open breaker's one probe goes to a request that is sent, not to a paused route."""
    async with running_app(provider_settings(settings_factory, fake_upstream)) as app:
        route = app.services.upstream.routes[0]
        route.breaker.cooldown = 1.0
        token = await app.login()
        fake_upstream.script = [{"status": 500}] * 5
        status, _, events = await chat(app, token, {"content": "hi"})
        assert status == 502
        status, _, events = await chat(app, token, {"content": "hi"})  # the 5th failure
        _check_unavailable(status, events[0])
        assert route.breaker.state == "open" and fake_upstream.stats.requests == 5
        await wait_until(lambda: route.breaker.state == "half_open", timeout=5)
        # Meanwhile another instance got a 429: the fleet-wide pause (shared through Redis).
        await route.budget.pause(0.3)
        status, _, events = await chat(app, token, {"content": "hi"})
        _check_unavailable(status, events[0])
        assert fake_upstream.stats.requests == 5

        async def unpaused() -> bool:
            return await route.budget.paused_for() == 0

        await wait_until(unpaused, timeout=5)
        assert route.breaker.state == "half_open"  # still within the first cool-down
        # The pause is over: the probe is sent, and its success closes the breaker.
        status, _, events = await chat(app, token, {"content": "hi"})
        assert status == 200 and events[-1]["type"] == "done", events
        assert fake_upstream.stats.requests == 6 and route.breaker.state == "closed"
    no_tracebacks(caplog)


async def _hold(app: Running, token: str) -> tuple[Any, str]:
    """A chat whose provider hangs, read up to its start: it holds its route's one slot."""
    response = await app.http.post(f"{app.base_url}/api/v1/chat", json={"content": "hold"},
                                   headers=auth(token))
    first = orjson.loads(await response.content.readline())
    assert first["type"] == "start"
    return response, first["message_id"]


@pytest.mark.parametrize("other", ["none", "breaker open"])
async def test_a_full_queue_is_busy_not_unavailable(
    settings_factory, fakes, tmp_path, caplog, other
):
    """The only live route's queue is full: 503 busy, also when the other route is down."""
    names = ["alpha"] if other == "none" else ["alpha", "beta"]
    config = _config(tmp_path, {n: fakes[n] for n in names},
                     alpha={"max_concurrency": 1})
    async with running_app(settings_factory(config=config, queue_size=0)) as app:
        app.services.chat.ctx.start_wait = 0.05
        routes = app.services.upstream.routes
        if other == "breaker open":
            for _ in range(routes[1].breaker.failure_threshold):
                routes[1].breaker.record_failure()
        token = await app.login()
        fakes["alpha"].script = [{"hang": True}]
        held, message_id = await _hold(app, token)
        try:
            await asyncio.wait_for(fakes["alpha"].wait_for_requests(1), 5)
            status, _, events = await chat(app, token, {"content": "hi"})
            assert status == 503 and events[0]["code"] == "busy", events
            assert events[0]["retry_after"] > 0
            status, _, body = await chat_json(app, token, "hi")
            assert status == 503 and body["error"]["code"] == "busy"
        finally:
            async with app.http.post(f"{app.base_url}/api/v1/messages/{message_id}/cancel",
                                     headers=auth(token)) as r:
                assert r.status == 204
            held.close()
        await asyncio.wait_for(app.services.chat.wait_idle(), 10)
        assert fakes["beta"].stats.requests == 0
    no_tracebacks(caplog)


# -- 5. bounds ---------------------------------------------------------------------------------

async def test_an_answer_past_max_answer_chars_ends_length(
    settings_factory, fake_upstream, caplog
):
    """MPCHAT_MAX_ANSWER_CHARS=50: done length, the first 50 characters shown and stored."""
    settings = provider_settings(settings_factory, fake_upstream, max_answer_chars=50)
    async with running_app(settings) as app:
        token = await app.login()
        for step in ({}, {"endless": "content"}):
            fake_upstream.script = [step]
            status, _, events = await chat(app, token, {"content": "hi"})
            assert status == 200
            check_stream(events)
            assert events[-1]["type"] == "done" and events[-1]["finish_reason"] == "length"
            assert delta_text(events) == FULL[:50]
            row = await stored_answer(app, events[0]["message_id"])
            assert (row.status, row.content, row.meta["finish_reason"]) == (
                "complete", FULL[:50], "length")
        fake_upstream.script = [{"endless": "content"}]
        status, _, body = await chat_json(app, token, "hi")
        assert status == 200 and body["finish_reason"] == "length"
        assert body["content"] == FULL[:50]
        await asyncio.wait_for(fake_upstream.wait_idle(), 5)  # the endless call was closed
        items = await messages(app, token, events[0]["conversation_id"])
        assert items[-1]["content"] == FULL[:50]
    no_tracebacks(caplog)


HOSTILE = [
    {"endless": "content"},
    {"endless": "reasoning"},
    {"oversized": 25_000_000},
    {"no_newline": 25_000_000},
]


@contextlib.asynccontextmanager
async def _fake_process(http: aiohttp.ClientSession) -> AsyncIterator[str]:
    """``mpchat fake-upstream`` in a process of its own: its CPU is not the app's loop."""
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mpchat", "fake-upstream", "--port", str(port),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"

    async def up() -> bool:
        try:
            async with http.get(f"{base}/_control/stats") as r:
                return r.status == 200
        except aiohttp.ClientConnectionError:
            return False

    try:
        await wait_until(up, timeout=20, what="fake-upstream process listening")
        yield base
    finally:
        process.terminate()
        await process.wait()


@pytest.mark.timing  # /healthz within 200 ms: run alone, not beside parallel workers
async def test_event_loop_stays_responsive_under_hostile_providers(settings_factory, caplog):
    """Endless and oversized answers streaming at once: /healthz answers within 200 ms."""
    async with aiohttp.ClientSession() as http, _fake_process(http) as fake:
        settings = settings_factory(upstream_base_url=f"{fake}/v1", upstream_model="fake-model",
                                    max_answer_chars=50_000, upstream_chunk_timeout=5)
        async with running_app(settings) as app:
            token = await app.login()
            async with http.post(f"{fake}/_control/script", json=HOSTILE * 2) as r:
                assert r.status == 200
            hostile = [asyncio.create_task(chat(app, token, {"content": f"h{i}"}))
                       for i in range(len(HOSTILE) * 2)]
            worst, probes = 0.0, 0
            while not all(t.done() for t in hostile):
                began = time.perf_counter()
                async with app.http.get(f"{app.base_url}/healthz") as r:
                    assert r.status == 200
                worst = max(worst, time.perf_counter() - began)
                probes += 1
                await asyncio.wait(hostile, timeout=0.01)  # pace the probes
            outcomes = [t.result() for t in hostile]

            async def provider_idle() -> bool:
                async with http.get(f"{fake}/_control/stats") as r:
                    stats = await r.json()
                return bool(stats["in_flight"] == 0 and stats["requests"] == len(hostile))

            await wait_until(provider_idle, timeout=10, what="every hostile call closed")
    assert probes >= 10  # the probe really ran beside the hostile answers
    assert worst < 0.2, f"worst /healthz latency {worst * 1000:.0f} ms over {probes} probes"
    for status, _, events in outcomes:
        assert status == 200
        check_stream(events)
        last = events[-1]
        assert (last["type"], last.get("finish_reason"), last.get("code")) in (
            ("done", "length", None), ("error", None, "upstream_error"))
    ends = sorted(e[-1].get("finish_reason") or e[-1]["code"] for _, _, e in outcomes)
    assert ends == ["length"] * 4 + ["upstream_error"] * 4
    no_tracebacks(caplog)
