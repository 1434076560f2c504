"""Answers' events mirrored to Redis, so any instance replays and follows them; stops go everywhere.

Keys (``prefix`` = ``mpchat:answer:``)::

    {prefix}{message_id}:events   stream, entry id 0-{seq+1} -> {"e": <the event, JSON>}
                                  MAXLEN ~ max_events; expires live_ttl after the last write
                                  while the answer runs, ttl after its end (then: snapshot)
    {prefix}{message_id}:owner    string, the user id; same expiry as the stream
    {prefix}stop                  pub/sub channel: {"message_id": ..., "user_id": ...}

The life of an answer's events::

    publish() -> per-answer list in memory -> writer task: one pipeline per round for all the
    answers with pending events (a script: XADD..., PEXPIRE, SET owner) -> end(): PEXPIRE ttl
    follow() on any instance (`mpchat.chat.relay_follow`): XREAD the events after `after`,
    then XREAD BLOCK for live ones, until a terminal event; a missing key, a gap in the seqs
    or Redis failing -> RelayGone.

A round that fails loses the events it carried: those answers are no longer mirrored and their
stream is deleted once Redis answers again, so that followers fall back to a snapshot instead of
waiting for events that never come. Writes never raise and never block the producer.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError

from mpchat.chat.relay_follow import TERMINAL_TYPES, RelayGone, follow_pool, follow_stream
from mpchat.limits import UNAVAILABLE, RedisGuard

__all__ = ["TERMINAL_TYPES", "EventRelay", "RelayGone"]

log = logging.getLogger("mpchat.relay")
_SCRIPT_ARGS = 1000  # a script call carries about this many arguments (Redis waits meanwhile)
_MAX_DELETES = 1000  # streams of lost answers deleted per round
_CLOSE_TIMEOUT = 2.0
_LISTEN_TIMEOUT = 5.0  # a pub/sub read returns this often, so health checks run
_BACKOFF_MIN, _BACKOFF_MAX = 0.1, 5.0
_Failure = (RedisError, OSError, TimeoutError)


# One call writes the events of several answers: redis-py spends ~50 µs of our CPU per command,
# ten times what one XADD inside a script costs. KEYS = stream, owner per answer; ARGV = maxlen,
# live ms, ttl ms, then per answer: count, ended (0/1), user id or "", count x (entry id, event).
_WRITE = """
local maxlen, i = ARGV[1], 4
for k = 1, #KEYS, 2 do
  local count, expiry, user = tonumber(ARGV[i]), ARGV[2], ARGV[i + 2]
  if ARGV[i + 1] == '1' then expiry = ARGV[3] end
  i = i + 3
  for _ = 1, count do
    redis.pcall('XADD', KEYS[k], 'MAXLEN', '~', maxlen, ARGV[i], 'e', ARGV[i + 1])
    i = i + 2
  end
  redis.call('PEXPIRE', KEYS[k], expiry)
  if user ~= '' then
    redis.call('SET', KEYS[k + 1], user, 'PX', expiry)
  else
    redis.call('PEXPIRE', KEYS[k + 1], expiry)
  end
end
return 1
"""


@dataclass(slots=True)
class _Pending:
    user_id: str | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    ended: bool = False


class EventRelay:
    """Mirrors answers' events to Redis and carries stop requests; one per app."""

    def __init__(
        self,
        redis: Redis,
        *,
        ttl: float,
        max_events: int = 20000,
        prefix: str = "mpchat:answer:",
        live_ttl: float = 3600.0,
        on_degraded: Callable[[bool], None] | None = None,
    ) -> None:
        self._redis = redis
        self._ttl_ms = max(1, int(ttl * 1000))
        self._live_ms = max(1, int(live_ttl * 1000))
        self._max_events = max_events
        self._prefix = prefix
        self._channel = f"{prefix}stop"
        # A round carries many answers: more time than one command needs.
        self._guard = RedisGuard(redis, name="answer relay", op_timeout=1.0, on_change=on_degraded)
        self._pending: dict[str, _Pending] = {}
        self._dropping: set[str] = set()  # answers that lost events: not mirrored any more
        self._cleanup: dict[str, bool] = {}  # their streams to delete -> whether they ended
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._writer: asyncio.Task[None] | None = None
        self._handlers: list[Callable[[str | None, str | None], None]] = []
        self._subscriber: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()  # set while the stop channel is subscribed
        self._follow_pool = follow_pool(redis)
        self._closed = False

    def _key(self, message_id: str) -> str:
        return f"{self._prefix}{message_id}:events"

    def _owner_key(self, message_id: str) -> str:
        return f"{self._prefix}{message_id}:owner"

    # -- writing --------------------------------------------------------------------------

    def publish(self, message_id: str, user_id: str, events: Sequence[dict[str, Any]]) -> None:
        """Queue events (with increasing ``seq``) for the writer; never raises or blocks."""
        if self._closed or not events:
            return
        pending = self._pending.setdefault(message_id, _Pending())
        pending.user_id = user_id
        pending.events.extend(events)
        self._kick()

    def end(self, message_id: str) -> None:
        """The terminal event was published: the keys expire ``ttl`` after it is written."""
        if self._closed:
            return
        self._pending.setdefault(message_id, _Pending()).ended = True
        self._kick()

    async def flush(self) -> None:
        """Wait until what was published so far has been written (or dropped)."""
        if self._writer is not None and not self._writer.done():
            await self._idle.wait()

    def _kick(self) -> None:
        self._idle.clear()
        self._wake.set()
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(
                self._write_forever(), name="answer-relay-writer"
            )

    async def _write_forever(self) -> None:
        while True:
            if not self._pending and not (self._cleanup and not self._guard.degraded):
                self._idle.set()
                if self._closed:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            batch, self._pending = self._pending, {}
            try:
                await self._write(batch)
            except Exception:  # a bug (an event orjson cannot encode) must not stop the writer
                log.exception("answer relay: a round of %d answers was dropped", len(batch))
                self._lose(batch)

    async def _write(self, batch: dict[str, _Pending]) -> None:
        pipe = self._redis.pipeline(transaction=False)
        keys: list[str] = []
        args: list[bytes | str | int] = []
        written, broken = {}, {}
        for message_id, pending in batch.items():
            if message_id in self._dropping:
                if pending.ended:
                    self._dropping.discard(message_id)
                    self._cleanup[message_id] = True
                continue
            try:
                encoded = [orjson.dumps(event) for event in pending.events]
            except TypeError:  # a bug upstream of us; only this answer pays for it
                log.exception("answer relay: answer %s has an event JSON cannot hold", message_id)
                broken[message_id] = pending
                continue
            written[message_id] = pending
            keys += (self._key(message_id), self._owner_key(message_id))
            args += (len(encoded), int(pending.ended), pending.user_id or "")
            for event, data in zip(pending.events, encoded, strict=True):
                args += (f"0-{event['seq'] + 1}", data)
            if len(args) >= _SCRIPT_ARGS:
                self._queue_script(pipe, keys, args)
                keys, args = [], []
        if keys:
            self._queue_script(pipe, keys, args)
        cleanup = dict(itertools.islice(self._cleanup.items(), _MAX_DELETES))
        for message_id, ended in cleanup.items():
            pipe.delete(self._key(message_id))
            if ended:
                pipe.pexpire(self._owner_key(message_id), self._ttl_ms)
        self._lose(broken)
        reply = await self._guard.run(lambda _: pipe.execute(raise_on_error=False))
        if reply is UNAVAILABLE:
            self._lose(written)
            return
        for message_id, ended in cleanup.items():
            if self._cleanup.get(message_id) is ended:  # not ended meanwhile
                del self._cleanup[message_id]

    def _queue_script(self, pipe: Pipeline, keys: list[str], args: list[bytes | str | int]) -> None:
        pipe.eval(_WRITE, len(keys), *keys, self._max_events, self._live_ms, self._ttl_ms, *args)

    def _lose(self, batch: dict[str, _Pending]) -> None:
        """These answers' events are gone: stop mirroring them, delete their streams later."""
        for message_id, pending in batch.items():
            if not pending.ended:
                self._dropping.add(message_id)
            self._cleanup[message_id] = self._cleanup.get(message_id, False) or pending.ended

    # -- reading --------------------------------------------------------------------------

    async def owner(self, message_id: str) -> str | None:
        """The user id recorded for the answer; None if unknown, expired or Redis is down."""
        reply = await self._guard.run(lambda r: r.get(self._owner_key(message_id)))
        if reply is UNAVAILABLE or reply is None:
            return None
        return reply.decode() if isinstance(reply, bytes) else str(reply)

    def follow(
        self, message_id: str, *, after: int, poll: float = 5.0
    ) -> AsyncIterator[dict[str, Any]]:
        """The events with seq > after, then the live ones, until a terminal event.

        Raises RelayGone when they are not all kept, or Redis fails. Holds a connection of
        the relay's own pool meanwhile. Close it (``contextlib.aclosing``) or cancel it.
        """
        return follow_stream(self._follow_pool, self._key(message_id), message_id,
                             after=after, poll=poll)

    # -- stopping -------------------------------------------------------------------------

    async def stop(self, *, message_id: str | None = None, user_id: str | None = None) -> None:
        """Ask every instance to stop one answer, or all of a user's answers."""
        if message_id is None and user_id is None:
            raise ValueError("stop needs a message_id or a user_id")
        payload = orjson.dumps({"message_id": message_id, "user_id": user_id})
        reply = await self._guard.run(lambda r: r.publish(self._channel, payload))
        if reply is UNAVAILABLE:
            self._dispatch(message_id, user_id)  # at least this instance's answers stop

    def on_stop(self, callback: Callable[[str | None, str | None], None]) -> None:
        """Call ``callback(message_id, user_id)`` for every stop request of any instance."""
        self._handlers.append(callback)
        if self._subscriber is None and not self._closed:
            self._subscriber = asyncio.get_running_loop().create_task(
                self._subscribe_forever(), name="answer-relay-stops"
            )

    def _dispatch(self, message_id: str | None, user_id: str | None) -> None:
        for handler in list(self._handlers):
            try:
                handler(message_id, user_id)
            except Exception:
                log.exception("answer relay: a stop handler failed")

    async def _subscribe_forever(self) -> None:
        backoff, failing = _BACKOFF_MIN, False
        while True:
            pubsub = self._redis.pubsub()
            try:
                await pubsub.subscribe(self._channel)
                while True:
                    message = await pubsub.get_message(timeout=_LISTEN_TIMEOUT)
                    if message is None:
                        continue
                    if message["type"] == "subscribe":
                        self._subscribed.set()
                        backoff = _BACKOFF_MIN
                        if failing:
                            failing = False
                            log.warning("answer relay: stop requests are shared again")
                    elif message["type"] == "message":
                        self._on_message(message["data"])
            except Exception as exc:  # whatever it was, the app goes on; so do we, a bit later
                if not failing:
                    failing = True
                    log.warning("answer relay: stop channel lost, retrying: %r", exc)
            finally:
                self._subscribed.clear()
                with contextlib.suppress(*_Failure):
                    await asyncio.shield(pubsub.aclose())  # type: ignore[no-untyped-call]
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, _BACKOFF_MAX)

    def _on_message(self, data: bytes | str) -> None:
        try:
            request = orjson.loads(data)
            message_id, user_id = request["message_id"], request["user_id"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            log.warning("answer relay: malformed stop request ignored")
            return
        if isinstance(message_id, str | None) and isinstance(user_id, str | None):
            self._dispatch(message_id, user_id)

    async def aclose(self) -> None:
        """Flush pending writes (at most 2 s), then stop the writer and the subscriber."""
        self._closed = True
        writer, subscriber = self._writer, self._subscriber
        if writer is not None:
            self._wake.set()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_CLOSE_TIMEOUT):
                    await asyncio.shield(writer)
            await _cancel(writer)
        if subscriber is not None:
            await _cancel(subscriber)
        self._writer = self._subscriber = None
        await self._follow_pool.aclose()  # followers still waiting get RelayGone


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
