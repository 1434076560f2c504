"""Following an answer from any connection: its exact events, or a snapshot of what is stored.

`open_follow` finds the answer (or raises `NotFound`, the same for an unknown id and for
another user's) and returns the NDJSON lines after seq ``after``, live to the end. The
sources, best first:

1. this instance's copy (the answer is produced here, or ended here recently);
2. the relay (Redis): the exact events, produced on any instance (pings while it is silent;
   storage when the answer was settled without its last event reaching the relay: its
   instance died);
3. storage: a ``snapshot`` of the text so far, which replaces what the client shows; for an
   answer still produced elsewhere (no relay), a new snapshot each time the stored text
   grows, then the answer's last event once it is settled.
"""

from __future__ import annotations

import asyncio
import logging
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

log = logging.getLogger("mpchat.chat")
_GONE: Event = {"type": "gone"}  # the relay no longer has the events after ``after``


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
        return local.lines_after(after)
    relay = answers.relay
    if relay is not None and await relay.owner(message_id) == user_id:
        return _relayed(relay, engine, keyring, message_id, user_id, after, ping_interval,
                        poll_interval)
    row = await stored.read_answer(engine, keyring, message_id=message_id, user_id=user_id)
    if row is None:
        raise NotFound()
    return _from_storage(engine, keyring, row, after, poll_interval)


async def _relayed(
    relay: Any, engine: AsyncEngine, keyring: Keyring, message_id: str, user_id: str,
    after: int, ping_interval: float, poll_interval: float,
) -> AsyncIterator[bytes]:
    from mpchat.chat.relay import RelayGone

    # The relay's events come through a queue, so that its silence can be noticed: an
    # instance killed mid-answer never writes the last event, and its stream stays for the
    # relay's live expiry (an hour). While it is silent we ping, and look at the stored row
    # every poll_interval: settled (by its instance or, after a crash, by the sweeper) and
    # still nothing from the relay one poll later -> the rest comes from storage.
    queue: asyncio.Queue[Event | None] = asyncio.Queue()

    async def pump() -> None:
        try:
            async for event in relay.follow(message_id, after=after):
                queue.put_nowait(event)
        except RelayGone:
            queue.put_nowait(_GONE)
        except Exception:  # a bug in the relay must not leave this follower hanging
            log.exception("answer %s: following the relay failed", message_id)
            queue.put_nowait(_GONE)
        else:
            queue.put_nowait(None)

    pumping = asyncio.create_task(pump(), name="answer-relay-follow")
    quiet, settled_seen = 0.0, False
    try:
        while True:
            try:
                if queue.empty():  # arm a timer only when we would wait
                    async with asyncio.timeout(poll_interval):
                        event = await queue.get()
                else:
                    event = queue.get_nowait()
            except TimeoutError:
                quiet += poll_interval
                if await _settled(engine, keyring, message_id, user_id):
                    if settled_seen:
                        break  # its last event will never reach the relay
                    settled_seen = True  # it may still be on its way: one more poll
                else:
                    settled_seen = False
                if quiet >= ping_interval:
                    quiet = 0.0
                    yield PING
                continue
            if event is None:
                return
            if event is _GONE:
                break
            quiet, settled_seen = 0.0, False
            after = int(event["seq"])
            yield _line(event)
    finally:
        pumping.cancel()
        await asyncio.wait({pumping})
    row = await stored.read_answer(engine, keyring, message_id=message_id, user_id=user_id)
    if row is None:  # nothing was said and the answer's events are gone
        yield _line({"type": "error", **NotFound().to_dict(), "seq": after + 1})
        return
    async for line in _from_storage(engine, keyring, row, after, poll_interval):
        yield line


async def _settled(engine: AsyncEngine, keyring: Keyring, message_id: str, user_id: str) -> bool:
    """Whether the answer's row is no longer ``streaming`` (or gone); False if unknown."""
    try:
        row = await stored.read_answer(engine, keyring, message_id=message_id, user_id=user_id)
    except Exception:
        log.warning("answer %s: could not read its row", message_id, exc_info=True)
        return False
    return row is None or row.status != "streaming"


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
            yield _line({"type": "error", **NotFound().to_dict(), "seq": after + 1})
            return
        row = found
    last = row.event_seq if row.event_seq is not None else 1
    meta = row.meta
    if row.status == "truncated" and meta.get("finish_reason") == "interrupted" and after >= last:
        # Settled after its instance died (storage.answers.settle_stale), which numbered the
        # end after the last *stored* seq. That instance may have sent this client more than
        # it stored (up to one save interval): the client holds seqs at or beyond our end and
        # text we no longer have. Its end comes after what it holds, the snapshot replacing it.
        last = after + 2
    if row.status == "retracted":
        events: list[Event] = [
            {"type": "retract", "reason": "content_safety", "seq": last - 1},
            {"type": "done", "finish_reason": "content_filter", "usage": _usage(row),
             "model": meta.get("model"), "seq": last},
        ]
    else:
        events = [{"type": "snapshot", "text": row.content, "seq": last - 1}]
        if isinstance(meta.get("error"), dict):
            events.append({"type": "error", **meta["error"], "seq": last})
        else:
            events.append({"type": "done", "finish_reason": meta.get("finish_reason", "stop"),
                           "usage": _usage(row), "model": meta.get("model"), "seq": last})
    if meta.get("timings") and events[-1]["type"] == "done":
        events[-1]["timings"] = meta["timings"]  # as the live `done` carried them
    for event in events:
        if event["seq"] > after:
            yield _line(event)


def _usage(row: stored.StoredAnswer) -> dict[str, int]:
    return {"prompt_tokens": row.prompt_tokens or 0,
            "completion_tokens": row.completion_tokens or 0}


def _line(event: Event) -> bytes:
    return orjson.dumps(event) + b"\n"
