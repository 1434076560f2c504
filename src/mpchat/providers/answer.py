"""One attempt's answer as it is read: bounded, and turned into the events the chat layer takes.

Everything handled together (the lines of one network read) leaves as few events as it can:
consecutive texts of one kind are joined, so deltas that arrived together leave as one
`Delta` (one line and one write to the client), which under load lets the work per delta
fall instead of piling up. Order between reasoning and answer text is kept.
"""

from __future__ import annotations

from dataclasses import dataclass

from mpchat.providers.chunks import Piece, decode_chunk
from mpchat.providers.sse import DEFAULT_MAX_LINE_BYTES
from mpchat.providers.types import (
    Delta,
    Finish,
    ProviderConnectionError,
    ProviderError,
    ProviderInvalid,
    Reasoning,
    StreamEvent,
    ToolCall,
    Usage,
)

__all__ = ["Answer", "StreamLimits"]


@dataclass(frozen=True, slots=True)
class StreamLimits:
    """What one answer may take, whatever the provider sends."""

    max_answer_chars: int = 32000
    # Thinking is usually longer than the answer it leads to (DeepSeek allows 32K tokens
    # of it); None means four times the answer's limit.
    max_reasoning_chars: int | None = None
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES

    @property
    def reasoning_chars(self) -> int:
        if self.max_reasoning_chars is not None:
            return self.max_reasoning_chars
        return 4 * self.max_answer_chars

    @property
    def body_bytes(self) -> int:
        """The largest non-streamed (JSON) answer taken: room for the longest answer and
        reasoning the limits above let through, each character escaped (``\\uXXXX``, six
        bytes), and never less than one SSE line. Anything bigger is no answer but an
        attack, and ends as `ProviderInvalid`; a long answer within it is cut at
        ``max_answer_chars`` with "length", as a stream is."""
        return max(self.max_line_bytes,
                   6 * (self.max_answer_chars + self.reasoning_chars) + (64 << 10))


class Answer:
    """The state of one answer: what was said, how it ended, whether to read on."""

    __slots__ = ("_events", "_kind", "_limits", "_max_chars", "_texts", "chars", "cut", "done",
                 "error", "finish", "reasoning_chars", "tool_calls", "usage")

    def __init__(self, limits: StreamLimits) -> None:
        self._limits = limits
        self._max_chars = limits.max_answer_chars
        self.chars = 0
        self.reasoning_chars = 0
        self.tool_calls = 0  # pieces of tool calls (they count against the answer's size)
        self.finish: str | None = None
        self.usage: Usage | None = None
        self.done = False  # [DONE] was read
        self.cut = False  # a limit was reached: the answer ends here with "length"
        self.error: ProviderError | None = None  # raised once what came before it has left
        self._events: list[StreamEvent] = []
        self._kind: type[Delta] | type[Reasoning] = Delta
        self._texts: list[str] = []

    @property
    def stopped(self) -> bool:
        return self.done or self.cut or self.error is not None

    def take_lines(self, lines: list[bytes]) -> None:
        """Read SSE lines until the answer stops (``[DONE]``, a limit, an invalid chunk)."""
        for line in lines:
            # The SSE reader's sse_data, inlined: this loop is the hot path of every answer.
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                self.done = True
                return
            try:
                piece = decode_chunk(data)
            except ProviderError as exc:
                self.error = exc
                return
            self.take(piece)
            if self.cut:
                return

    def take(self, piece: Piece) -> None:
        """One decoded chunk (or a whole non-streamed completion)."""
        text, reasoning, finish, usage, tools = piece
        if usage is not None:
            self.usage = usage
        if finish is not None:
            self.finish = finish
        if reasoning:
            self._reason(reasoning)
        if tools:
            self._call(tools)
        if text:
            if self._kind is Delta and not self.cut and self.chars + len(text) <= self._max_chars:
                self._texts.append(text)  # the common case, without `_answer`'s calls
                self.chars += len(text)
            else:
                self._answer(text)

    def _call(self, tools: list[ToolCall]) -> None:
        """Tool calls leave as they come, in order; their size counts as answer text."""
        for call in tools:
            if self.cut:
                return
            size = len(call.arguments) + len(call.name or "") + len(call.id or "")
            if self.chars + size > self._max_chars:
                self.cut = True  # a cut-off call is no call: it is left out
                return
            self.chars += size
            self.tool_calls += 1
            if self._texts:
                self._events.append(self._kind("".join(self._texts)))
                self._texts = []
            self._events.append(call)

    def _reason(self, text: str) -> None:
        room = self._limits.reasoning_chars - self.reasoning_chars
        self._add(Reasoning, self._bounded(text, room))
        self.reasoning_chars += len(text)

    def _answer(self, text: str) -> None:
        if self.cut:
            return
        text = self._bounded(text, self._max_chars - self.chars)
        self.chars += len(text)
        self._add(Delta, text)

    def _bounded(self, text: str, room: int) -> str:
        if len(text) > room:
            self.cut = True
            return text[: max(room, 0)]
        return text

    def _add(self, kind: type[Delta] | type[Reasoning], text: str) -> None:
        if not text:
            return
        if kind is not self._kind and self._texts:
            self._events.append(self._kind("".join(self._texts)))
            self._texts = []
        self._kind = kind
        self._texts.append(text)

    def drain(self) -> list[StreamEvent]:
        """The events gathered since the last drain, consecutive texts of a kind joined."""
        if self._texts:
            self._events.append(self._kind("".join(self._texts)))
            self._texts = []
        events, self._events = self._events, []
        return events

    def said_anything(self) -> bool:
        return bool(self.chars or self.reasoning_chars)

    def end(self, *, eof: bool) -> Finish:
        """The `Finish` of an answer whose reading stopped, or the error it is."""
        if self.error is not None:
            raise self.error
        if self.cut:
            return Finish("length", self.usage)
        if not self.chars and self.finish in (None, "stop"):
            # No text at all, "normally" ended (reasoning alone is no answer either): stored
            # "complete", it would read as the model having nothing to say. A provider's own
            # "length" or "content_filter" with no text is its answer, and passes.
            raise ProviderInvalid("provider ended the stream without an answer")
        if eof and not self.done and self.finish is None:
            raise ProviderConnectionError("stream ended before the answer did")
        return Finish(self.finish or "stop", self.usage)
