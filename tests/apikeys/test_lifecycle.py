"""API keys: create, authenticate, list, get, revoke, rotate, expiry; bad input to create."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from mpchat.apikeys import SECRET_PREFIX, ApiKeys
from mpchat.errors import InvalidApiKey, InvalidRequest, NotFound
from mpchat.storage.tables import api_keys
from tests.apikeys.conftest import Clocks


async def test_created_key_is_shown_once_and_stored_as_a_hash(
    keys: ApiKeys, engine: Any
) -> None:
    key, secret = await keys.create(name="acc", models=["gpt-4o-mini", "deepseek-chat"],
                                    rpm=60, tpm=10_000, quota=1_000_000)
    assert secret.startswith(SECRET_PREFIX) and len(secret) == len(SECRET_PREFIX) + 43
    assert key.id.startswith("k_") and secret.startswith(key.prefix)
    assert len(key.prefix) == len(SECRET_PREFIX) + 8
    assert (key.name, key.rpm, key.tpm, key.quota, key.used_tokens) == (
        "acc", 60, 10_000, 1_000_000, 0)
    assert key.models == ("gpt-4o-mini", "deepseek-chat")
    assert key.allows("deepseek-chat") and not key.allows("gpt-4o")
    async with engine.connect() as conn:
        row = (await conn.execute(select(api_keys))).one()
    assert row.secret_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert all(secret not in str(value) for value in row)
    assert await keys.authenticate(secret) == key
    assert "secret" not in repr(key) and secret not in repr(key)


async def test_every_secret_is_new(keys: ApiKeys) -> None:
    made = [await keys.create(name=f"k{i}") for i in range(5)]
    assert len({secret for _, secret in made}) == 5 and len({k.id for k, _ in made}) == 5
    assert all(k.models is None and k.allows("anything") for k, _ in made)


async def test_list_get_and_revoke(keys: ApiKeys, clocks: Clocks) -> None:
    first, _ = await keys.create(name="first")
    clocks.advance(1)
    second, secret = await keys.create(name="second")
    assert [k.id for k in await keys.list()] == [first.id, second.id]
    assert await keys.get(second.id) == second
    clocks.advance(1)
    revoked = await keys.revoke(second.id)
    assert revoked.revoked_at == clocks.wall and revoked.status(clocks.wall) == "revoked"
    clocks.advance(1)
    assert (await keys.revoke(second.id)).revoked_at == revoked.revoked_at  # idempotent
    assert [k.id for k in await keys.list()] == [first.id]
    assert [k.id for k in await keys.list(include_revoked=True)] == [first.id, second.id]
    with pytest.raises(InvalidApiKey, match="吊销"):
        await keys.authenticate(secret)


@pytest.mark.parametrize("action", ["get", "revoke", "rotate"])
async def test_unknown_ids_are_not_found(keys: ApiKeys, action: str) -> None:
    with pytest.raises(NotFound):
        await getattr(keys, action)("k_000000000000")


async def test_rotation_keeps_the_key_and_replaces_the_secret(keys: ApiKeys) -> None:
    key, old = await keys.create(name="rot", models=["m"], rpm=5, quota=100)
    await keys.record_usage(key, tokens=7)
    assert (await keys.authenticate(old)).used_tokens == 7
    rotated, new = await keys.rotate(key.id)
    assert new != old and rotated.prefix != key.prefix and new.startswith(rotated.prefix)
    assert (rotated.id, rotated.models, rotated.rpm, rotated.quota, rotated.used_tokens) == (
        key.id, ("m",), 5, 100, 7)
    with pytest.raises(InvalidApiKey):
        await keys.authenticate(old)  # at once on this instance, cached or not
    assert (await keys.authenticate(new)).id == key.id
    await keys.revoke(key.id)
    with pytest.raises(InvalidRequest):
        await keys.rotate(key.id)


async def test_expiry_is_checked_on_every_call(keys: ApiKeys, clocks: Clocks) -> None:
    key, secret = await keys.create(name="soon", expires_at=clocks.wall + timedelta(hours=1))
    assert key.expires_at == clocks.wall + timedelta(hours=1)
    assert (await keys.authenticate(secret)).id == key.id
    clocks.advance(3599)
    assert (await keys.authenticate(secret)).status(clocks.wall) == "active"
    clocks.advance(1)
    with pytest.raises(InvalidApiKey, match="过期"):
        await keys.authenticate(secret)
    assert [k.id for k in await keys.list()] == [key.id]  # expired keys are still listed


async def test_naive_expiry_is_utc(keys: ApiKeys, clocks: Clocks) -> None:
    naive = datetime(2031, 1, 1)
    key, _ = await keys.create(name="naive", expires_at=naive)
    assert key.expires_at is not None and key.expires_at.utcoffset() == timedelta(0)
    assert key.expires_at.replace(tzinfo=None) == naive


@pytest.mark.parametrize(
    "kwargs",
    [
        {"name": ""},
        {"name": "   "},
        {"name": "x" * 65},
        {"name": "ok", "models": []},
        {"name": "ok", "models": [""]},
        {"name": "ok", "models": ["m" * 129]},
        {"name": "ok", "models": [f"m{i}" for i in range(51)]},
        {"name": "ok", "rpm": 0},
        {"name": "ok", "tpm": -1},
        {"name": "ok", "quota": 0},
        {"name": "ok", "rpm": 2**31},
        {"name": "ok", "expires_at": "past"},
    ],
)
async def test_create_refuses_bad_settings(
    keys: ApiKeys, clocks: Clocks, kwargs: dict[str, Any]
) -> None:
    if kwargs.get("expires_at") == "past":
        kwargs["expires_at"] = clocks.wall
    with pytest.raises(InvalidRequest):
        await keys.create(**kwargs)
    assert await keys.list(include_revoked=True) == []


async def test_models_are_trimmed_and_deduplicated(keys: ApiKeys) -> None:
    key, _ = await keys.create(name=" spaced ", models=[" a", "b ", "a"])
    assert key.name == "spaced" and key.models == ("a", "b")
