"""One answer as its followers see it: numbered events, kept in order, readable by many.

An answer is produced by a task of the service (`mpchat.chat.producer`), not by the
connection that asked for it. The producer `publish`es events; each gets the next
``seq`` (``start`` is 0) and is encoded once, as the NDJSON line every follower writes.
Any number of followers read the lines after a seq they already have (`lines_after`),
live, until the terminal event (``done``, ``retract`` or ``error``).

    Answer ── publish(event) ──▶ lines[seq] ──▶ follower 1 (the request that asked)
                                            ──▶ follower 2 (a resumed connection)
                                            ──▶ relay (Redis, for other instances)
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson

from mpchat.errors import MpchatError
from mpchat.providers.types import ToolCall

__all__ = ["PING", "TERMINAL", "Answer", "Event", "ndjson"]

Event = dict[str, Any]
TERMINAL = frozenset(("done", "retract", "error"))
PING = b'{"type":"ping"}\n'


def ndjson(event: Event) -> bytes:
    """The mini program's wire format (API.md): one JSON object a line."""
    return orjson.dumps(event) + b"\n"


class Answer:
    """The state and the events of one answer; written by its producer only."""

    def __init__(
        self,
        *,
        message_id: str,
        user_id: str,
        conversation_id: str,
        question_id: str,
        model: str,
        on_publish: Callable[[Answer, Event], None] | None = None,
        encode: Callable[[Event], bytes] = ndjson,
        ping_line: bytes = PING,
        stored: bool = True,
    ) -> None:
        self.message_id = message_id
        self.user_id = user_id
        self.conversation_id = conversation_id
        self.question_id = question_id
        self.model = model  # the model of the route that serves it, once known
        self.stored = stored  # it has a row in storage (else: stateless, no resume)
        self.ping_line = ping_line
        self.provider: str | None = None
        self.lines: list[bytes] = []
        self.released: list[str] = []  # the answer's text, as published in deltas
        self.saved = 0  # how many of those pieces storage has
        self.pings = 0  # silences noticed by `Answers` (each becomes a ping line)
        self.start_published = False
        self.content = ""  # the stored answer, once it ended
        self.status = "streaming"
        self.finish_reason = "stop"
        self.usage: dict[str, int] = {}
        self.tool_calls: list[dict[str, Any]] = []  # whole, as its pieces came
        self.quota: dict[str, Any] | None = None  # the user's quota once settled (done.quota)
        self.timings: dict[str, float] = {}  # ms per phase, once settled (chat.timings)
        self.failure: MpchatError | None = None
        self.cancel_reason: str | None = None
        self.settling = False  # the producer is giving back what it held: too late to stop
        self.ended_at: float | None = None
        self.task: asyncio.Task[None] | None = None
        self._on_publish = on_publish
        self._encode = encode
        self._started = asyncio.Event()
        self._ended = asyncio.Event()
        self._changed = asyncio.Event()

    # -- the producer's side ---------------------------------------------------------------

    @property
    def next_seq(self) -> int:
        return len(self.lines)

    @property
    def started(self) -> bool:
        return self._started.is_set()

    @property
    def ended(self) -> bool:
        return self._ended.is_set()

    def publish(self, event: Event) -> None:
        """Number ``event``, keep it, wake the followers."""
        if self.ended:
            raise RuntimeError("an ended answer takes no more events")
        event["seq"] = len(self.lines)
        self.lines.append(self._encode(event))
        if event["type"] == "start":
            self.start_published = True
            self._started.set()
        if self._on_publish is not None:
            self._on_publish(self, event)
        self._wake()

    def add_tool_call(self, piece: ToolCall) -> None:
        """Join a piece of a tool call to the call of its index."""
        for call in self.tool_calls:
            if call["index"] == piece.index:
                call["function"]["arguments"] += piece.arguments
                call["id"] = call["id"] or piece.id
                call["function"]["name"] = call["function"]["name"] or piece.name
                return
        self.tool_calls.append({"index": piece.index, "id": piece.id, "type": "function",
                                "function": {"name": piece.name,
                                             "arguments": piece.arguments}})

    def end(self, now: float) -> None:
        """The terminal event was published (or the answer ended before its start)."""
        self.ended_at = now
        self._started.set()  # whoever waits for the start learns that it ended instead
        self._ended.set()
        self._wake()

    def ping(self) -> None:
        """A silence was noticed: every follower writes a ping line."""
        self.pings += 1
        self._wake()

    def _wake(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    # -- the followers' side ---------------------------------------------------------------

    async def wait_started(self) -> None:
        """Until ``start`` was published, or the answer ended without one."""
        await self._started.wait()

    async def wait_ended(self) -> None:
        await self._ended.wait()

    def cancel(self, reason: str) -> bool:
        """Ask the producer to stop (``cancelled``, ``deleted``, ``client_gone``, ``shutdown``).

        The producer settles the answer itself; False when it has already ended.
        """
        if self.ended or self.settling or self.cancel_reason is not None:
            return False
        self.cancel_reason = reason
        if self.task is not None:
            self.task.cancel()
        return True

    async def lines_after(self, after: int) -> AsyncIterator[bytes]:
        """The encoded events after seq ``after``, then the live ones, to the end.

        Lines that piled up since the last read leave together as one chunk (one write to
        the client). A ping line follows each silence `Answers` notices (no timer per
        follower).
        """
        sent = max(after + 1, 0)
        pings = self.pings
        while True:
            if sent < len(self.lines):
                batch = self.lines[sent:]
                sent += len(batch)
                yield batch[0] if len(batch) == 1 else b"".join(batch)
                continue
            if self.ended:
                return
            if pings != self.pings:
                pings = self.pings
                yield self.ping_line
                continue
            await self._changed.wait()
