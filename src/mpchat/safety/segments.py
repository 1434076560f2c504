"""How an answer is cut into the pieces WeChat checks: few and large, at sentence ends, in time.

WeChat's msgSecCheck takes up to 2,500 characters a call and the whole app may make about
4,000 calls a minute, so an answer is checked in as few calls as its latency bound allows.
Text waits in a buffer; the buffer becomes a segment when it is

* *old enough*: its first character has waited the policy's age for this segment (the
  k-th segment of an answer uses ``ages[k]``, the last age repeating), or
* *large enough*: it would no longer fit one call.

A segment is cut at the last sentence end it holds (else the last pause, else wherever the
text stands), so WeChat judges whole sentences and a partial sentence waits for the next
one. After a cut inside running text, the next segment is sent with the last characters of
the one before as context, so a word on the cut is seen whole. The last segment of an answer
takes as much of the answer before it as fits the call: an answer of up to 2,500 characters is
judged whole by its last check, at no extra call.

`Segmenter` does no I/O and keeps no timers: it is told the time (``clock``) and says when
its buffer will be due (``due_at``), for the caller's timer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from mpchat.wechat.security import MAX_CONTENT_CHARS

__all__ = [
    "CONTEXT_CHARS",
    "STREAM_POLICY",
    "STRICT_POLICY",
    "Segment",
    "SegmentPolicy",
    "Segmenter",
]

_SENTENCE_ENDS = frozenset("。！？!?\n…")
_PAUSES = frozenset("，、；：,;:）)」』”' \t")
# Sent before a segment cut inside running text (and counted in the call's characters).
CONTEXT_CHARS = 20


@dataclass(frozen=True, slots=True)
class SegmentPolicy:
    """``ages[k]``: seconds the k-th segment's first character may wait (the last repeats)."""

    ages: tuple[float, ...]
    max_chars: int = MAX_CONTENT_CHARS - CONTEXT_CHARS

    def __post_init__(self) -> None:
        if not self.ages or any(age < 0 for age in self.ages):
            raise ValueError("ages must be a non-empty sequence of seconds >= 0")
        if not CONTEXT_CHARS < self.max_chars <= MAX_CONTENT_CHARS - CONTEXT_CHARS:
            raise ValueError(f"max_chars must be in ({CONTEXT_CHARS}, "
                             f"{MAX_CONTENT_CHARS - CONTEXT_CHARS}]")

    def age(self, index: int) -> float:
        return self.ages[min(index, len(self.ages) - 1)]


# Stream mode: the text is on the screen already; WeChat judges it within 20 s (plus its own
# time), and an answer of normal length costs one call.
STREAM_POLICY = SegmentPolicy(ages=(20.0,))
# Strict mode: nothing shows before its check passed. The first words go at once; each later
# segment may wait twice as long as the one before, because a reader (5-10 characters a
# second) falls further behind a model (40-80) with every second: the burst of text arrives
# before the reader has finished the one before it.
STRICT_POLICY = SegmentPolicy(ages=(0.0, 1.0, 2.0, 4.0, 8.0, 16.0))


@dataclass(frozen=True, slots=True)
class Segment:
    text: str  # the answer's own text in this segment
    context: str = ""  # text before it, sent along so that WeChat sees it in its setting

    @property
    def check_text(self) -> str:
        return self.context + self.text


class Segmenter:
    """One answer's buffer of unchecked text; `add` returns the segments that are due."""

    def __init__(self, policy: SegmentPolicy, *, clock: Callable[[], float]) -> None:
        self.policy = policy
        self._clock = clock
        self._buffer = ""
        self._marks: list[tuple[int, float]] = []  # (offset in the buffer, arrival time)
        self._before = ""  # the end of the text already cut, up to one call's worth
        self._context = ""  # for the next segment, after a cut inside running text
        self.count = 0  # segments cut so far

    @property
    def pending(self) -> str:
        return self._buffer

    def add(self, text: str) -> list[Segment]:
        if text:
            self._marks.append((len(self._buffer), self._clock()))
            self._buffer += text
        return self.take_due()

    def due_at(self) -> float | None:
        """When the buffer becomes old enough (its clock's time); None when it is empty."""
        if not self._buffer:
            return None
        return self._marks[0][1] + self.policy.age(self.count)

    def take_due(self) -> list[Segment]:
        done: list[Segment] = []
        now = self._clock()
        while self._buffer:
            if len(self._buffer) > self.policy.max_chars:
                done.append(self._cut(self._cut_point(self.policy.max_chars)))
                continue
            due = self.due_at()
            if due is None or now < due:
                break
            done.append(self._cut(self._cut_point(len(self._buffer))))
        return done

    def rest(self) -> Segment | None:
        """The whole buffer as the answer's last segment, with as much of the answer before
        it as one call takes; None when there is nothing left."""
        if not self._buffer.strip():
            self._buffer, self._marks = "", []
            return None
        text = self._buffer
        room = MAX_CONTENT_CHARS - len(text)
        context = self._before[-room:] if room > 0 else ""
        self._buffer, self._marks = "", []
        self.count += 1
        return Segment(text, context)

    def _cut_point(self, limit: int) -> tuple[int, bool]:
        """Where to cut within the first ``limit`` characters; whether it is a boundary."""
        window = self._buffer[:limit]
        for stops in (_SENTENCE_ENDS, _PAUSES):
            for index in range(len(window) - 1, -1, -1):
                if window[index] in stops:
                    return index + 1, True
        return limit, False

    def _cut(self, point: tuple[int, bool]) -> Segment:
        size, at_boundary = point
        text = self._buffer[:size]
        segment = Segment(text, self._context)
        self._context = "" if at_boundary else text[-CONTEXT_CHARS:]
        self._before = (self._before + text)[-MAX_CONTENT_CHARS:]
        self._drop(size)
        self.count += 1
        return segment

    def _drop(self, size: int) -> None:
        self._buffer = self._buffer[size:]
        if not self._buffer:
            self._marks = []
            return
        # The character now first arrived with the last piece that started at or before it.
        first = max(i for i, (offset, _) in enumerate(self._marks) if offset <= size)
        self._marks = [(max(offset - size, 0), at) for offset, at in self._marks[first:]]
