"""Traffic control end to end: shared limits across instances, the queue, failover, Redis loss."""

from __future__ import annotations

import asyncio
import itertools
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from mpchat.fakes.upstream import FakeUpstream
from mpchat.settings import Settings
from mpchat.storage.crypto import generate_key_spec
from tests.integration.support import (
    ChatResult,
    HeldUpstream,
    chat,
    child_base_env,
    login,
    mpchat_argv,
    run_command,
    spawn_fleet,
    wait_until,
)
from tests.limits.limits_support import PrivateRedis
from tests.utils import Running, running_app


def _settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": tmp_path / "data",
        "login_rate_limit": "100000/minute",
        "rate_limit": "100000/minute",
        "upstream_retry_initial": 0.01,
        "upstream_retry_max_wait": 0.05,
        "log_level": "WARNING",
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session


async def test_three_instances_share_one_users_limit(
    tmp_path: Path, redis_url: str, pg_url: str, fake_upstream: FakeUpstream,
    http: aiohttp.ClientSession,
) -> None:
    env = {
        "MPCHAT_ENV": "development",
        "MPCHAT_DATABASE_URL": pg_url,
        "MPCHAT_REDIS_URL": redis_url,
        "MPCHAT_UPSTREAM_BASE_URL": fake_upstream.base_url,
        "MPCHAT_RATE_LIMIT": "5/minute",
        "MPCHAT_LOGIN_RATE_LIMIT": "100000/minute",
        "MPCHAT_SECRET_KEY": "integration-secret-" + "x" * 32,
        "MPCHAT_ENCRYPTION_KEYS": generate_key_spec("it1"),
        "MPCHAT_LOG_LEVEL": "WARNING",
    }
    # Production-like: one migration first, then instances that find the schema at head.
    await run_command(mpchat_argv("migrate"), env={**child_base_env(), **env,
                                                   "MPCHAT_DATA_DIR": str(tmp_path / "m")},
                      log_path=tmp_path / "migrate.log")
    async with spawn_fleet(3, env, tmp_path) as fleet:
        urls = [instance.base_url for instance in fleet]
        token = await login(http, urls[0], "one-busy-user")  # valid on every instance
        results = await asyncio.gather(
            *(chat(http, urls[i % 3], token, f"问题 {i}") for i in range(30)))

    accepted = [r for r in results if r.status == 200]
    refused = [r for r in results if r.status == 429]
    assert len(accepted) == 5, [r.status for r in results]
    assert len(refused) == 25, [r.status for r in results]
    assert all(r.completed for r in accepted), [r.types for r in accepted]
    for r in refused:
        assert r.retry_after_header is not None and re.fullmatch(r"\d+", r.retry_after_header)
        assert 1 <= int(r.retry_after_header) <= 60
        assert r.error["code"] == "rate_limited"
        assert 1 <= r.error["retry_after"] <= 60
    assert fake_upstream.stats.requests == 5  # refused chats never reached the provider


async def _login_many(app: Running, codes: list[str]) -> list[str]:
    limit = asyncio.Semaphore(20)

    async def one(code: str) -> str:
        async with limit:
            return await login(app.http, app.base_url, code)

    return await asyncio.gather(*(one(code) for code in codes))


async def _queue_run(
    tmp_path: Path, redis_url: str, pg_url: str, *, queue_size: int, users: int = 200
) -> tuple[HeldUpstream, list[ChatResult], dict[int, list[int]]]:
    """``users`` chats over two instances sharing Redis, answers held until all are placed."""
    async with HeldUpstream() as fake:
        settings = _settings(
            tmp_path, database_url=pg_url, redis_url=redis_url,
            upstream_base_url=fake.base_url, upstream_max_concurrency=8,
            queue_size=queue_size, queue_timeout=30,
        )
        async with running_app(settings) as a, running_app(settings) as b:
            apps = [a, b]
            tokens = await _login_many(a, [f"crowd-{i}" for i in range(users)])
            seen: dict[int, list[int]] = {i: [] for i in range(users)}

            def recorder(i: int) -> Callable[[dict[str, Any]], None]:
                def on_event(event: dict[str, Any]) -> None:
                    if event.get("type") == "queued":
                        seen[i].append(int(event["position"]))
                return on_event

            async def one(i: int) -> ChatResult:
                app = apps[i % 2]
                return await chat(app.http, app.base_url, tokens[i], f"第{i}个问题",
                                  on_event=recorder(i))

            tasks = [asyncio.create_task(one(i)) for i in range(users)]

            def placed() -> bool:
                # Every request is either in flight at the provider, waiting in a queue
                # (its stream has said so), or finished (refused).
                waiting = sum(1 for positions in seen.values() if positions)
                done = sum(1 for t in tasks if t.done())
                return fake.stats.in_flight + waiting + done == users

            await wait_until(placed, within=20, what="every chat in flight, queued or refused")
            refused_before_release = sum(1 for t in tasks if t.done())
            fake.release()
            results = await asyncio.gather(*tasks)
        assert refused_before_release == sum(1 for r in results if r.status != 200)
        return fake, results, seen


async def test_crowd_waits_in_order_within_the_concurrency_bound(
    tmp_path: Path, redis_url: str, pg_url: str
) -> None:
    fake, results, seen = await _queue_run(tmp_path, redis_url, pg_url, queue_size=256)
    assert all(r.completed for r in results), {tuple(r.types) for r in results if not r.completed}
    assert fake.stats.max_in_flight == 8  # the bound holds across both instances
    assert fake.stats.requests == 200
    queued = [positions for positions in seen.values() if positions]
    assert len(queued) == 200 - 8
    for positions in queued:
        # Strictly falling: a position is reported when it changes, and it never rises.
        assert all(a > b for a, b in itertools.pairwise(positions)), positions
    assert max(len(p) for p in queued) > 50  # positions really fell, one step at a time


@pytest.mark.timing  # busy within 5 s under 200 clients: run alone, not beside workers
async def test_full_queue_answers_busy_before_start(
    tmp_path: Path, redis_url: str, pg_url: str
) -> None:
    fake, results, _ = await _queue_run(tmp_path, redis_url, pg_url, queue_size=50)
    accepted = [r for r in results if r.status == 200]
    busy = [r for r in results if r.status != 200]
    # 8 slots fleet-wide, plus a queue of 50 in each of the two instances.
    assert len(accepted) == 8 + 2 * 50
    assert all(r.completed for r in accepted), {tuple(r.types) for r in accepted}
    assert fake.stats.max_in_flight == 8
    assert fake.stats.requests == len(accepted)
    for r in busy:
        assert r.status == 503
        assert r.types == ["error"] or "start" not in r.types  # refused before `start`
        assert r.error["code"] == "busy"
        assert r.error["retry_after"] >= 1
        assert r.elapsed < 5  # answered while every provider answer was still held


async def test_429_storm_moves_traffic_to_the_secondary_until_the_pause_ends(
    tmp_path: Path, redis_url: str
) -> None:
    async with HeldUpstream() as primary, FakeUpstream() as secondary:
        config = tmp_path / "providers.toml"
        config.write_text(
            f'[[providers]]\nname = "primary"\nbase_url = "{primary.base_url}"\n'
            f'models = ["fake-model"]\npriority = 1\n\n'
            f'[[providers]]\nname = "secondary"\nbase_url = "{secondary.base_url}"\n'
            f'models = ["fake-model"]\npriority = 2\n\n'
            f'[aliases]\ndefault = "fake-model"\n'
        )
        # More 429s than the breaker's threshold: the pause, not the breaker, must decide.
        storm = 10
        primary.script = [{"status": 429, "retry_after": 2} for _ in range(storm)]
        settings = _settings(tmp_path, redis_url=redis_url, config=config)
        async with running_app(settings) as app:
            tokens = await _login_many(app, [f"storm-{i}" for i in range(storm)])
            loop = asyncio.get_running_loop()
            started = loop.time()
            sent = [asyncio.create_task(chat(app.http, app.base_url, token))
                    for token in tokens]
            # All of them at the primary at once, then all refused together: a real storm.
            await wait_until(lambda: primary.stats.in_flight == storm, within=10,
                             what="the storm reaching the primary")
            primary.release()
            first = await asyncio.gather(*sent)
            assert all(r.completed for r in first), [r.types for r in first]
            assert secondary.stats.completed == storm  # every one failed over, none failed
            assert primary.stats.requests == storm
            primary.script.clear()  # the storm is over; only the pause keeps traffic away

            later: list[ChatResult] = []
            back_at: float | None = None

            async def primary_back() -> bool:
                nonlocal back_at
                later.append(await chat(app.http, app.base_url, tokens[len(later) % storm]))
                if primary.stats.completed > 0:
                    back_at = loop.time()
                    return True
                return False

            await wait_until(primary_back, within=10, what="the primary answering again",
                             interval=0.05)
        assert all(r.completed for r in later), [r.types for r in later if not r.completed]
        assert back_at is not None
        # Not before the provider's Retry-After has run out, and not much after it.
        assert 1.8 <= back_at - started <= 6, back_at - started
        assert secondary.stats.completed >= storm + 1  # traffic went there meanwhile


async def _metric(app: Running, name: str) -> float | None:
    async with app.http.get(f"{app.base_url}/metrics") as r:
        text = await r.text()
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


async def test_redis_outage_under_load_degrades_and_recovers(
    tmp_path: Path, fake_upstream: FakeUpstream
) -> None:
    redis = PrivateRedis(tmp_path)
    await redis.start()
    try:
        settings = _settings(tmp_path, redis_url=redis.url,
                             upstream_base_url=fake_upstream.base_url,
                             rate_limit="100000/minute", upstream_max_concurrency=4)
        async with running_app(settings) as app:
            tokens = await _login_many(app, [f"load-{i}" for i in range(6)])
            results: list[ChatResult] = []
            stop = asyncio.Event()

            async def user(token: str) -> None:
                while not stop.is_set():
                    results.append(await chat(app.http, app.base_url, token))

            async def chats_more_than(n: int) -> bool:
                return len(results) > n

            async def gauge_is(value: float) -> bool:
                return await _metric(app, "mpchat_shared_state_degraded") == value

            load = [asyncio.create_task(user(token)) for token in tokens]
            try:
                await wait_until(lambda: chats_more_than(20), within=10, what="load running")
                assert await gauge_is(0)
                await redis.stop()
                await wait_until(lambda: gauge_is(1), within=10, what="degradation reported")
                during = len(results)
                await wait_until(lambda: chats_more_than(during + 20), within=10,
                                 what="chats served while Redis is down")
                await redis.start()
                await wait_until(lambda: gauge_is(0), within=15, what="shared state again")
                after = len(results)
                await wait_until(lambda: chats_more_than(after + 20), within=10,
                                 what="chats served after Redis came back")
            finally:
                stop.set()
                await asyncio.gather(*load)
        assert [r.status for r in results if r.status != 200] == []  # no 5xx, no refusals
        assert all(r.completed for r in results), {tuple(r.types) for r in results}

        # The limit lives in the (restarted, empty) Redis again: the counters are shared.
        from redis.asyncio import Redis

        client = Redis.from_url(redis.url)
        try:
            keys = [key async for key in client.scan_iter(match="mpchat:rl:*")]
        finally:
            await client.aclose()
        assert keys
    finally:
        await redis.kill()
