"""Resuming an answer on another instance: through the relay (Redis) or from storage.

Two apps in this process share one database (and a Redis, for the relay). A client reads an
answer on A up to some seq, loses the connection, and resumes on B with ``after``: what it
then shows equals the stored answer, and the seqs it saw follow the wire contract's rule.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from redis.asyncio import Redis
from sqlalchemy import select

from mpchat.chat.answer import Answer
from mpchat.fakes.upstream import FakeUpstream, FakeUpstreamConfig
from mpchat.settings import Settings
from mpchat.storage.crypto import generate_key_spec
from mpchat.storage.tables import messages
from tests.conftest import reset_postgres
from tests.integration.support import Transcript, read_stream, stored_messages
from tests.limits.limits_support import PrivateRedis
from tests.utils import Running, running_app, shown_text, wait_until

CHUNKS = 20
FULL = "".join(f"片段{i} " for i in range(CHUNKS))  # the fake's default answer
SECRET = "resume-secret-" + "x" * 32
KEYS = generate_key_spec("rs1")


@pytest.fixture
async def pg(private_pg_url: str) -> str:
    """This run's own PostgreSQL database, emptied (never the shared ``test`` one)."""
    await reset_postgres(private_pg_url)
    return private_pg_url


@pytest.fixture
async def redis(tmp_path: Path) -> AsyncIterator[str]:
    """A redis-server of this test's own: nobody else's flush can take the relay's keys."""
    server = PrivateRedis(tmp_path)
    await server.start()
    try:
        yield server.url
    finally:
        await server.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session


def _settings(tmp_path: Path, name: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": tmp_path / name,
        "secret_key": SECRET,
        "encryption_keys": KEYS,
        "rate_limit": "100000/minute",
        "login_rate_limit": "100000/minute",
        "upstream_retry_initial": 0.01,
        "upstream_retry_max_wait": 0.05,
        "log_level": "WARNING",
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)


@contextlib.asynccontextmanager
async def _two_apps(
    tmp_path: Path, fake: FakeUpstream, database_url: str, redis_url: str | None = None,
    **overrides: Any,
) -> AsyncIterator[tuple[Running, Running]]:
    common = {"database_url": database_url, "redis_url": redis_url,
              "upstream_base_url": fake.base_url, **overrides}
    async with running_app(_settings(tmp_path, "a", **common)) as a, \
            running_app(_settings(tmp_path, "b", **common)) as b:
        yield a, b


async def _user_id(app: Running, message_id: str) -> str:
    """The user a stored message belongs to (``/me`` does not name its caller yet)."""
    async with app.services.engine.connect() as conn:
        row = (await conn.execute(
            select(messages.c.user_id).where(messages.c.id == message_id))).one()
    return str(row.user_id)


async def _cut_on(app: Running, http: aiohttp.ClientSession, token: str, seen: Transcript,
                  cut_after: int) -> None:
    """Ask on ``app`` and lose the connection once seq ``cut_after`` was read."""
    status = await read_stream(http, "POST", f"{app.base_url}/api/v1/chat", token, seen,
                               json={"content": "讲个长故事"}, cut_after=cut_after)
    assert status == 200
    assert seen.seqs == list(range(cut_after + 1)) and not seen.ended, seen.events


async def _resume(app: Running, http: aiohttp.ClientSession, token: str, seen: Transcript,
                  **kwargs: Any) -> None:
    mid = seen.start["message_id"]
    url = f"{app.base_url}/api/v1/messages/{mid}/events?after={seen.last_seq}"
    assert await read_stream(http, "GET", url, token, seen, **kwargs) == 200


async def _stored(app: Running, http: aiohttp.ClientSession, token: str,
                  seen: Transcript) -> dict[str, Any]:
    items = await stored_messages(http, app.base_url, token, seen.start["conversation_id"])
    found = [m for m in items if m["id"] == seen.start["message_id"]]
    assert len(found) == 1, items
    return found[0]


async def _produced(app: Running, message_id: str) -> tuple[Answer, list[dict[str, Any]]]:
    """The answer as the instance that produced it numbered its events."""
    answer = app.services.chat.answers.find(message_id, await _user_id(app, message_id))
    assert answer is not None
    return answer, [orjson.loads(line) for line in answer.lines]


def _assert_seq_rule(seen: Transcript, cut_after: int) -> None:
    """0..cut_after from the first connection, then strictly increasing, ending with done."""
    seqs = seen.seqs
    assert seqs[:cut_after + 1] == list(range(cut_after + 1)), seqs
    assert all(b > a for a, b in itertools.pairwise(seqs)), seqs
    assert seen.types[-1] == "done" and seen.types.count("done") == 1, seen.types


# -- through the relay (Redis), on PostgreSQL ----------------------------------------------


async def test_resume_live_answer_on_another_instance_through_the_relay(
    tmp_path: Path, pg: str, redis: str, http: aiohttp.ClientSession,
) -> None:
    """A cut mid-answer on A, resumed live on B: exactly A's events, every seq once."""
    async with FakeUpstream(FakeUpstreamConfig(chunks=CHUNKS, gap=0.05)) as fake, \
            _two_apps(tmp_path, fake, pg, redis) as (a, b):
        token = await a.login("relay-live")
        seen = Transcript()
        await _cut_on(a, http, token, seen, cut_after=5)
        answer, _ = await _produced(a, seen.start["message_id"])
        assert not answer.ended  # B joins while A is still producing
        await _resume(b, http, token, seen)
        await a.services.chat.wait_idle()
        _, produced = await _produced(a, answer.message_id)

        assert seen.events == produced  # every event once, in order, as A numbered it
        assert seen.seqs == list(range(len(produced)))
        assert "snapshot" not in seen.types and seen.types[-1] == "done"
        stored = await _stored(b, http, token, seen)
        assert (stored["status"], stored["content"]) == ("complete", FULL)
        assert seen.text == FULL


async def test_resume_ended_answer_on_another_instance_through_the_relay(
    tmp_path: Path, pg: str, redis: str, http: aiohttp.ClientSession,
) -> None:
    """The answer ended meanwhile: B replays the exact events after the client's seq."""
    async with FakeUpstream(FakeUpstreamConfig(chunks=CHUNKS, gap=0.01)) as fake, \
            _two_apps(tmp_path, fake, pg, redis) as (a, b):
        token = await a.login("relay-ended")
        seen = Transcript()
        await _cut_on(a, http, token, seen, cut_after=3)
        await a.services.chat.wait_idle()
        await a.services.chat.answers.relay.flush()
        await _resume(b, http, token, seen)
        answer, produced = await _produced(a, seen.start["message_id"])

        assert answer.ended and seen.events == produced
        assert seen.seqs == list(range(len(produced)))
        stored = await _stored(b, http, token, seen)
        assert (stored["status"], stored["content"]) == ("complete", FULL)
        assert seen.text == FULL


@pytest.mark.parametrize("expiry", ["ttl", "all_keys_deleted", "events_deleted"])
async def test_resume_after_the_events_expired_gets_a_snapshot_then_done(
    tmp_path: Path, pg: str, redis: str, http: aiohttp.ClientSession, expiry: str,
) -> None:
    """The exact events are gone from Redis: B serves a snapshot of the stored text, then done."""
    overrides = {"resume_ttl": 0} if expiry == "ttl" else {}
    async with FakeUpstream(FakeUpstreamConfig(chunks=CHUNKS, gap=0.01)) as fake, \
            _two_apps(tmp_path, fake, pg, redis, **overrides) as (a, b):
        token = await a.login(f"relay-{expiry}")
        seen = Transcript()
        await _cut_on(a, http, token, seen, cut_after=4)
        await a.services.chat.wait_idle()
        await a.services.chat.answers.relay.flush()
        mid = seen.start["message_id"]
        prefix = f"mpchat:answer:{mid}"
        client = Redis.from_url(redis)
        try:
            if expiry == "all_keys_deleted":
                assert await client.delete(f"{prefix}:events", f"{prefix}:owner") == 2
            elif expiry == "events_deleted":  # the owner is still known: RelayGone path
                assert await client.delete(f"{prefix}:events") == 1
            else:
                async def expired() -> bool:
                    return not await client.exists(f"{prefix}:events", f"{prefix}:owner")
                await wait_until(expired, timeout=5, what="the relay's keys expired")
        finally:
            await client.aclose()
        await _resume(b, http, token, seen)
        _, produced = await _produced(a, mid)

        assert seen.types[5:] == ["snapshot", "done"], seen.events
        _assert_seq_rule(seen, 4)
        assert seen.events[-1] == produced[-1]  # the same last event, the same seq
        assert seen.events[-2]["seq"] == produced[-2]["seq"]
        stored = await _stored(b, http, token, seen)
        assert (stored["status"], stored["content"]) == ("complete", FULL)
        assert seen.text == FULL


# -- without Redis: from storage, on SQLite and PostgreSQL ---------------------------------


async def test_resume_live_answer_from_storage_without_redis(
    tmp_path: Path, database_url: str, http: aiohttp.ClientSession,
) -> None:
    """No relay: B serves growing snapshots from storage while A produces, then the last event."""
    if database_url.startswith("sqlite"):
        database_url = f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}"  # one file, two apps
    async with FakeUpstream(FakeUpstreamConfig(chunks=CHUNKS, gap=0.1)) as fake, \
            _two_apps(tmp_path, fake, database_url, answer_save_interval=0.1) as (a, b):
        token = await a.login("storage-live")
        seen = Transcript()
        await _cut_on(a, http, token, seen, cut_after=3)
        answer, _ = await _produced(a, seen.start["message_id"])
        live_snapshots: list[str] = []

        def on_event(event: dict[str, Any]) -> None:
            if event["type"] == "snapshot" and not answer.ended:
                live_snapshots.append(event["text"])

        await _resume(b, http, token, seen, on_event=on_event)
        await a.services.chat.wait_idle()
        _, produced = await _produced(a, answer.message_id)

        # Snapshots came while A was still producing, each longer than the one before.
        assert len(live_snapshots) >= 2, seen.types
        assert all(FULL.startswith(text) for text in live_snapshots)
        assert all(len(y) > len(x) for x, y in itertools.pairwise(live_snapshots))
        assert set(seen.types[4:-1]) <= {"snapshot"}
        _assert_seq_rule(seen, 3)
        assert seen.events[-1] == produced[-1]  # A's done, under A's seq
        stored = await _stored(b, http, token, seen)
        assert (stored["status"], stored["content"]) == ("complete", FULL)
        assert seen.text == FULL


# -- not found, bad input ------------------------------------------------------------------


async def test_resume_refuses_other_users_unknown_ids_and_bad_after(
    tmp_path: Path, pg: str, redis: str, http: aiohttp.ClientSession,
) -> None:
    """Another user's id and an unknown one: the same 404 bytes everywhere; bad after: 400."""
    async with FakeUpstream(FakeUpstreamConfig(chunks=3)) as fake, \
            _two_apps(tmp_path, fake, pg, redis) as (a, b):
        alice, mallory = await a.login("alice-r"), await a.login("mallory-r")
        seen = Transcript()
        assert await read_stream(http, "POST", f"{a.base_url}/api/v1/chat", alice, seen,
                                 json={"content": "秘密"}) == 200
        mid = seen.start["message_id"]
        await a.services.chat.answers.relay.flush()

        async def body(app: Running, message_id: str, **params: str) -> tuple[int, bytes]:
            async with http.get(f"{app.base_url}/api/v1/messages/{message_id}/events",
                                params=params,
                                headers={"Authorization": f"Bearer {mallory}"}) as r:
                return r.status, await r.read()

        unknown = "0" * 32
        answers = await asyncio.gather(
            body(a, mid), body(b, mid), body(a, unknown), body(b, unknown),
            body(b, mid, after="0"), body(b, unknown, after="3"))
        assert {status for status, _ in answers} == {404}
        assert len({raw for _, raw in answers}) == 1, answers
        error = orjson.loads(answers[0][1].splitlines()[0])
        assert error["error"]["code"] == "not_found"

        for after in ("abc", "²", "-5", "1.5", ""):
            async with http.get(f"{b.base_url}/api/v1/messages/{mid}/events",
                                params={"after": after},
                                headers={"Authorization": f"Bearer {alice}"}) as r:
                assert r.status == 400, (after, await r.text())
                line = (await r.read()).splitlines()[0]
                assert orjson.loads(line)["error"]["code"] == "invalid_request", after


# -- a request sent again (Idempotency-Key) on another instance ----------------------------


async def _post_keyed(app: Running, http: aiohttp.ClientSession, token: str,
                      key: str) -> list[dict[str, Any]]:
    async with http.post(f"{app.base_url}/api/v1/chat", json={"content": "讲个长故事"},
                         headers={"Authorization": f"Bearer {token}",
                                  "Idempotency-Key": key}) as r:
        assert r.status == 200, await r.text()
        return [orjson.loads(line) for line in (await r.read()).splitlines() if line]


async def test_a_retry_on_another_instance_follows_the_first_copys_answer(
    tmp_path: Path, pg: str, redis: str, http: aiohttp.ClientSession,
) -> None:
    """The phone's first copy reached A, which answers it; its retry lands on B, which finds
    the question stored under the key and follows A's answer through the relay."""
    async with FakeUpstream(FakeUpstreamConfig(chunks=CHUNKS, gap=0.05)) as fake, \
            _two_apps(tmp_path, fake, pg, redis) as (a, b):
        token = await a.login("keyed")
        async with http.post(f"{a.base_url}/api/v1/chat", json={"content": "讲个长故事"},
                             headers={"Authorization": f"Bearer {token}",
                                      "Idempotency-Key": "phone-1"}) as r:
            start = orjson.loads(await r.content.readline())
            r.close()  # lost before the phone saw anything of it
        answer, _ = await _produced(a, start["message_id"])
        assert not answer.ended
        events = await _post_keyed(b, http, token, "phone-1")
        await a.services.chat.wait_idle()
        _, produced = await _produced(a, start["message_id"])
        assert events == produced  # A's events, every one once, from its start
        assert fake.stats.requests == 1
        items = await stored_messages(http, b.base_url, token, start["conversation_id"])
        assert [(m["role"], m["status"], m["content"]) for m in items] == [
            ("user", "complete", "讲个长故事"), ("assistant", "complete", FULL)]


async def test_two_copies_at_once_on_two_instances_make_one_answer(
    tmp_path: Path, pg: str, redis: str, http: aiohttp.ClientSession,
) -> None:
    async with FakeUpstream(FakeUpstreamConfig(chunks=CHUNKS, gap=0.01)) as fake, \
            _two_apps(tmp_path, fake, pg, redis) as (a, b):
        token = await a.login("keyed-twice")
        first, second = await asyncio.gather(_post_keyed(a, http, token, "phone-2"),
                                             _post_keyed(b, http, token, "phone-2"))
        assert first[0]["message_id"] == second[0]["message_id"]
        assert [e["seq"] for e in first] == [e["seq"] for e in second]
        assert shown_text(first) == shown_text(second) == FULL
        await a.services.chat.wait_idle()
        await b.services.chat.wait_idle()
        assert fake.stats.requests == 1
        items = await stored_messages(http, a.base_url, token, first[0]["conversation_id"])
        assert [(m["role"], m["status"]) for m in items] == [
            ("user", "complete"), ("assistant", "complete")]
