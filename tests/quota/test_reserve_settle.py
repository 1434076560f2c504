"""Reserve then settle: free allowance first, the real cost charged, the rest given back."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from mpchat.errors import QuotaExceeded
from mpchat.quota import Quotas
from tests.quota.conftest import Clock, MakeQuotas
from tests.quota.support import assert_consistent, open_count


async def test_off_without_a_config() -> None:
    quotas = Quotas.disabled()
    assert not quotas.enabled
    assert await quotas.reserve(user_id="u", model="m", prompt_tokens=1,
                                max_completion_tokens=1, key="k") is None
    assert (await quotas.view("u")).to_dict() == {"enabled": False}


async def test_free_allowance_first_then_credits(make_quotas: MakeQuotas, engine: Any) -> None:
    quotas = make_quotas(free_units=3)
    assert await quotas.grant("u", 5, reason="gift", key="g1")
    view = await quotas.view("u")
    assert (view.free_remaining, view.credits, view.remaining) == (3, 5, 8)

    # tokens: 1/1k prompt, 2/1k completion. 1000 + 1500 -> 1 + 3 = 4 units at most.
    res = await quotas.reserve(user_id="u", model="tokens", prompt_tokens=1000,
                               max_completion_tokens=1500, key="m1")
    assert res is not None and (res.units, res.free_units, res.credit_units) == (4, 3, 1)
    view = await quotas.view("u")
    assert (view.free_remaining, view.credits) == (0, 4)

    # The answer used 1000 + 200 tokens: 1.4 -> 2 units, taken from the reserved free units.
    view = await quotas.settle(res, prompt_tokens=1000, completion_tokens=200, produced=True)
    assert (view.free_remaining, view.credits) == (1, 5)
    await assert_consistent(engine, "u")

    rows = await quotas.ledger("u")
    assert [(r.kind, r.amount, r.free_amount, r.balance_after) for r in rows] == [
        ("settle", 1, 1, 5), ("reserve", -1, -3, 4), ("grant", 5, 0, 5)]
    assert rows[0].message_id == "m1" and rows[2].reason == "gift"


async def test_nothing_produced_costs_nothing(make_quotas: MakeQuotas, engine: Any) -> None:
    quotas = make_quotas(free_units=0)
    await quotas.grant("u", 2, reason="r", key="g")
    res = await quotas.reserve(user_id="u", model="default", prompt_tokens=10,
                               max_completion_tokens=10, key="m")
    assert res is not None and res.credit_units == 1
    view = await quotas.settle(res, prompt_tokens=10, completion_tokens=0, produced=False)
    assert view.credits == 2
    await assert_consistent(engine, "u")


async def test_settle_is_exactly_once(make_quotas: MakeQuotas, engine: Any) -> None:
    quotas = make_quotas(free_units=0)
    await quotas.grant("u", 10, reason="r", key="g")
    res = await quotas.reserve(user_id="u", model="tokens", prompt_tokens=0,
                               max_completion_tokens=2000, key="m")
    assert res is not None and res.units == 4
    first = await quotas.settle(res, prompt_tokens=0, completion_tokens=500, produced=True)
    again = await quotas.settle(res, prompt_tokens=0, completion_tokens=2000, produced=True)
    never = await quotas.settle(res, prompt_tokens=0, completion_tokens=0, produced=False)
    assert first.credits == again.credits == never.credits == 9
    assert len(await quotas.ledger("u")) == 3
    await assert_consistent(engine, "u")


async def test_reserve_is_idempotent_by_key(make_quotas: MakeQuotas) -> None:
    quotas = make_quotas(free_units=5)
    kw: dict[str, Any] = {"user_id": "u", "model": "default", "prompt_tokens": 1,
                          "max_completion_tokens": 1, "key": "m"}
    first = await quotas.reserve(**kw)
    assert await quotas.reserve(**kw) == first
    assert (await quotas.view("u")).free_remaining == 4


async def test_refused_when_it_cannot_be_reserved(make_quotas: MakeQuotas, engine: Any) -> None:
    quotas = make_quotas(free_units=2)
    await quotas.grant("u", 1, reason="r", key="g")
    with pytest.raises(QuotaExceeded) as refused:  # 4 units needed, 3 left
        await quotas.reserve(user_id="u", model="tokens", prompt_tokens=0,
                             max_completion_tokens=2000, key="m1")
    assert refused.value.retry_after is None  # more than a whole free allowance
    view = await quotas.view("u")
    assert (view.free_remaining, view.credits) == (2, 1)  # nothing taken
    for key in ("a", "b", "c"):
        await quotas.reserve(user_id="u", model="default", prompt_tokens=0,
                             max_completion_tokens=0, key=key)
    with pytest.raises(QuotaExceeded) as refused:
        await quotas.reserve(user_id="u", model="default", prompt_tokens=0,
                             max_completion_tokens=0, key="d")
    assert refused.value.retry_after == (await quotas.view("u")).reset_s  # a reset would do
    await assert_consistent(engine, "u")


async def test_a_cost_above_the_reservation_takes_what_is_left(
    make_quotas: MakeQuotas, engine: Any
) -> None:
    quotas = make_quotas(free_units=1)
    await quotas.grant("u", 2, reason="r", key="g")
    res = await quotas.reserve(user_id="u", model="tokens", prompt_tokens=0,
                               max_completion_tokens=500, key="m")  # 1 unit: the free one
    assert res is not None and (res.free_units, res.credit_units) == (1, 0)
    # The real prompt was far larger than its estimate: 5 units, only 1 + 2 exist.
    view = await quotas.settle(res, prompt_tokens=3000, completion_tokens=500, produced=True)
    assert (view.free_remaining, view.credits) == (0, 0)
    await assert_consistent(engine, "u")


async def test_the_allowance_resets_at_midnight_in_shanghai(
    make_quotas: MakeQuotas, clock: Clock, engine: Any
) -> None:
    quotas = make_quotas(free_units=2)
    clock.advance(hours=11, minutes=59)  # 23:59 in Shanghai
    for key in ("a", "b"):
        await quotas.reserve(user_id="u", model="default", prompt_tokens=0,
                             max_completion_tokens=0, key=key)
    view = await quotas.view("u")
    assert (view.free_remaining, view.reset_s) == (0, 60)
    with pytest.raises(QuotaExceeded) as refused:
        await quotas.reserve(user_id="u", model="default", prompt_tokens=0,
                             max_completion_tokens=0, key="c")
    assert refused.value.retry_after == 60
    clock.advance(minutes=1)  # 00:00: a new day
    assert (await quotas.view("u")).free_remaining == 2
    res = await quotas.reserve(user_id="u", model="default", prompt_tokens=0,
                               max_completion_tokens=0, key="c")
    assert res is not None and res.free_units == 1
    assert (await quotas.view("u")).free_remaining == 1
    await assert_consistent(engine, "u")


async def test_free_units_of_an_ended_period_are_not_given_back(
    make_quotas: MakeQuotas, clock: Clock
) -> None:
    quotas = make_quotas(free_units=5)
    res = await quotas.reserve(user_id="u", model="per5", prompt_tokens=0,
                               max_completion_tokens=0, key="m")
    assert res is not None and res.free_units == 1
    clock.advance(days=1)
    view = await quotas.settle(res, prompt_tokens=0, completion_tokens=0, produced=False)
    assert view.free_remaining == 5  # not 6


async def test_credits_reserved_before_a_reset_come_back_after_it(
    make_quotas: MakeQuotas, clock: Clock, engine: Any
) -> None:
    quotas = make_quotas(free_units=0)
    await quotas.grant("u", 3, reason="r", key="g")
    res = await quotas.reserve(user_id="u", model="default", prompt_tokens=0,
                               max_completion_tokens=0, key="m")
    assert res is not None
    clock.advance(days=1)
    view = await quotas.settle(res, prompt_tokens=0, completion_tokens=0, produced=False)
    assert view.credits == 3
    await assert_consistent(engine, "u")


async def test_stale_reservations(make_quotas: MakeQuotas, clock: Clock, engine: Any) -> None:
    quotas = make_quotas(free_units=0)
    await quotas.grant("u", 40, reason="r", key="g")
    kw: dict[str, Any] = {"user_id": "u", "model": "tokens", "prompt_tokens": 1000,
                          "max_completion_tokens": 4000}
    for key in ("crashed-with-text", "crashed-empty", "never-stored"):
        await quotas.reserve(key=key, **kw)  # 9 units each
    clock.advance(minutes=10)
    live = await quotas.reserve(key="live", **kw)
    assert (await quotas.view("u")).credits == 40 - 36

    # The stuck-answer sweeper settles what it finds stored, by its estimate of the text.
    view = await quotas.settle_stale("crashed-with-text", completion_tokens=500)
    assert view is not None and view.credits == 4 + 7  # 1 + 1 = 2 units charged
    view = await quotas.settle_stale("crashed-empty", completion_tokens=0, produced=False)
    assert view is not None and view.credits == 11 + 9
    assert await quotas.settle_stale("unknown", completion_tokens=5) is None

    # The backstop: what nobody settled, made before the bound, comes back at no cost.
    assert await quotas.release_stale(older_than=clock() - timedelta(minutes=5)) == 1
    assert (await quotas.view("u")).credits == 40 - 2 - 9
    assert await open_count(engine) == 1 and live is not None
    await assert_consistent(engine, "u")
