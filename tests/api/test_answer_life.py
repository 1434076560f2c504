"""An answer's life apart from its connection: every way it ends releases all it holds."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import orjson
import pytest

from mpchat.fakes.upstream import FakeUpstream
from tests.conftest import REDIS_URL, flushed_redis_db, worker_redis_db
from tests.utils import Running, running_app, shown_text

FULL = "".join(f"片段{i} " for i in range(20))
Events = list[dict[str, Any]]


@pytest.fixture(params=["in-process", "redis"])
async def shared_state(request: pytest.FixtureRequest) -> AsyncIterator[str | None]:
    """Without Redis, and with a Redis database of these tests' own, flushed around each
    (12 without xdist; a number of the worker's own in a parallel run)."""
    if request.param == "in-process":
        yield None
        return
    async with flushed_redis_db(f"{REDIS_URL.rsplit('/', 1)[0]}/{worker_redis_db(12)}") as url:
        yield url


def _settings(settings_factory, fake: FakeUpstream, **extra: Any):
    return settings_factory(upstream_base_url=fake.base_url, upstream_api_key="k",
                            upstream_model="fake-model", **extra)


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _read(response: aiohttp.ClientResponse, stop: Callable[[Events], bool]) -> Events:
    seen: Events = []
    while line := await response.content.readline():
        if line.strip():
            seen.append(orjson.loads(line))
            if stop(seen):
                break
    return seen


async def _replay(app: Running, token: str, message_id: str, after: int = -1) -> Events:
    async with app.http.get(f"{app.base_url}/api/v1/messages/{message_id}/events",
                            params={"after": after}, headers=_auth(token)) as r:
        assert r.status == 200, await r.text()
        return await _read(r, lambda _: False)


async def _messages(app: Running, token: str, conversation_id: str) -> Events:
    async with app.http.get(f"{app.base_url}/api/v1/conversations/{conversation_id}/messages",
                            headers=_auth(token)) as r:
        assert r.status == 200
        return list((await r.json())["items"])


def _chats(app: Running, status: str) -> float:
    value = app.services.metrics.registry.get_sample_value("mpchat_chats_total",
                                                           {"status": status})
    return value or 0.0


def _delta_text(seen: Events) -> str:
    return "".join(e["text"] for e in seen if e["type"] == "delta")


_POINTS: dict[str, Callable[[Events], bool]] = {
    "start": lambda seen: seen[-1]["type"] == "start",
    "queued": lambda seen: seen[-1]["type"] == "queued",
    "first delta": lambda seen: seen[-1]["type"] == "delta",
    "mid-answer": lambda seen: "片段9 " in _delta_text(seen),
    "just before done": lambda seen: _delta_text(seen).endswith("片段19 "),
}


@pytest.mark.parametrize("policy", ["finish", "cancel"])
@pytest.mark.parametrize("point", list(_POINTS))
async def test_closing_the_client_at_each_event_releases_everything(
    settings_factory, fake_upstream, shared_state, point, policy
):
    """Closed after start, queued, the first delta, mid-answer or before done: nothing held."""
    fake_upstream.config.gap = 0.03
    settings = _settings(settings_factory, fake_upstream, on_disconnect=policy,
                         redis_url=shared_state, upstream_max_concurrency=1)
    async with running_app(settings) as app:
        app.services.chat.ctx.start_wait = 0.05  # the hanging blocker's start, soon
        gate = app.services.upstream.routes[0].gate
        token = await app.login()
        blocker: asyncio.Task[Events] | None = None
        if point == "queued":
            # The one slot is held by an answer that hangs, so ours waits in the queue.
            fake_upstream.script = [{"hang": True}]

            async def hold() -> Events:
                async with app.http.post(f"{app.base_url}/api/v1/chat", headers=_auth(token),
                                         json={"content": "blocker"}) as r:
                    return await _read(r, lambda _: False)

            blocker = asyncio.create_task(hold())
            await asyncio.wait_for(fake_upstream.wait_for_requests(1), 5)
        async with app.http.post(f"{app.base_url}/api/v1/chat", json={"content": "hi"},
                                 headers=_auth(token)) as r:
            assert r.status == 200
            seen = await _read(r, _POINTS[point])
            r.close()  # the mini program went to the background, or the network dropped
        assert seen[0]["type"] == "start" and seen[-1]["type"] != "done"
        conv, mid = seen[0]["conversation_id"], seen[0]["message_id"]
        if blocker is not None:
            blocker_id = next(iter(app.services.chat.answers._live))
            assert blocker_id != mid
            assert await _cancel(app, token, blocker_id) == 204
            await asyncio.wait_for(blocker, 10)
        await asyncio.wait_for(app.services.chat.wait_idle(), 10)

        assert gate.in_flight == 0 and gate.waiting == 0
        items = await _messages(app, token, conv)
        replayed = await _replay(app, token, mid)
        assert [e["seq"] for e in replayed] == list(range(len(replayed)))
        assert replayed[:len(seen)] == seen  # the same events, whoever follows
        # Closed after the last delta, the answer may have ended before the close was seen.
        completed_first = point == "just before done" and replayed[-1].get("finish_reason") \
            == "stop"
        if policy == "finish" or completed_first:
            assert [(m["role"], m["status"]) for m in items] == [("user", "complete"),
                                                                 ("assistant", "complete")]
            assert items[1]["content"] == FULL == shown_text(replayed)
            assert replayed[-1]["type"] == "done" and replayed[-1]["finish_reason"] == "stop"
            assert _chats(app, "complete") == 1
            assert fake_upstream.stats.completed >= 1 and fake_upstream.stats.cancelled <= 1
            return
        # cancel: the provider call stopped; what was released, exactly, is stored.
        assert replayed[-1] == {**replayed[-1], "type": "done", "finish_reason": "cancelled"}
        released = shown_text(replayed)
        assert FULL.startswith(released) and released.startswith(_delta_text(seen))
        if released:
            assert [(m["role"], m["status"]) for m in items] == [("user", "complete"),
                                                                 ("assistant", "truncated")]
            assert items[1]["content"] == released
            assert released != FULL or point == "just before done"
            assert _chats(app, "truncated") == 1
        else:
            assert [(m["role"], m["status"]) for m in items] == [("user", "unanswered")]
            assert _chats(app, "unanswered") == 1 + (blocker is not None)


async def _cancel(app: Running, token: str, message_id: str) -> int:
    async with app.http.post(f"{app.base_url}/api/v1/messages/{message_id}/cancel",
                             headers=_auth(token)) as r:
        return r.status


async def test_cancel_mid_answer_stops_the_provider_and_keeps_what_was_said(
    settings_factory, fake_upstream, shared_state
):
    """The user's stop: the provider call ends, truncated, followers get done "cancelled"."""
    fake_upstream.config.gap = 0.05
    async with running_app(_settings(settings_factory, fake_upstream,
                                     redis_url=shared_state)) as app:
        token = await app.login()
        async with app.http.post(f"{app.base_url}/api/v1/chat", json={"content": "hi"},
                                 headers=_auth(token)) as r:
            seen = await _read(r, lambda s: "片段2 " in _delta_text(s))
            mid = seen[0]["message_id"]
            assert await _cancel(app, token, mid) == 204
            seen += await _read(r, lambda _: False)  # the same connection sees the end
        assert seen[-1]["type"] == "done" and seen[-1]["finish_reason"] == "cancelled"
        await asyncio.wait_for(fake_upstream.wait_idle(), 5)
        assert fake_upstream.stats.cancelled == 1 and fake_upstream.stats.completed == 0
        await asyncio.wait_for(app.services.chat.wait_idle(), 5)
        items = await _messages(app, token, seen[0]["conversation_id"])
        assert items[1]["status"] == "truncated"
        assert items[1]["content"] == _delta_text(seen)
        # Idempotent: an ended answer stays as it ended.
        assert await _cancel(app, token, mid) == 204
        assert (await _messages(app, token, seen[0]["conversation_id"])) == items


async def test_cancel_before_the_first_delta_leaves_the_question_unanswered(
    settings_factory, fake_upstream
):
    """Stopped while the provider thinks: no answer, the question unanswered."""
    fake_upstream.script = [{"hang": True}]
    async with running_app(_settings(settings_factory, fake_upstream)) as app:
        app.services.chat.ctx.start_wait = 0.05
        token = await app.login()
        async with app.http.post(f"{app.base_url}/api/v1/chat", json={"content": "hi"},
                                 headers=_auth(token)) as r:
            seen = await _read(r, lambda s: s[-1]["type"] == "start")
            await asyncio.wait_for(fake_upstream.wait_for_requests(1), 5)
            assert await _cancel(app, token, seen[0]["message_id"]) == 204
            seen += await _read(r, lambda _: False)
        assert [e["type"] for e in seen] == ["start", "done"]
        assert seen[-1]["finish_reason"] == "cancelled"
        await asyncio.wait_for(fake_upstream.wait_idle(), 5)
        assert fake_upstream.stats.cancelled == 1
        items = await _messages(app, token, seen[0]["conversation_id"])
        assert [(m["role"], m["status"]) for m in items] == [("user", "unanswered")]


async def test_deleting_my_data_during_an_answer_stops_it_and_stores_nothing(
    settings_factory, fake_upstream, shared_state
):
    """DELETE /me/data mid-answer: the stream ends with an error line; no row remains."""
    from sqlalchemy import func, select

    from mpchat.storage.tables import conversations, messages

    fake_upstream.config.gap = 0.05
    async with running_app(_settings(settings_factory, fake_upstream,
                                     redis_url=shared_state)) as app:
        token = await app.login()
        async with app.http.post(f"{app.base_url}/api/v1/chat", json={"content": "hi"},
                                 headers=_auth(token)) as r:
            seen = await _read(r, lambda s: s[-1]["type"] == "delta")
            async with app.http.delete(f"{app.base_url}/api/v1/me/data",
                                       headers=_auth(token)) as d:
                assert d.status == 204
            seen += await _read(r, lambda _: False)
        assert seen[-1]["type"] == "error" and seen[-1]["code"] == "not_found"
        await asyncio.wait_for(app.services.chat.wait_idle(), 5)
        await asyncio.wait_for(fake_upstream.wait_idle(), 5)
        assert fake_upstream.stats.completed == 0
        async with app.services.engine.connect() as conn:
            for table in (messages, conversations):
                count = (await conn.execute(select(func.count()).select_from(table))).scalar()
                assert count == 0, table.name


async def test_a_dropped_client_does_not_lose_the_answer(settings_factory, fake_upstream):
    """The default policy: the client leaves mid-answer, the answer is stored complete."""
    fake_upstream.config.gap = 0.03
    async with running_app(_settings(settings_factory, fake_upstream)) as app:
        token = await app.login()
        # A `stream: false` caller that gives up while the answer is produced.
        with pytest.raises(TimeoutError):
            async with app.http.post(f"{app.base_url}/api/v1/chat", headers=_auth(token),
                                     json={"content": "hi", "stream": False},
                                     timeout=aiohttp.ClientTimeout(total=0.2)) as r:
                await r.read()
        await asyncio.wait_for(app.services.chat.wait_idle(), 10)
        async with app.http.get(f"{app.base_url}/api/v1/conversations",
                                headers=_auth(token)) as r:
            conv = (await r.json())["items"][0]["id"]
        items = await _messages(app, token, conv)
        assert items[-1]["status"] == "complete" and items[-1]["content"] == FULL


async def test_first_delta_deadline_bounds_the_wait_and_frees_the_slot(
    settings_factory, fake_upstream
):
    """A provider that never answers: upstream_timeout at the deadline, nothing held."""
    fake_upstream.script = [{"hang": True}] * 5
    settings = _settings(settings_factory, fake_upstream, first_delta_deadline=0.3,
                         upstream_first_token_timeout=30)
    async with running_app(settings) as app:
        gate = app.services.upstream.routes[0].gate
        token = await app.login()
        status, events = await app.chat_events(token, {"content": "hi"})
        assert status == 504 and [e["type"] for e in events] == ["error"]
        assert events[0]["code"] == "upstream_timeout"
        await asyncio.wait_for(app.services.chat.wait_idle(), 5)
        assert gate.in_flight == 0 and gate.waiting == 0
        await asyncio.wait_for(fake_upstream.wait_idle(), 5)
        assert fake_upstream.stats.cancelled == 1


async def test_shutdown_lets_answers_finish_within_its_bound(
    settings_factory, fake_upstream, database_url
):
    """SIGTERM-like close: an answer under way finishes when it can, else keeps its text."""
    from mpchat.storage import answers as stored
    from mpchat.storage.crypto import Keyring
    from mpchat.storage.engine import create_engine

    fake_upstream.config.gap = 0.2  # 20 chunks: 4 s, longer than the bound below
    settings = _settings(settings_factory, fake_upstream, shutdown_timeout=0.5)
    async with running_app(settings) as app:
        token = await app.login()
        async with app.http.post(f"{app.base_url}/api/v1/chat", json={"content": "hi"},
                                 headers=_auth(token)) as r:
            seen = await _read(r, lambda s: s[-1]["type"] == "delta")
            r.close()
        keyring: Keyring = app.services.keyring
        user_id = app.services.chat.answers._live[seen[0]["message_id"]].user_id
    engine = create_engine(database_url)
    try:
        row = await stored.read_answer(engine, keyring, message_id=seen[0]["message_id"],
                                       user_id=user_id)
    finally:
        await engine.dispose()
    assert row is not None and row.status == "truncated"
    assert FULL.startswith(row.content) and row.content.startswith(_delta_text(seen))
    assert row.meta["error"]["code"] == "service_unavailable"


async def test_a_full_queue_and_a_deadline_leave_the_provider_budget_unchanged(
    settings_factory, fake_upstream, tmp_path
):
    """A budget share taken for a request that never reached the provider is given back."""
    config = tmp_path / "mpchat.toml"
    config.write_text(
        f'[[providers]]\nname = "p"\nbase_url = "{fake_upstream.base_url}"\n'
        'models = ["fake-model"]\nrpm = 10\ntpm = 100000\nmax_concurrency = 1\n'
    )
    # The first answer starts at once and then holds its slot for two seconds.
    fake_upstream.script = [{"text": ["a", "b", "c"], "trickle": 1.0}]
    settings = _settings(settings_factory, fake_upstream, config=config, queue_size=1,
                         first_delta_deadline=0.5)
    async with running_app(settings) as app:
        app.services.chat.ctx.start_wait = 0.05
        budget = app.services.upstream.routes[0].budget
        token = await app.login()
        full = budget._local.requests
        began = time.monotonic()
        async with app.http.post(f"{app.base_url}/api/v1/chat", json={"content": "hold"},
                                 headers=_auth(token)) as held:
            await _read(held, lambda s: s[-1]["type"] == "delta")
            async with app.http.post(f"{app.base_url}/api/v1/chat", json={"content": "wait"},
                                     headers=_auth(token)) as waiting:
                await _read(waiting, lambda s: s[-1]["type"] == "queued")
                # The queue is full: refused before start.
                status, events = await app.chat_events(token, {"content": "again"})
                assert status == 503 and events[0]["code"] == "busy"
                # The queued one meets its deadline before it ever reaches the provider.
                rest = await _read(waiting, lambda _: False)
                assert rest[-1]["code"] == "upstream_timeout"
            assert (await _read(held, lambda _: False))[-1]["type"] == "done"
        await asyncio.wait_for(app.services.chat.wait_idle(), 5)
        assert app.services.upstream.routes[0].gate.in_flight == 0
        assert fake_upstream.stats.requests == 1
        await budget.reserve(0)  # refills the local bucket to now, then takes one
        refilled = (time.monotonic() - began) * 10 / 60  # rpm = 10: 1/6 of a request a second
        # Only the request that reached the provider (and this probe) used the budget;
        # a leaked reservation would be a whole request more.
        assert budget._local.requests == pytest.approx(min(full, full - 2 + refilled), abs=0.3)


async def test_a_silent_answer_keeps_its_followers_alive_with_pings(
    settings_factory, fake_upstream
):
    """While the provider says nothing, followers get ping lines (no seq), then the end."""
    fake_upstream.script = [{"hang": True}]
    async with running_app(_settings(settings_factory, fake_upstream, ping_interval=0.05)) as app:
        app.services.chat.ctx.start_wait = 0.05
        token = await app.login()
        async with app.http.post(f"{app.base_url}/api/v1/chat", json={"content": "hi"},
                                 headers=_auth(token)) as r:
            seen = await _read(r, lambda s: sum(e["type"] == "ping" for e in s) == 2)
            assert await _cancel(app, token, seen[0]["message_id"]) == 204
            seen += await _read(r, lambda _: False)
        # Pings until the stop took effect (more may come while the cancel travels), then done.
        types = [e["type"] for e in seen]
        assert types[0] == "start" and types[-1] == "done" and len(types) >= 4, types
        assert set(types[1:-1]) == {"ping"}, types
        assert "seq" not in seen[1] and seen[-1]["seq"] == 1


@pytest.mark.parametrize("window_ms", [0, 150])
async def test_deltas_within_the_coalescing_window_leave_as_one(
    settings_factory, fake_upstream, window_ms
):
    """MPCHAT_STREAM_COALESCE_MS: the first words at once, then one delta per window."""
    fake_upstream.config.gap = 0.02  # 20 chunks over about 0.4 s
    settings = _settings(settings_factory, fake_upstream, stream_coalesce_ms=window_ms)
    async with running_app(settings) as app:
        token = await app.login()
        status, events = await app.chat_events(token, {"content": "hi"})
        assert status == 200 and events[-1]["type"] == "done"
        deltas = [e for e in events if e["type"] == "delta"]
        assert "".join(e["text"] for e in deltas) == FULL
        assert [e["seq"] for e in events] == list(range(len(events)))
        if window_ms:
            assert deltas[0]["text"] == "片段0 "  # not held back
            assert len(deltas) <= 6, len(deltas)  # about 0.4 s / 0.15 s, plus the first
        else:
            assert len(deltas) >= 15, len(deltas)  # each chunk as it came (some may meet)
        items = await _messages(app, token, events[0]["conversation_id"])
        assert items[-1]["content"] == FULL
        # The stored row names the seq of the answer's last event (a resume's snapshot
        # numbers after it), held text included.
        assert await _stored_seq(app, events[0]["message_id"]) == events[-1]["seq"]


async def _stored_seq(app: Running, message_id: str) -> int | None:
    from sqlalchemy import select

    from mpchat.storage.tables import messages

    async with app.services.engine.connect() as conn:
        return (await conn.execute(select(messages.c.event_seq)
                                   .where(messages.c.id == message_id))).scalar_one()


async def test_an_answer_the_database_cannot_store_ends_with_an_error_and_frees_its_slot(
    settings_factory, fake_upstream, monkeypatch
):
    """Storage down at the end: service_unavailable, nothing held; the row is left streaming
    for the sweeper to settle once this instance's claim lapses."""
    from mpchat.storage import answers as stored

    async def down(*args: Any, **kwargs: Any) -> bool:
        raise OSError("database unreachable")

    async with running_app(_settings(settings_factory, fake_upstream)) as app:
        token = await app.login()
        monkeypatch.setattr(stored, "finish_answer", down)
        status, events = await app.chat_events(token, {"content": "hi"})
        assert status == 200 and events[-1]["type"] == "error"
        assert events[-1]["code"] == "service_unavailable" and events[-1]["retry_after"] == 5
        assert [e["seq"] for e in events] == list(range(len(events)))
        await asyncio.wait_for(app.services.chat.wait_idle(), 5)
        gate = app.services.upstream.routes[0].gate
        assert gate.in_flight == 0 and gate.waiting == 0
        assert _chats(app, "unstored") == 1
        items = await _messages(app, token, events[0]["conversation_id"])
        assert items[-1]["status"] == "streaming"
