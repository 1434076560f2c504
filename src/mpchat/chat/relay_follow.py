"""Following one answer's events on Redis (the reading side of `mpchat.chat.relay`).

A follower XREADs the events after the seq it has, then waits for live ones with XREAD BLOCK
on a connection of its own pool, until a terminal event. A missing stream, a gap in the seqs,
entries that are not ours or Redis failing end it with `RelayGone`: the caller falls back to
what storage has.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
from redis.asyncio import ConnectionPool, Redis
from redis.exceptions import RedisError

__all__ = ["TERMINAL_TYPES", "RelayGone", "follow_pool", "follow_stream"]

# `retract` is always followed by `done` (content_filter): a follower reads on to it.
TERMINAL_TYPES = frozenset({"done", "error"})
_READ_COUNT = 1000  # entries per XREAD
_MAX_FOLLOWERS = 1000  # connections of this instance waiting in XREAD BLOCK at once
_Failure = (RedisError, OSError, TimeoutError)


class RelayGone(Exception):
    """The events after `after` are no longer all kept (expired, trimmed, never mirrored)."""


async def follow_stream(
    pool: ConnectionPool, key: str, message_id: str, *, after: int, poll: float
) -> AsyncIterator[dict[str, Any]]:
    """The events of stream ``key`` with seq > after, then the live ones, until a
    terminal event (`EventRelay.follow`). Holds a connection of ``pool`` meanwhile."""
    last = max(after, -1)
    block = ["BLOCK", max(1, int(poll * 1000))]
    limit = poll + 1.0
    task = asyncio.current_task()
    cancels = task.cancelling() if task is not None else 0
    try:
        conn = await pool.get_connection()  # type: ignore[no-untyped-call]  # redis-py
    except _Failure as exc:
        raise RelayGone(message_id) from exc
    try:
        blocking: list[Any] = []  # the first read returns at once: a missing key fails fast
        while True:
            args = ["XREAD", "COUNT", _READ_COUNT, *blocking, "STREAMS", key, f"0-{last + 1}"]
            entries = _entries(await _call(conn, args, limit, task, cancels))
            blocking = block
            if not entries:
                args = ["XREVRANGE", key, "+", "-", "COUNT", 1]
                tail = await _call(conn, args, limit, task, cancels)
                if not tail:
                    raise RelayGone(message_id)
                if _seq(tail[0][0]) <= last and _event(tail[0]).get("type") in TERMINAL_TYPES:
                    return  # the answer ended at or before `after`
                continue
            for entry in entries:
                seq = _seq(entry[0])
                if seq != last + 1:
                    raise RelayGone(message_id)
                last = seq
                event = _event(entry)
                yield event
                if event.get("type") in TERMINAL_TYPES:
                    return
    except (*_Failure, ValueError, LookupError) as exc:  # not our entries: as good as gone
        raise RelayGone(message_id) from exc
    finally:
        # Shielded: a second cancel must not leak the connection out of the pool.
        await asyncio.shield(pool.release(conn))


def follow_pool(redis: Redis) -> ConnectionPool:
    """Followers wait in XREAD BLOCK for seconds, beyond the client's short socket timeout
    (``_call`` bounds each read instead), and hold their connection meanwhile: they get a pool
    of their own, so they can never use up the one that rate limits and quotas draw on."""
    pool = redis.connection_pool
    kwargs = {**pool.connection_kwargs, "socket_timeout": None}
    return ConnectionPool(
        connection_class=pool.connection_class, max_connections=_MAX_FOLLOWERS, **kwargs
    )


async def _call(
    conn: Any, args: list[Any], limit: float, task: asyncio.Task[Any] | None, cancels: int
) -> Any:
    """One command on a connection we hold, bounded by ``limit``. A timeout or cancel mid-read
    disconnects it (redis-py), so no reply is left over for the next user of the connection."""
    async with asyncio.timeout(limit):
        await conn.send_command(*args)
        reply = await conn.read_response(timeout=limit + 5.0)
    if task is not None and task.cancelling() > cancels:
        # redis-py can swallow a cancel that lands early in a command (see RedisGuard): a
        # follower whose client left must not go on waiting for events nobody reads.
        raise asyncio.CancelledError
    return reply


def _entries(reply: Any) -> list[Any]:
    """XREAD's reply (RESP2 list or RESP3 map) as [[id, [field, value]], ...]."""
    if not reply:
        return []
    streams = reply.values() if isinstance(reply, dict) else (stream[1] for stream in reply)
    return [entry for entries in streams for entry in entries]


def _seq(entry_id: bytes | str) -> int:
    return int(entry_id[2:]) - 1  # "0-{seq + 1}"


def _event(entry: Any) -> dict[str, Any]:
    event: dict[str, Any] = orjson.loads(entry[1][1])
    return event
