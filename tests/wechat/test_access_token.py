"""AccessTokenProvider: cache, single-flight, Redis sharing, invalidation, retries."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from redis.asyncio import Redis

from mpchat.errors import ServiceUnavailable
from mpchat.fakes.wechat import FakeWeChat
from mpchat.providers.retry import RetryPolicy
from mpchat.wechat import AccessTokenProvider, AppCredentials
from tests.utils import wait_until
from tests.wechat.conftest import Clock, HangingRedis


@pytest.fixture
async def provider_factory(
    http: aiohttp.ClientSession, fake: FakeWeChat, appid, secret, fast_backoff
):
    made: list[AccessTokenProvider] = []

    def make(**kw: object) -> AccessTokenProvider:
        options: dict[str, object] = {"backoff": fast_backoff}
        options.update(kw)
        base_url = str(options.pop("base_url", fake.base_url))
        provider = AccessTokenProvider(http, AppCredentials(appid, secret, base_url),
                                       **options)  # type: ignore[arg-type]
        made.append(provider)
        return provider

    yield make
    for provider in made:
        await provider.aclose()


async def test_token_is_cached(provider_factory, fake: FakeWeChat) -> None:
    tokens = provider_factory()
    assert tokens.state == "empty"
    first = await tokens.get()
    assert await tokens.get() == first
    assert fake.stats.stable_token_calls == 1
    assert tokens.state == "fresh"


async def test_renewed_before_expiry_by_one_concurrent_request(
    provider_factory, fake: FakeWeChat
) -> None:
    clock = Clock()
    tokens = provider_factory(clock=clock, refresh_margin=300)
    fake.latency["stable_token"] = 0.05  # keep the renewal in flight while others arrive
    await tokens.get()
    clock.now += 7200 - 299  # inside the 5-minute margin, not yet expired
    assert tokens.state == "due"
    results = await asyncio.gather(*(tokens.get() for _ in range(10)))
    assert len(set(results)) == 1
    assert fake.stats.stable_token_calls == 2
    assert fake.stats.max_in_flight["stable_token"] == 1


async def test_caller_leaving_does_not_cancel_the_shared_renewal(
    provider_factory, fake: FakeWeChat
) -> None:
    tokens = provider_factory()
    fake.latency["stable_token"] = 0.1
    impatient = asyncio.create_task(tokens.get())
    patient = asyncio.create_task(tokens.get())
    # Both have joined the renewal once WeChat is being asked (the first step of each ran).
    await wait_until(lambda: fake.stats.in_flight["stable_token"] == 1, timeout=5)
    impatient.cancel()
    assert await patient
    assert fake.stats.stable_token_calls == 1


async def test_invalidate_fetches_without_force_when_wechat_has_a_new_token(
    provider_factory, fake: FakeWeChat
) -> None:
    tokens = provider_factory()
    old = await tokens.get()
    fake.expire_token(old)
    await tokens.invalidate(old)
    new = await tokens.get()
    assert new != old
    assert fake.stats.stable_token_calls == 2
    assert fake.stats.force_refreshes == 0


async def test_force_refresh_only_when_the_same_stale_token_comes_back(
    provider_factory, fake: FakeWeChat
) -> None:
    tokens = provider_factory()
    old = await tokens.get()
    fake.revoke_token(old)  # WeChat rejects it but stable_token still hands it out
    await tokens.invalidate(old)
    new = await tokens.get()
    assert new != old
    assert fake.stats.stable_token_calls == 3  # cached -> same stale one -> forced
    assert fake.stats.force_refreshes == 1


async def test_invalidating_an_old_token_keeps_the_current_one(
    provider_factory, fake: FakeWeChat
) -> None:
    tokens = provider_factory()
    current = await tokens.get()
    await tokens.invalidate("some-older-token")
    assert await tokens.get() == current
    assert fake.stats.stable_token_calls == 1


async def test_system_busy_is_retried_with_backoff(provider_factory, fake: FakeWeChat) -> None:
    tokens = provider_factory()
    fake.fail("stable_token", 2, errcode=-1)
    assert await tokens.get()
    assert fake.stats.stable_token_calls == 3


async def test_retries_are_bounded(provider_factory, fake: FakeWeChat) -> None:
    tokens = provider_factory(backoff=RetryPolicy(attempts=2, initial=0.01))
    fake.fail("stable_token", 5, errcode=-1)
    with pytest.raises(ServiceUnavailable):
        await tokens.get()
    assert fake.stats.stable_token_calls == 2


async def test_configuration_errors_are_not_retried(
    http, fake: FakeWeChat, appid, fast_backoff, caplog
) -> None:
    tokens = AccessTokenProvider(
        http, AppCredentials(appid, "bad-secret", fake.base_url), backoff=fast_backoff
    )
    with pytest.raises(ServiceUnavailable):
        await tokens.get()
    assert fake.stats.stable_token_calls == 1
    assert "errcode=40125" in caplog.text and "bad-secret" not in caplog.text


async def test_unreachable_wechat(http, closed_url, appid, secret, fast_backoff) -> None:
    tokens = AccessTokenProvider(
        http, AppCredentials(appid, secret, closed_url), backoff=fast_backoff
    )
    with pytest.raises(ServiceUnavailable):
        await tokens.get()
    assert tokens.requests == fast_backoff.attempts


async def test_closed_provider_refuses(provider_factory) -> None:
    tokens = provider_factory()
    await tokens.aclose()
    assert tokens.state == "closed"
    with pytest.raises(RuntimeError):
        await tokens.get()


async def test_two_instances_share_one_renewal_through_redis(
    provider_factory, fake: FakeWeChat, redis: Redis, redis_prefix: str
) -> None:
    fake.latency["stable_token"] = 0.1
    first = provider_factory(redis=redis, key_prefix=redis_prefix, poll_interval=0.01)
    second = provider_factory(redis=redis, key_prefix=redis_prefix, poll_interval=0.01)
    results = await asyncio.gather(*(p.get() for p in (first, second) for _ in range(5)))
    assert len(set(results)) == 1
    assert fake.stats.stable_token_calls == 1
    # A third instance starting later reads the shared token instead of fetching.
    third = provider_factory(redis=redis, key_prefix=redis_prefix)
    assert await third.get() == results[0]
    assert fake.stats.stable_token_calls == 1


async def test_invalidation_is_shared_through_redis(
    provider_factory, fake: FakeWeChat, redis: Redis, redis_prefix: str
) -> None:
    first = provider_factory(redis=redis, key_prefix=redis_prefix)
    second = provider_factory(redis=redis, key_prefix=redis_prefix)
    old = await first.get()
    fake.revoke_token(old)
    await first.invalidate(old)
    # The other instance renews; it learns from Redis that `old` is stale and forces.
    new = await second.get()
    assert new != old
    assert fake.stats.force_refreshes == 1
    assert await first.get() == new  # read from Redis, no further call
    assert fake.stats.stable_token_calls == 3


async def test_redis_down_falls_back_to_memory(provider_factory, fake: FakeWeChat) -> None:
    broken = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    changes: list[bool] = []
    try:
        tokens = provider_factory(redis=broken, on_degraded=changes.append)
        token = await tokens.get()
        assert token == fake.current_token
        await tokens.invalidate(token)  # must not raise either
        assert tokens.degraded and changes == [True]  # reported once, for the gauge
    finally:
        await broken.aclose()


async def test_a_hung_redis_costs_one_timeout_not_one_per_renewal(
    provider_factory, fake: FakeWeChat, hanging_redis: HangingRedis
) -> None:
    tokens = provider_factory(redis=hanging_redis.client)
    first = await tokens.get()  # waits out the guard's timeout once, then renews alone
    assert tokens.degraded and first == fake.current_token
    sent = hanging_redis.bytes_received
    assert sent > 0  # it was asked, once
    fake.expire_token(first)
    await tokens.invalidate(first)
    assert await tokens.get() != first
    # Within the probe interval Redis is not asked again: nothing more reached it.
    assert hanging_redis.bytes_received == sent
    assert fake.stats.stable_token_calls == 2
