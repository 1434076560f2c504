"""Many reservations at once by one user: exactly what the balance covers, never below zero."""

from __future__ import annotations

import asyncio
import multiprocessing
from typing import Any

import pytest

from mpchat.errors import QuotaExceeded
from mpchat.quota import Quotas, Reservation
from tests.quota.conftest import MakeQuotas
from tests.quota.support import assert_consistent, stored_credits
from tests.quota.workers import reserve_many


async def _race(quotas: Quotas, n: int) -> tuple[list[Reservation], int]:
    async def one(i: int) -> Reservation | None:
        try:
            return await quotas.reserve(user_id="u", model="m", prompt_tokens=100,
                                        max_completion_tokens=100, key=f"msg-{i}")
        except QuotaExceeded:
            return None

    results = await asyncio.gather(*(one(i) for i in range(n)))
    granted = [r for r in results if r is not None]
    return granted, n - len(granted)


@pytest.mark.parametrize(("free", "credits"), [(0, 10), (4, 6), (10, 0)])
async def test_100_at_once_with_a_balance_of_10(
    make_quotas: MakeQuotas, engine: Any, free: int, credits: int
) -> None:
    quotas = make_quotas(free_units=free)  # default price: one unit per answer
    if credits:
        await quotas.grant("u", credits, reason="pack", key="g")
    # (10, 0): the account does not exist yet; 100 first requests create it at once.
    granted, refused = await _race(quotas, 100)
    assert (len(granted), refused) == (10, 90)
    view = await quotas.view("u")
    assert (view.free_remaining, view.credits) == (0, 0)
    await assert_consistent(engine, "u")

    # Every one of them answered: each costs its unit, settled twice at once to no effect.
    settles = [quotas.settle(r, prompt_tokens=100, completion_tokens=100, produced=True)
               for r in granted]
    await asyncio.gather(*settles, *settles)
    assert (await quotas.view("u")).remaining == 0
    await assert_consistent(engine, "u")


async def test_three_processes(database_url: str, engine: Any, tx: Any) -> None:
    """Three instances (processes, engines of their own) racing for one balance."""
    await Quotas(tx, make_config()).grant("u", 10, reason="pack", key="g")
    ctx = multiprocessing.get_context("spawn")
    ready, done = ctx.Queue(), ctx.Queue()
    go = ctx.Event()
    counts = {"a": 34, "b": 33, "c": 33}
    procs = [ctx.Process(target=reserve_many, args=(database_url, p, n, ready, go, done))
             for p, n in counts.items()]
    for proc in procs:
        proc.start()
    try:
        for _ in procs:
            await asyncio.to_thread(ready.get, True, 60)
        go.set()
        results = [await asyncio.to_thread(done.get, True, 60) for _ in procs]
    finally:
        for proc in procs:
            await asyncio.to_thread(proc.join, 30)
    assert sum(g for g, _ in results) == 10
    assert sum(r for _, r in results) == 90
    assert await stored_credits(engine, "u") == 0
    await assert_consistent(engine, "u")


def make_config() -> Any:
    from mpchat.quota import QuotaConfig

    return QuotaConfig.model_validate({"free_units": 0})
