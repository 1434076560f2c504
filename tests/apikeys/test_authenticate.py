"""authenticate: the cache (positive, negative, bounded, invalidated) and hostile input."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from mpchat.apikeys import ApiKeys
from mpchat.errors import InvalidApiKey
from mpchat.storage import api_keys as store
from tests.apikeys.conftest import Clocks, make_keys

UNKNOWN = "sk-mp-" + "A" * 43


@pytest.fixture
def lookups(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Counts the database lookups ``authenticate`` makes."""
    seen: list[str] = []
    real = store.find_by_hash

    async def counting(engine: Any, *, secret_hash: str) -> Any:
        seen.append(secret_hash)
        return await real(engine, secret_hash=secret_hash)

    monkeypatch.setattr(store, "find_by_hash", counting)
    yield seen


async def test_a_found_key_is_cached_for_the_ttl(
    keys: ApiKeys, clocks: Clocks, lookups: list[str]
) -> None:
    _, secret = await keys.create(name="hot")
    for _ in range(5):
        await keys.authenticate(secret)
    assert len(lookups) == 1
    clocks.advance(4.9)
    await keys.authenticate(secret)
    assert len(lookups) == 1
    clocks.advance(0.1)
    await keys.authenticate(secret)
    assert len(lookups) == 2


async def test_an_unknown_secret_is_cached_too(
    keys: ApiKeys, clocks: Clocks, lookups: list[str]
) -> None:
    for _ in range(3):
        with pytest.raises(InvalidApiKey):
            await keys.authenticate(UNKNOWN)
    assert len(lookups) == 1
    clocks.advance(5)
    with pytest.raises(InvalidApiKey):
        await keys.authenticate(UNKNOWN)
    assert len(lookups) == 2


async def test_revocation_elsewhere_is_seen_within_the_ttl(
    engine: Any, keys: ApiKeys, clocks: Clocks
) -> None:
    other = make_keys(engine, clocks)  # another instance, same database
    key, secret = await keys.create(name="fleet")
    assert (await other.authenticate(secret)).id == key.id
    await keys.revoke(key.id)
    with pytest.raises(InvalidApiKey):
        await keys.authenticate(secret)  # this instance: at once
    clocks.advance(4.9)
    assert (await other.authenticate(secret)).id == key.id  # the other: its cache still holds
    clocks.advance(0.1)
    with pytest.raises(InvalidApiKey, match="吊销"):
        await other.authenticate(secret)


async def test_rotation_elsewhere(engine: Any, keys: ApiKeys, clocks: Clocks) -> None:
    other = make_keys(engine, clocks)
    key, old = await keys.create(name="rotated")
    await other.authenticate(old)
    _, new = await keys.rotate(key.id)
    assert (await other.authenticate(new)).id == key.id  # the new secret works everywhere at once
    assert (await other.authenticate(old)).id == key.id  # the old one until the ttl
    clocks.advance(5)
    with pytest.raises(InvalidApiKey):
        await other.authenticate(old)


async def test_a_ttl_of_zero_caches_nothing(
    engine: Any, clocks: Clocks, lookups: list[str]
) -> None:
    keys = make_keys(engine, clocks, cache_ttl=0)
    _, secret = await keys.create(name="uncached")
    await keys.authenticate(secret)
    await keys.authenticate(secret)
    assert len(lookups) == 2


async def test_the_cache_is_bounded_and_keeps_what_is_used(
    engine: Any, clocks: Clocks, lookups: list[str]
) -> None:
    keys = make_keys(engine, clocks, cache_size=3)
    _, secret = await keys.create(name="kept")
    await keys.authenticate(secret)
    for i in range(10):
        with pytest.raises(InvalidApiKey):
            await keys.authenticate(f"sk-mp-{i:043d}")
        await keys.authenticate(secret)  # recently used: never the one evicted
    assert len(keys._cache._entries) == 3
    assert lookups.count(lookups[0]) == 1


@pytest.mark.parametrize(
    "presented",
    [
        None,
        "",
        " ",
        "sk-mp-",
        "sk-mp-short",
        "Bearer sk-mp-" + "A" * 43,
        "sk-mp-" + "A" * 43 + " ",
        "sk-mp-" + "A" * 43 + "\n",
        "sk-mp-" + "A" * 42 + "\x00",
        "sk-mp-" + "密" * 43,
        "sk-mp-" + "A" * 42 + "\ud800",  # a lone surrogate: not even encodable
        "sk-mp-" + "A" * 10_000_000,
        "SK-MP-" + "A" * 43,
        "' OR 1=1 --",
    ],
)
async def test_hostile_input_is_refused_without_a_lookup(
    keys: ApiKeys, lookups: list[str], presented: str | None
) -> None:
    with pytest.raises(InvalidApiKey) as caught:
        await keys.authenticate(presented)
    assert caught.value.status == 401 and caught.value.code == "invalid_api_key"
    assert lookups == [] and len(keys._cache._entries) == 0


async def test_messages_say_what_is_wrong(keys: ApiKeys) -> None:
    with pytest.raises(InvalidApiKey, match="缺少"):
        await keys.authenticate(None)
    with pytest.raises(InvalidApiKey) as caught:
        await keys.authenticate(UNKNOWN)
    assert caught.value.to_dict() == {"code": "invalid_api_key", "message": "API 密钥无效"}


async def test_concurrent_requests_with_one_secret_share_one_lookup(
    keys: ApiKeys, monkeypatch: pytest.MonkeyPatch
) -> None:
    key, secret = await keys.create(name="busy")
    real = store.find_by_hash
    called, release = asyncio.Event(), asyncio.Event()
    seen: list[str] = []

    async def slow(engine: Any, *, secret_hash: str) -> Any:
        seen.append(secret_hash)
        called.set()
        await release.wait()
        return await real(engine, secret_hash=secret_hash)

    monkeypatch.setattr(store, "find_by_hash", slow)
    waiting = [asyncio.ensure_future(keys.authenticate(secret)) for _ in range(20)]
    await called.wait()  # the query runs after every request above has joined it
    waiting[0].cancel()  # one caller going away cancels nobody else's lookup
    release.set()
    found = await asyncio.gather(*waiting[1:])
    assert {k.id for k in found} == {key.id}
    assert len(seen) == 1
    assert waiting[0].cancelled()


async def test_a_failed_lookup_fails_every_waiter_and_is_not_cached(
    keys: ApiKeys, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, secret = await keys.create(name="flaky")
    real = store.find_by_hash

    async def broken(engine: Any, *, secret_hash: str) -> Any:
        raise OSError("database gone")

    monkeypatch.setattr(store, "find_by_hash", broken)
    results = await asyncio.gather(*(keys.authenticate(secret) for _ in range(3)),
                                   return_exceptions=True)
    assert all(isinstance(r, OSError) for r in results)
    monkeypatch.setattr(store, "find_by_hash", real)
    assert (await keys.authenticate(secret)).name == "flaky"
