"""Upstream gate: concurrency bound, bounded fair FIFO queue, cancellation, shared leases."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
from redis.asyncio import Redis

from mpchat.errors import Busy
from mpchat.limits import LeaseState, UpstreamGate

RedisFactory = Callable[[], Redis]


class InFlight:
    """Counts callers between acquire and release, remembering the maximum."""

    def __init__(self) -> None:
        self.now = 0
        self.peak = 0

    def enter(self) -> None:
        self.now += 1
        self.peak = max(self.peak, self.now)

    def leave(self) -> None:
        self.now -= 1


async def _use(
    gate: UpstreamGate,
    user: str,
    counter: InFlight,
    *,
    hold: Callable[[], asyncio.Future[object]] | None = None,
) -> list[int]:
    """One request through the gate; returns the positions it was told while waiting."""
    positions: list[int] = []
    lease = await gate.reserve(user)
    try:
        async for position in lease.wait():
            positions.append(position)
        counter.enter()
        try:
            if hold is not None:
                await hold()
            else:
                await asyncio.sleep(0.001)  # stands for the provider call
        finally:
            counter.leave()
    finally:
        await lease.release()
    return positions


async def test_two_hundred_users_none_fails_and_bound_holds() -> None:
    gate = UpstreamGate("p", max_concurrency=8, queue_size=1000, queue_timeout=30)
    counter = InFlight()
    results = await asyncio.gather(*(_use(gate, f"user{i}", counter) for i in range(200)))
    assert counter.peak == 8
    assert gate.in_flight == 0 and gate.waiting == 0
    waited = [p for p in results if p]
    assert len(waited) >= 150  # most had to queue
    for positions in waited:
        assert positions == sorted(positions, reverse=True)  # never moves back
        assert len(set(positions)) == len(positions)  # only changes are reported
        assert positions[-1] >= 1


async def test_full_queue_fails_fast_and_admitted_complete() -> None:
    gate = UpstreamGate("p", max_concurrency=8, queue_size=50, queue_timeout=30)
    counter = InFlight()
    go = asyncio.Event()
    all_refused = asyncio.Event()
    refused_after: list[float] = []
    started = time.monotonic()

    async def one(i: int) -> str:
        try:
            await _use(gate, f"user{i}", counter, hold=go.wait)  # type: ignore[arg-type]
        except Busy as exc:
            assert exc.retry_after is not None and exc.retry_after > 0
            refused_after.append(time.monotonic() - started)
            if len(refused_after) == 142:
                all_refused.set()
            return "busy"
        return "done"

    tasks = [asyncio.create_task(one(i)) for i in range(200)]
    await asyncio.wait_for(all_refused.wait(), 5)
    assert max(refused_after) < 2  # refused at once, not after queue_timeout
    assert gate.in_flight == 8 and gate.waiting == 50
    go.set()
    results = await asyncio.gather(*tasks)
    assert results.count("done") == 58
    assert results.count("busy") == 142
    assert counter.peak == 8 and gate.in_flight == 0 and gate.waiting == 0


async def test_fair_share_per_user() -> None:
    gate = UpstreamGate("p", max_concurrency=1, queue_size=8, queue_timeout=30)
    assert gate.max_waiting_per_user == 2
    holder = await gate.reserve("someone")
    first, second = await gate.reserve("greedy"), await gate.reserve("greedy")
    with pytest.raises(Busy) as refused:
        await gate.reserve("greedy")
    assert refused.value.retry_after is not None and refused.value.retry_after > 0
    other = await gate.reserve("polite")
    assert [first.position, second.position, other.position] == [1, 2, 3]
    await first.release()
    third = await gate.reserve("greedy")  # back under the share once one left
    assert third.position == 3
    for lease in (holder, second, other, third):
        await lease.release()
    assert gate.waiting == 0 and gate.in_flight == 0

    strict = UpstreamGate("q", max_concurrency=1, queue_size=100, max_waiting_per_user=1)
    held = await strict.reserve("a")
    await strict.reserve("a")
    with pytest.raises(Busy):
        await strict.reserve("a")
    await held.release()


async def test_wait_times_out_with_busy() -> None:
    gate = UpstreamGate("p", max_concurrency=1, queue_size=10, queue_timeout=0.2)
    holder = await gate.reserve("a")
    waiter = await gate.reserve("b")
    seen: list[int] = []
    with pytest.raises(Busy) as exc:
        async for position in waiter.wait():
            seen.append(position)
    assert seen == [1]
    assert exc.value.retry_after is not None and 1 <= exc.value.retry_after <= 30
    assert gate.waiting == 0 and waiter.state is LeaseState.RELEASED
    await waiter.release()
    await holder.release()
    assert gate.in_flight == 0


async def _cancellation_never_leaks(gate: UpstreamGate) -> None:
    holder = await gate.reserve("holder")
    queued = asyncio.Event()

    async def waiting_client() -> None:
        lease = await gate.reserve("w")
        try:
            async for _ in lease.wait():
                queued.set()
            pytest.fail("must not get a slot while the holder holds it")
        finally:
            await lease.release()

    task = asyncio.create_task(waiting_client())
    await asyncio.wait_for(queued.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert gate.waiting == 0 and gate.in_flight == 1
    await holder.release()
    assert gate.in_flight == 0

    holding = asyncio.Event()

    async def holding_client() -> None:
        lease = await gate.reserve("h")
        try:
            async for _ in lease.wait():
                pass
            holding.set()
            await asyncio.Event().wait()  # the provider call that never ends
        finally:
            await lease.release()

    task = asyncio.create_task(holding_client())
    await asyncio.wait_for(holding.wait(), 5)
    assert gate.in_flight == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert gate.in_flight == 0 and gate.waiting == 0
    again = await gate.reserve("x")
    assert again.state is LeaseState.HELD  # the slot came back at once
    await again.release()
    await again.release()  # idempotent


async def test_cancellation_never_leaks_in_process() -> None:
    await _cancellation_never_leaks(UpstreamGate("p", max_concurrency=1, queue_size=10))


async def test_cancellation_never_leaks_with_redis(
    redis_factory: RedisFactory, prefix: str
) -> None:
    redis = redis_factory()
    gate = UpstreamGate("p", max_concurrency=1, redis=redis, prefix=prefix, poll_interval=0.01)
    await _cancellation_never_leaks(gate)
    assert await redis.zcard(f"{prefix}gate:p:leases") == 0
    await gate.aclose()


async def test_two_instances_share_the_bound(redis_factory: RedisFactory, prefix: str) -> None:
    gates = [
        UpstreamGate(
            "shared", max_concurrency=4, redis=redis_factory(), prefix=prefix, poll_interval=0.01
        )
        for _ in range(2)
    ]
    counter = InFlight()
    results = await asyncio.gather(
        *(_use(gates[i % 2], f"user{i}", counter) for i in range(40))
    )
    assert counter.peak == 4
    assert sum(1 for p in results if p) >= 30
    assert all(g.in_flight == 0 and not g.degraded for g in gates)
    for gate in gates:
        await gate.aclose()


async def test_leases_are_renewed_and_a_crashed_instance_expires(
    redis_factory: RedisFactory, prefix: str
) -> None:
    def make() -> UpstreamGate:
        return UpstreamGate(
            "crash", max_concurrency=1, lease_ttl=0.3, redis=redis_factory(), prefix=prefix,
            poll_interval=0.01,
        )

    a, b = make(), make()
    held = await a.reserve("a")
    assert held.state is LeaseState.HELD
    waiter = await b.reserve("b")
    admitted = asyncio.Event()

    async def wait_b() -> None:
        async for _ in waiter.wait():
            pass
        admitted.set()

    task = asyncio.create_task(wait_b())
    # Two lease lifetimes pass: renewal keeps the holder's lease alive.
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(asyncio.shield(admitted.wait()), 0.7)
    await a.aclose()  # the instance "crashes": no release, no more renewal
    await asyncio.wait_for(admitted.wait(), 5)
    await task
    await waiter.release()
    await b.aclose()
