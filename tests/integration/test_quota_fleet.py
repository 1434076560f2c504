"""Quotas across instances: three `mpchat serve` on one PostgreSQL, one user's 100 chats at
once against a balance that covers exactly ten answers: ten answered, ninety 402, the
balance ends at zero and the ledger sums to it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from mpchat.fakes.upstream import FakeUpstream
from mpchat.storage.crypto import generate_key_spec
from tests.integration.support import (
    chat,
    child_base_env,
    login,
    mpchat_argv,
    run_command,
    spawn_fleet,
)

ADMIN = "admin-token-for-the-fleet-0123456789"
CONFIG = """
[quota]
free_units = 0
max_completion_tokens = 10
[quota.prices]
default = { per_message = 1, per_1k_completion = 100 }
"""  # an answer reserves 1 + 10 x 0.1 = 2 units


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                     timeout=aiohttp.ClientTimeout(total=60)) as session:
        yield session


async def test_three_instances_never_spend_more_than_the_balance(
    tmp_path: Path, pg_url: str, fake_upstream: FakeUpstream, http: aiohttp.ClientSession,
) -> None:
    config = tmp_path / "quota.toml"
    config.write_text(CONFIG, encoding="utf-8")
    env = {
        "MPCHAT_ENV": "development",
        "MPCHAT_DATABASE_URL": pg_url,
        "MPCHAT_CONFIG": str(config),
        "MPCHAT_ADMIN_TOKEN": ADMIN,
        "MPCHAT_UPSTREAM_BASE_URL": fake_upstream.base_url,
        "MPCHAT_RATE_LIMIT": "100000/minute",
        "MPCHAT_LOGIN_RATE_LIMIT": "100000/minute",
        "MPCHAT_SECRET_KEY": "integration-secret-" + "x" * 32,
        "MPCHAT_ENCRYPTION_KEYS": generate_key_spec("qf1"),
        "MPCHAT_LOG_LEVEL": "WARNING",
    }
    await run_command(mpchat_argv("migrate"), env={**child_base_env(), **env,
                                                   "MPCHAT_DATA_DIR": str(tmp_path / "m")},
                      log_path=tmp_path / "migrate.log")
    # Each answer costs its whole reservation: one unit a message, ten tokens at 0.1.
    fake_upstream.script = [{"text": ["好"] * 10}] * 100
    async with spawn_fleet(3, env, tmp_path) as fleet:
        urls = [instance.base_url for instance in fleet]
        token = await login(http, urls[0], "one-paying-user")
        admin = {"Authorization": f"Bearer {ADMIN}"}
        async with http.get(f"{urls[0]}/api/v1/me",
                            headers={"Authorization": f"Bearer {token}"}) as r:
            user_id = (await r.json())["user_id"]
        async with http.post(f"{urls[1]}/admin/v1/users/{user_id}/credits", headers=admin,
                             json={"amount": 20, "reason": "ten answers"}) as r:
            assert r.status == 200, await r.text()

        results = await asyncio.gather(
            *(chat(http, urls[i % 3], token, f"问题 {i}") for i in range(100)))

        statuses = sorted(r.status for r in results)
        assert statuses == [200] * 10 + [402] * 90, statuses
        assert all(r.types[-1] == "done" for r in results if r.status == 200)
        async with http.get(f"{urls[2]}/admin/v1/users/{user_id}/quota?limit=500",
                            headers=admin) as r:
            seen = await r.json()
    assert seen["quota"]["credits"] == 0
    assert sum(row["amount"] for row in seen["ledger"]) == 0
    assert fake_upstream.stats.requests == 10  # refused chats never reached the provider
