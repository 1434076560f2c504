"""EventRelay on a real Redis: replay and follow across instances, expiry, gaps, stops, outages."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from mpchat.chat.relay import EventRelay, RelayGone
from tests.conftest import REDIS_URL, require_service
from tests.limits.limits_support import PrivateRedis

Event = dict[str, Any]


def answer(n: int) -> list[Event]:
    """start, n - 2 deltas, done: seq 0 .. n - 1."""
    events: list[Event] = [{"type": "start", "seq": 0, "message_id": "m"}]
    events += [{"type": "delta", "seq": i, "text": f"片段{i}"} for i in range(1, n - 1)]
    events.append({"type": "done", "seq": n - 1, "finish_reason": "stop"})
    return events


async def collect(events: AsyncIterator[Event]) -> list[Event]:
    async with contextlib.aclosing(events):  # type: ignore[type-var]
        return [event async for event in events]


class Instances:
    """Relays with their own Redis clients, as separate processes would have them."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.clients: list[Redis] = []
        self.relays: list[EventRelay] = []
        self.admin = self.client()

    def client(self, url: str = REDIS_URL, **options: Any) -> Redis:
        # The app's settings: short socket timeouts, which XREAD BLOCK must outlive.
        client = Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5,
                                client_name=f"relay-test-{uuid.uuid4().hex[:8]}", **options)
        self.clients.append(client)
        return client

    def relay(self, client: Redis | None = None, **options: Any) -> EventRelay:
        options.setdefault("ttl", 60)
        relay = EventRelay(client or self.client(), prefix=self.prefix, **options)
        self.relays.append(relay)
        return relay

    def key(self, message_id: str, kind: str = "events") -> str:
        return f"{self.prefix}{message_id}:{kind}"

    async def wait_blocked(self, client: Redis) -> None:
        """Until one of ``client``'s connections waits in XREAD BLOCK on the server."""
        name = client.get_connection_kwargs()["client_name"]
        await until_async(lambda: self.blocked(name))

    async def blocked(self, name: str) -> bool:
        return any(c["name"] == name and c["cmd"] == "xread" and "b" in c["flags"]
                   for c in await self.admin.client_list())

    async def unblocked(self, name: str) -> bool:
        return not await self.blocked(name)


@pytest.fixture
async def instances() -> AsyncIterator[Instances]:
    require_service(REDIS_URL, 6379, "Redis")
    made = Instances(f"mpchat-test-relay:{uuid.uuid4().hex[:12]}:")
    yield made
    for relay in made.relays:
        await relay.aclose()
    keys = [key async for key in made.admin.scan_iter(match=made.prefix + "*")]
    if keys:
        await made.admin.delete(*keys)
    for client in made.clients:
        await client.aclose()


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"redis://127.0.0.1:{port}/0"


async def test_replay_on_another_instance(instances: Instances) -> None:
    events = answer(8)
    a, b = instances.relay(), instances.relay()
    a.publish("m1", "u1", events[:3])
    a.publish("m1", "u1", events[3:5])
    await a.flush()
    a.publish("m1", "u1", events[5:])
    a.end("m1")
    await a.flush()
    assert await collect(b.follow("m1", after=-1)) == events
    assert await collect(b.follow("m1", after=3)) == events[4:]
    assert await collect(b.follow("m1", after=7)) == []  # ended at or before `after`
    assert await b.owner("m1") == "u1"
    assert await b.owner("unknown") is None


@pytest.mark.parametrize("terminal", ["done", "error"])
async def test_every_terminal_type_ends_a_follow(instances: Instances, terminal: str) -> None:
    events = [*answer(3)[:2], {"type": terminal, "seq": 2}, {"type": "delta", "seq": 3}]
    a, b = instances.relay(), instances.relay()
    a.publish("m1", "u1", events)
    await a.flush()
    assert await collect(b.follow("m1", after=-1)) == events[:3]


async def test_a_retract_is_followed_to_its_done(instances: Instances) -> None:
    events = [*answer(3)[:2], {"type": "retract", "seq": 2},
              {"type": "done", "finish_reason": "content_filter", "seq": 3}]
    a, b = instances.relay(), instances.relay()
    a.publish("m1", "u1", events)
    await a.flush()
    assert await collect(b.follow("m1", after=-1)) == events


async def test_follow_live_until_terminal(instances: Instances) -> None:
    events = answer(5)
    a, reader = instances.relay(), instances.client()
    b = instances.relay(reader)
    a.publish("m1", "u1", events[:1])
    await a.flush()
    seen: asyncio.Queue[Event] = asyncio.Queue()

    async def follower() -> None:
        async with contextlib.aclosing(b.follow("m1", after=-1)) as stream:
            async for event in stream:
                seen.put_nowait(event)

    task = asyncio.create_task(follower())
    assert await seen.get() == events[0]
    await instances.wait_blocked(reader)  # waiting for events not written yet
    a.publish("m1", "u1", events[1:3])
    assert [await seen.get(), await seen.get()] == events[1:3]
    a.publish("m1", "u1", events[3:])
    a.end("m1")
    assert [await seen.get(), await seen.get()] == events[3:]
    async with asyncio.timeout(5):
        await task  # ended at the terminal event
    assert seen.empty()


async def test_cancelled_follower_leaves_nothing_behind(instances: Instances) -> None:
    events = answer(4)
    a, reader = instances.relay(), instances.client()
    b = instances.relay(reader)
    a.publish("m1", "u1", events[:2])
    await a.flush()
    before = asyncio.all_tasks()
    got: list[Event] = []

    async def follower() -> None:
        async for event in b.follow("m1", after=-1, poll=30):
            got.append(event)

    task = asyncio.create_task(follower())
    await instances.wait_blocked(reader)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert got == events[:2]
    assert asyncio.all_tasks() == before
    name = reader.get_connection_kwargs()["client_name"]
    # Its connection stops waiting on the server: Redis sees the close a moment later (its
    # own process), so this waits for it, bounded, and fails if it never comes.
    await until_async(lambda: instances.unblocked(name))
    a.publish("m1", "u1", events[2:])
    a.end("m1")
    await a.flush()
    assert await collect(b.follow("m1", after=0)) == events[1:]  # the pool is still sound


async def test_end_expires_the_keys_after_ttl(instances: Instances) -> None:
    a = instances.relay(ttl=30, live_ttl=3600)
    a.publish("m1", "u1", answer(3)[:2])
    await a.flush()
    for kind in ("events", "owner"):
        assert 30_000 < await instances.admin.pttl(instances.key("m1", kind)) <= 3_600_000
    a.publish("m1", "u1", answer(3)[2:])
    a.end("m1")
    await a.flush()
    for kind in ("events", "owner"):
        assert 0 < await instances.admin.pttl(instances.key("m1", kind)) <= 30_000


async def test_gone_when_unknown_or_expired(instances: Instances) -> None:
    a, b = instances.relay(), instances.relay()
    with pytest.raises(RelayGone):
        await collect(b.follow("never-published", after=-1))
    a.publish("m1", "u1", answer(3))
    a.end("m1")
    await a.flush()
    await instances.admin.delete(instances.key("m1"))  # as if its ttl had passed
    with pytest.raises(RelayGone):
        await collect(b.follow("m1", after=-1))


async def test_gone_when_the_key_expires_while_following(instances: Instances) -> None:
    a, reader = instances.relay(), instances.client()
    b = instances.relay(reader)
    a.publish("m1", "u1", answer(3)[:1])
    await a.flush()
    task = asyncio.create_task(collect(b.follow("m1", after=0, poll=0.2)))
    await instances.wait_blocked(reader)
    await instances.admin.pexpire(instances.key("m1"), 1)
    with pytest.raises(RelayGone):
        async with asyncio.timeout(5):
            await task


async def test_gone_when_trimmed(instances: Instances) -> None:
    events = answer(500)
    a, b = instances.relay(max_events=10), instances.relay()
    a.publish("m1", "u1", events)
    a.end("m1")
    await a.flush()
    assert await instances.admin.xlen(instances.key("m1")) < 500
    with pytest.raises(RelayGone):
        await collect(b.follow("m1", after=-1))
    assert await collect(b.follow("m1", after=497)) == events[498:]


async def test_gone_at_a_gap_in_the_seqs(instances: Instances) -> None:
    events = answer(4)
    a, b = instances.relay(), instances.relay()
    a.publish("m1", "u1", [events[0], events[1], events[3]])
    await a.flush()
    got: list[Event] = []
    with pytest.raises(RelayGone):
        async for event in b.follow("m1", after=-1):
            got.append(event)
    assert got == events[:2]


async def test_stops_reach_other_instances(instances: Instances) -> None:
    a, b = instances.relay(), instances.relay()
    stops: asyncio.Queue[tuple[str | None, str | None]] = asyncio.Queue()
    a.on_stop(lambda message_id, user_id: stops.put_nowait((message_id, user_id)))
    async with asyncio.timeout(5):
        await a._subscribed.wait()
        await b.stop(message_id="m1")
        assert await stops.get() == ("m1", None)
        await b.stop(user_id="u1")
        assert await stops.get() == (None, "u1")
    with pytest.raises(ValueError):
        await b.stop()


async def test_stops_resume_after_redis_restarts(instances: Instances, tmp_path: Path) -> None:
    server = PrivateRedis(tmp_path)
    await server.start()
    try:
        a, b = instances.relay(instances.client(server.url)), instances.relay(
            instances.client(server.url))
        stops: asyncio.Queue[tuple[str | None, str | None]] = asyncio.Queue()
        a.on_stop(lambda message_id, user_id: stops.put_nowait((message_id, user_id)))
        async with asyncio.timeout(5):
            await a._subscribed.wait()
        await server.stop()
        await until(lambda: not a._subscribed.is_set())  # the subscriber saw it go
        await server.start()
        async with asyncio.timeout(10):
            await a._subscribed.wait()
            await b.stop(message_id="m2")
            assert await stops.get() == ("m2", None)
    finally:
        await server.kill()


async def until(predicate: Callable[[], bool]) -> None:
    """Poll state that offers no event to wait on; TimeoutError after 5 s."""
    async with asyncio.timeout(5):
        while not predicate():  # noqa: ASYNC110 (the state is another task's)
            await asyncio.sleep(0.01)


async def until_async(predicate: Callable[[], Awaitable[bool]]) -> None:
    """Poll another process's state (Redis's); TimeoutError after 10 s."""
    async with asyncio.timeout(10):
        while not await predicate():  # noqa: ASYNC110 (the state is Redis's)
            await asyncio.sleep(0.01)


async def test_redis_down_degrades_quietly(instances: Instances) -> None:
    changes: list[bool] = []
    relay = instances.relay(instances.client(closed_port_url()), on_degraded=changes.append)
    stops: list[tuple[str | None, str | None]] = []
    relay.on_stop(lambda message_id, user_id: stops.append((message_id, user_id)))
    relay.publish("m1", "u1", answer(3))
    relay.end("m1")
    await relay.flush()
    assert changes == [True]
    with pytest.raises(RelayGone):
        await collect(relay.follow("m1", after=-1))
    assert await relay.owner("m1") is None
    await relay.stop(user_id="u1")
    assert stops == [(None, "u1")]  # this instance's answers still stop
    started = time.monotonic()
    await relay.aclose()
    assert time.monotonic() - started < 1.0


async def test_a_lost_round_makes_followers_fall_back(instances: Instances) -> None:
    events = answer(4)
    changes: list[bool] = []
    client = instances.client()
    failing = [False]
    make_pipeline = client.pipeline

    def pipeline(*args: Any, **kwargs: Any) -> Any:
        pipe = make_pipeline(*args, **kwargs)
        if failing[0]:
            failing[0] = False

            async def execute(**_: Any) -> Any:
                raise RedisConnectionError("lost")

            pipe.execute = execute  # type: ignore[method-assign]
        return pipe

    client.pipeline = pipeline  # type: ignore[method-assign]
    a, b = instances.relay(client, ttl=30, on_degraded=changes.append), instances.relay()
    a._guard.probe_interval = 0.0  # retry at the next round, not 2 s later
    a.publish("m1", "u1", events[:2])
    await a.flush()
    assert await instances.admin.xlen(instances.key("m1")) == 2
    failing[0] = True
    a.publish("m1", "u1", events[2:3])
    await a.flush()
    assert changes == [True]
    a.publish("m1", "u1", events[3:])
    a.end("m1")
    await a.flush()
    assert changes == [True, False]
    assert not await instances.admin.exists(instances.key("m1"))  # no stream with a hole
    with pytest.raises(RelayGone):
        await collect(b.follow("m1", after=-1))
    assert 0 < await instances.admin.pttl(instances.key("m1", "owner")) <= 30_000


async def test_many_answers_share_round_trips(instances: Instances) -> None:
    client = instances.client()
    rounds = [0]
    make_pipeline = client.pipeline

    def pipeline(*args: Any, **kwargs: Any) -> Any:
        rounds[0] += 1
        return make_pipeline(*args, **kwargs)

    client.pipeline = pipeline  # type: ignore[method-assign]
    a, b = instances.relay(client), instances.relay()
    answers, per_answer = 200, 30

    async def stream(message_id: str) -> None:
        for event in answer(per_answer):
            a.publish(message_id, "u1", [event])
            await asyncio.sleep(0)  # a provider chunk at a time
        a.end(message_id)

    async with asyncio.TaskGroup() as group:
        for i in range(answers):
            group.create_task(stream(f"m{i}"))
    await a.flush()
    assert rounds[0] <= answers * per_answer // 100  # a handful, in practice
    pipe = instances.admin.pipeline(transaction=False)
    for i in range(answers):
        pipe.xlen(instances.key(f"m{i}"))
    lengths = await pipe.execute()
    assert lengths == [per_answer] * answers
    assert await collect(b.follow("m123", after=-1)) == answer(per_answer)


async def test_followers_do_not_use_up_the_shared_pool(instances: Instances) -> None:
    a, shared = instances.relay(), instances.client(max_connections=10)
    b = instances.relay(shared)
    a.publish("m1", "u1", [{"type": "start", "seq": 0}])
    await a.flush()
    many = shared.connection_pool.max_connections + 10
    followers = [asyncio.create_task(collect(b.follow("m1", after=-1))) for _ in range(many)]
    name = shared.get_connection_kwargs()["client_name"]

    async def all_blocked() -> bool:  # every follower's connection waits in XREAD BLOCK
        clients = await instances.admin.client_list()
        return many == sum(c["name"] == name and c["cmd"] == "xread" and "b" in c["flags"]
                           for c in clients)

    await until_async(all_blocked)
    assert await b.owner("m1") == "u1"  # the client's own pool still serves
    a.publish("m1", "u1", [{"type": "done", "seq": 1}])
    async with asyncio.timeout(10):
        results = await asyncio.gather(*followers)
    assert results == [[{"type": "start", "seq": 0}, {"type": "done", "seq": 1}]] * many


async def test_aclose_ends_waiting_followers(instances: Instances) -> None:
    a, reader = instances.relay(), instances.client()
    b = instances.relay(reader)
    a.publish("m1", "u1", answer(3)[:1])
    await a.flush()
    task = asyncio.create_task(collect(b.follow("m1", after=0)))
    await instances.wait_blocked(reader)
    async with asyncio.timeout(2):
        await b.aclose()
        with pytest.raises(RelayGone):
            await task
