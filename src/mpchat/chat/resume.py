"""Following an answer from any connection: its exact events, or a snapshot of what is stored.

`open_follow` finds the answer (or raises `NotFound`, the same for an unknown id and for
another user's) and returns the NDJSON lines after seq ``after``, live to the end. The
sources, best first:

1. this instance's copy (the answer is produced here, or ended here recently);
2. the relay (Redis): the exact events, produced on any instance;
3. storage: a ``snapshot`` of the text so far, which replaces what the client shows; for an
   answer still produced elsewhere (no relay), a new snapshot each time the stored text
   grows, then the answer's last event once it is settled.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncEngine

from mpchat.chat.answer import PING, Event
from mpchat.chat.answers import Answers
from mpchat.errors import NotFound
from mpchat.storage import answers as stored
from mpchat.storage.crypto import Keyring

__all__ = ["open_follow"]


async def open_follow(
    *,
    answers: Answers,
    engine: AsyncEngine,
    keyring: Keyring,
    message_id: str,
    user_id: str,
    after: int,
    ping_interval: float,
    poll_interval: float,
) -> AsyncIterator[bytes]:
    """The lines after seq ``after`` of the user's answer; `NotFound` if there is none."""
    local = answers.find(message_id, user_id)
    if local is not None:
        return local.lines_after(after, ping_interval=ping_interval)
    relay = answers.relay
    if relay is not None and await relay.owner(message_id) == user_id:
        return _relayed(relay, engine, keyring, message_id, user_id, after, poll_interval)
    row = await stored.read_answer(engine, keyring, message_id=message_id, user_id=user_id)
    if row is None:
        raise NotFound()
    return _from_storage(engine, keyring, row, after, poll_interval)


async def _relayed(
    relay: Any, engine: AsyncEngine, keyring: Keyring, message_id: str, user_id: str,
    after: int, poll_interval: float,
) -> AsyncIterator[bytes]:
    from mpchat.chat.relay import RelayGone

    try:
        async for event in relay.follow(message_id, after=after):
            after = int(event["seq"])
            yield orjson.dumps(event) + b"\n"
        return
    except RelayGone:
        pass
    row = await stored.read_answer(engine, keyring, message_id=message_id, user_id=user_id)
    if row is None:  # nothing was said and the answer's events are gone
        yield _line({"type": "error", **NotFound().to_dict()})
        return
    async for line in _from_storage(engine, keyring, row, after, poll_interval):
        yield line


async def _from_storage(
    engine: AsyncEngine,
    keyring: Keyring,
    row: stored.StoredAnswer,
    after: int,
    poll_interval: float,
) -> AsyncIterator[bytes]:
    while row.status == "streaming":
        # Produced on an instance we cannot hear from: its stored text, as it grows.
        covered = row.event_seq if row.event_seq is not None else -1
        if covered > after and row.content:
            after = covered
            yield _line({"type": "snapshot", "text": row.content, "seq": covered})
        else:
            yield PING
        await asyncio.sleep(poll_interval)  # storage has no notifications to wait on
        found = await stored.read_answer(engine, keyring, message_id=row.id,
                                         user_id=row.user_id)
        if found is None:
            yield _line({"type": "error", **NotFound().to_dict()})
            return
        row = found
    last = row.event_seq if row.event_seq is not None else 1
    meta = row.meta
    if row.status == "retracted":
        events: list[Event] = [
            {"type": "retract", "reason": "content_safety", "seq": last - 1},
            {"type": "done", "finish_reason": "content_filter", "usage": _usage(row),
             "seq": last},
        ]
    else:
        events = [{"type": "snapshot", "text": row.content, "seq": last - 1}]
        if isinstance(meta.get("error"), dict):
            events.append({"type": "error", **meta["error"], "seq": last})
        else:
            events.append({"type": "done", "finish_reason": meta.get("finish_reason", "stop"),
                           "usage": _usage(row), "seq": last})
    for event in events:
        if event["seq"] > after:
            yield _line(event)


def _usage(row: stored.StoredAnswer) -> dict[str, int]:
    return {"prompt_tokens": row.prompt_tokens or 0,
            "completion_tokens": row.completion_tokens or 0}


def _line(event: Event) -> bytes:
    return orjson.dumps(event) + b"\n"
