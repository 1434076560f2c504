"""An instance killed (-9) mid-answer: the next instance settles the answer, never ``streaming``.

A real `mpchat serve` process answers from a slow fake provider (in this process), saving
the text so far every 0.1 s under a 1 s lease. It is killed; another one starts on the same
database (SQLite in a data dir both share, or PostgreSQL) and must settle what the first
left: ``truncated`` with the stored text, or, when nothing was said, no answer at all and
the question ``unanswered``. The next turn then sends the model a well-formed context.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from mpchat.estimate import estimate_tokens
from mpchat.fakes.upstream import FakeUpstream, FakeUpstreamConfig
from tests.conftest import reset_postgres
from tests.integration.support import (
    Instance,
    Transcript,
    login,
    read_stream,
    start_instance,
    stored_messages,
    wait_until,
)
from tests.limits.limits_support import PrivateRedis

CHUNKS = 200
FULL = "".join(f"片段{i} " for i in range(CHUNKS))  # 10 s at the fake's 50 ms pace


@pytest.fixture(params=["sqlite", "postgresql", "postgresql+redis"])
def backend(request: pytest.FixtureRequest) -> Iterator[tuple[str | None, bool]]:
    """(database URL or None for the data dir's SQLite file, whether Redis is used)."""
    if request.param == "sqlite":
        yield None, False  # the default: mpchat.db in MPCHAT_DATA_DIR, which both runs share
        return
    url = request.getfixturevalue("private_pg_url")
    asyncio.run(reset_postgres(url))
    yield url, request.param.endswith("+redis")


@pytest.fixture
async def db_env(
    backend: tuple[str | None, bool], tmp_path: Path
) -> AsyncIterator[dict[str, str]]:
    """The settings both runs share to reach their data (and a Redis of this test's own)."""
    url, with_redis = backend
    env = {"MPCHAT_DATABASE_URL": url} if url else {}
    if not with_redis:
        yield env
        return
    redis = PrivateRedis(tmp_path)
    await redis.start()
    try:
        yield {**env, "MPCHAT_REDIS_URL": redis.url}
    finally:
        await redis.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session


# Quotas on: an answer's reservation must be settled by the instance that recovers it.
FREE = 100_000
QUOTA = f"""
[quota]
free_units = {FREE}
max_completion_tokens = 4000
[quota.prices]
default = {{ per_1k_completion = 1000 }}
"""


def _env(fake: FakeUpstream, db_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    config = tmp_path / "quota.toml"
    config.write_text(QUOTA, encoding="utf-8")
    return {
        "MPCHAT_ENV": "development",
        "MPCHAT_CONFIG": str(config),
        "MPCHAT_UPSTREAM_BASE_URL": fake.base_url,
        "MPCHAT_ANSWER_SAVE_INTERVAL": "0.1",
        "MPCHAT_ANSWER_LEASE": "1",
        "MPCHAT_RATE_LIMIT": "1000/minute",
        "MPCHAT_LOGIN_RATE_LIMIT": "1000/minute",
        "MPCHAT_LOG_LEVEL": "WARNING",
        **db_env,
    }


@contextlib.asynccontextmanager
async def _instance(name: str, env: dict[str, str], tmp_path: Path) -> AsyncIterator[Instance]:
    instance = await start_instance(name, env, tmp_path, data_dir=tmp_path / "data")
    try:
        yield instance
    finally:
        await instance.stop()


async def _kill(instance: Instance, reader: asyncio.Task[int]) -> None:
    """``kill -9``: no shutdown, no settling; the client's stream just breaks."""
    instance.proc.kill()
    await instance.proc.wait()
    with contextlib.suppress(aiohttp.ClientError):
        await reader


async def _row(http: aiohttp.ClientSession, instance: Instance, token: str, cid: str,
               role: str) -> dict[str, Any] | None:
    items = await stored_messages(http, instance.base_url, token, cid)
    rows = [m for m in items if m["role"] == role]
    assert len(rows) <= 1, items
    return rows[0] if rows else None


async def _free_left(http: aiohttp.ClientSession, instance: Instance, token: str) -> int:
    async with http.get(f"{instance.base_url}/api/v1/me",
                        headers={"Authorization": f"Bearer {token}"}) as r:
        return int((await r.json())["quota"]["free_remaining"])


async def _charged(http: aiohttp.ClientSession, instance: Instance, token: str,
                   units: int) -> None:
    """Until the recovered answer's reservation is settled at ``units`` (nothing else held)."""
    async def settled() -> bool:
        return await _free_left(http, instance, token) == FREE - units

    await wait_until(settled, within=15, what=f"the reservation settled at {units} units")


async def _follow(http: aiohttp.ClientSession, instance: Instance, token: str, mid: str,
                  after: int) -> Transcript:
    seen = Transcript()
    url = f"{instance.base_url}/api/v1/messages/{mid}/events?after={after}"
    async with asyncio.timeout(15):
        assert await read_stream(http, "GET", url, token, seen) == 200
    return seen


def _assert_alternating(sent: list[dict[str, Any]]) -> None:
    roles = [m["role"] for m in sent]
    assert roles[0] == "system" and roles[-1] == "user", roles
    assert all(a != b for a, b in itertools.pairwise(roles[1:])), roles


async def test_kill_mid_answer_leaves_a_truncated_answer_and_a_sound_next_turn(
    tmp_path: Path, db_env: dict[str, str], http: aiohttp.ClientSession,
) -> None:
    """Killed after text was stored: truncated with it, resumable, the next turn well-formed."""
    async with FakeUpstream(FakeUpstreamConfig(chunks=CHUNKS, gap=0.05)) as fake:
        env = _env(fake, db_env, tmp_path)
        seen = Transcript()
        async with _instance("first", env, tmp_path) as first:
            token = await login(http, first.base_url, "crash-mid")
            reader = asyncio.create_task(read_stream(
                http, "POST", f"{first.base_url}/api/v1/chat", token, seen,
                json={"content": "第一个问题"}))
            await wait_until(lambda: bool(seen.events), within=10, what="start")
            cid, mid = seen.start["conversation_id"], seen.start["message_id"]
            stored_before = ""

            async def has_text() -> bool:
                nonlocal stored_before
                row = await _row(http, first, token, cid, "assistant")
                assert row is not None and row["status"] == "streaming", row
                stored_before = row["content"]
                return len(stored_before) >= 20

            await wait_until(has_text, within=10, what="the answer's text stored")
            await _kill(first, reader)
        assert not seen.ended and seen.text and FULL.startswith(seen.text)

        async with _instance("second", env, tmp_path) as second:
            async def settled() -> bool:
                row = await _row(http, second, token, cid, "assistant")
                return row is not None and row["status"] != "streaming"

            await wait_until(settled, within=15, what="the orphaned answer settled")
            items = await stored_messages(http, second.base_url, token, cid)
            assert [(m["role"], m["status"]) for m in items] == [
                ("user", "complete"), ("assistant", "truncated")]
            assert items[0]["content"] == "第一个问题"
            truncated = items[1]["content"]
            assert truncated.startswith(stored_before) and FULL.startswith(truncated)
            assert len(truncated) < len(FULL)
            # Its reservation (4,000 units) settled at what the stored text is worth.
            await _charged(http, second, token, estimate_tokens(truncated))

            # Resumed from scratch: the stored text (after what the relay still holds, with
            # Redis), then done "interrupted"; never a wait for an end that cannot come.
            whole = await _follow(http, second, token, mid, after=-1)
            if "MPCHAT_REDIS_URL" not in env:
                assert whole.types == ["snapshot", "done"], whole.events
            assert whole.types[-1] == "done", whole.events
            assert all(b > a for a, b in itertools.pairwise(whole.seqs)), whole.seqs
            assert whole.text == truncated
            assert whole.events[-1]["finish_reason"] == "interrupted"
            last = whole.events[-1]["seq"]
            # The client that watched the first instance die: the same end, after its seq.
            for after in (seen.last_seq, last, last + 3):
                resumed = await _follow(http, second, token, mid, after=after)
                assert resumed.ended, (after, last, resumed.events)
                assert resumed.seqs[0] > after, (after, resumed.events)
                assert resumed.events[-1]["finish_reason"] == "interrupted"
                shown = Transcript(text=seen.text)
                for event in resumed.events:
                    shown.feed(event)
                assert shown.text == truncated, (after, last, resumed.events)

            fake.stats.received.clear()
            fake.script = [{"text": ["第二个回答"]}]
            result = Transcript()
            assert await read_stream(http, "POST", f"{second.base_url}/api/v1/chat", token,
                                     result, json={"content": "第二个问题",
                                                   "conversation_id": cid}) == 200
            assert result.types[-1] == "done", result.events
        sent = fake.stats.received[-1]
        _assert_alternating(sent)
        assert [(m["role"], m["content"]) for m in sent[1:]] == [
            ("user", "第一个问题"), ("assistant", truncated), ("user", "第二个问题")]


async def test_kill_before_any_text_leaves_the_question_unanswered(
    tmp_path: Path, db_env: dict[str, str], http: aiohttp.ClientSession,
) -> None:
    """Killed while the provider had said nothing: no answer row, the question unanswered."""
    async with FakeUpstream(FakeUpstreamConfig(chunks=3)) as fake:
        env = _env(fake, db_env, tmp_path)
        fake.script = [{"hang": True}]
        seen = Transcript()
        async with _instance("first", env, tmp_path) as first:
            token = await login(http, first.base_url, "crash-early")
            reader = asyncio.create_task(read_stream(
                http, "POST", f"{first.base_url}/api/v1/chat", token, seen,
                json={"content": "没人回答的问题"}))
            await fake.wait_for_requests(1)
            # start leaves after 2 s without a word from the provider: then we know the ids.
            await wait_until(lambda: bool(seen.events), within=10, what="start")
            cid, mid = seen.start["conversation_id"], seen.start["message_id"]
            row = await _row(http, first, token, cid, "assistant")
            assert row is not None and (row["status"], row["content"]) == ("streaming", "")
            await _kill(first, reader)
        assert seen.types == ["start"]

        async with _instance("second", env, tmp_path) as second:
            async def dropped() -> bool:
                return await _row(http, second, token, cid, "assistant") is None

            await wait_until(dropped, within=15, what="the empty orphaned answer dropped")
            items = await stored_messages(http, second.base_url, token, cid)
            assert [(m["role"], m["status"], m["content"]) for m in items] == [
                ("user", "unanswered", "没人回答的问题")]
            await _charged(http, second, token, 0)  # nothing said: nothing due
            async with asyncio.timeout(15), http.get(
                    f"{second.base_url}/api/v1/messages/{mid}/events?after=0",
                    headers={"Authorization": f"Bearer {token}"}) as r:
                assert r.status in (200, 404)  # 200 when the relay still knew its owner
                body = await r.text()
                assert "not_found" in body and '"done"' not in body, body

            fake.stats.received.clear()
            result = Transcript()
            assert await read_stream(http, "POST", f"{second.base_url}/api/v1/chat", token,
                                     result, json={"content": "新的问题",
                                                   "conversation_id": cid}) == 200
            assert result.types[-1] == "done", result.events
            items = await stored_messages(http, second.base_url, token, cid)
            assert [(m["role"], m["status"]) for m in items] == [
                ("user", "unanswered"), ("user", "complete"), ("assistant", "complete")]
        sent = fake.stats.received[-1]
        _assert_alternating(sent)
        assert [(m["role"], m["content"]) for m in sent[1:]] == [("user", "新的问题")]
