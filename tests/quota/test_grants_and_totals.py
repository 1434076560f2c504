"""Operator grants (idempotent, never below zero), the ledger's pages, totals per local day."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from mpchat.errors import InvalidRequest, NotFound
from mpchat.quota import Quotas
from tests.quota.conftest import Clock, MakeQuotas
from tests.quota.support import assert_consistent


async def test_grants_are_idempotent_by_key(make_quotas: MakeQuotas, engine: Any) -> None:
    quotas = make_quotas()
    outcomes = await asyncio.gather(*(quotas.grant("u", 50, reason="r", key="same")
                                      for _ in range(5)))
    assert sorted(outcomes) == [False, False, False, False, True]
    assert (await quotas.view("u")).credits == 50
    await assert_consistent(engine, "u")


async def test_negative_grants_never_go_below_zero(make_quotas: MakeQuotas, engine: Any) -> None:
    quotas = make_quotas()
    await quotas.grant("u", 30, reason="pack", key="g1")
    assert await quotas.grant("u", -20, reason="refund", key="g2")
    with pytest.raises(InvalidRequest, match="余额不足"):
        await quotas.grant("u", -11, reason="too much", key="g3")
    assert await quotas.grant("u", -10, reason="the rest", key="g4")
    assert (await quotas.view("u")).credits == 0
    assert [r.balance_after for r in await quotas.ledger("u")] == [0, 10, 30]
    await assert_consistent(engine, "u")


@pytest.mark.parametrize(("amount", "key"), [(0, "k"), (10**13, "k"), (1, ""), (1, "k" * 65)])
async def test_bad_grants(make_quotas: MakeQuotas, amount: int, key: str) -> None:
    with pytest.raises(InvalidRequest):
        await make_quotas().grant("u", amount, reason="r", key=key)


async def test_grants_need_quotas_on() -> None:
    with pytest.raises(NotFound):
        await Quotas.disabled().grant("u", 1, reason="r", key="k")


async def test_the_ledger_pages_newest_first(make_quotas: MakeQuotas) -> None:
    quotas = make_quotas()
    for n in range(5):
        await quotas.grant("u", n + 1, reason=f"r{n}", key=f"k{n}")
    first = await quotas.ledger("u", limit=3)
    assert [r.amount for r in first] == [5, 4, 3]
    rest = await quotas.ledger("u", limit=3, before=first[-1].seq)
    assert [r.amount for r in rest] == [2, 1]
    assert await quotas.ledger("someone else") == []


async def test_totals_per_local_day(make_quotas: MakeQuotas, clock: Clock) -> None:
    quotas = make_quotas(free_units=1)
    clock.advance(hours=11)  # 23:00 on 2030-01-01 in Shanghai
    await quotas.grant("u", 5, reason="gift", key="g")
    for key in ("a", "b"):  # the first is free, the second costs a credit
        res = await quotas.reserve(user_id="u", model="default", prompt_tokens=0,
                                   max_completion_tokens=0, key=key)
        assert res is not None
        await quotas.settle(res, prompt_tokens=0, completion_tokens=1, produced=True)
    clock.advance(hours=2)  # 01:00 on 2030-01-02
    await quotas.grant("u", -2, reason="refund", key="r")
    days = await quotas.totals_per_day(3)
    assert [d.date.isoformat() for d in days] == ["2030-01-02", "2030-01-01", "2029-12-31"]
    today, yesterday, before = (d.to_dict() for d in days)
    assert today["credits_granted"] == -2 and today["answers"] == 0
    assert yesterday == {"date": "2030-01-01", "answers": 2, "free_used": 1, "credits_spent": 1,
                         "credits_purchased": 0, "credits_granted": 5, "orders_paid": 0,
                         "revenue_fen": 0}
    assert before["answers"] == 0
