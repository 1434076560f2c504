"""The streaming output guard: release model text as it arrives, never a listed word.

A listed word may arrive split over provider chunks (``赌`` then ``博``, or ``赌 `` then
``\u200b博``), so each ``feed`` releases only the text that cannot be the start of a hit: the
tail that could still grow into one is held back. That tail is at most the longest listed
word, the separators allowed between its characters (``max_gap`` each) and any invisible
characters; usually it is empty or a character or two. Whatever was released before a word
started is all the client ever sees of it: on a hit, the caller retracts the answer.

One guard per streamed answer; it is not thread-safe and does no I/O.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

from mpchat.safety.wordfilter import Hit, WordFilter

__all__ = ["GuardResult", "OutputGuard"]


class GuardResult(NamedTuple):
    text: str  # safe to send now; may be ""
    hit: Hit | None  # span in the whole answer; once set, every later result repeats it


class OutputGuard:
    """Feed it the answer piece by piece; send what it returns; ``flush`` at the end."""

    def __init__(self, word_filter: WordFilter) -> None:
        self._filter = word_filter
        self._pending = ""  # received, not yet released
        self._released = 0  # characters of the answer released so far
        # Folded tail of the released text: enough for word boundaries and gap lengths.
        self._left = ""
        self._hit: Hit | None = None
        self._flushed = False

    @property
    def hit(self) -> Hit | None:
        return self._hit

    @property
    def held(self) -> str:
        """The text received but not yet released."""
        return self._pending

    def feed(self, piece: str) -> GuardResult:
        if self._flushed:
            raise RuntimeError("the guard was flushed; start a new one for a new answer")
        if self._hit is not None:
            return GuardResult("", self._hit)
        self._pending += piece
        return self._check(final=False)

    def flush(self) -> GuardResult:
        """Check and release what was held back; the answer is complete."""
        if self._flushed:
            raise RuntimeError("the guard was already flushed")
        self._flushed = True
        if self._hit is not None:
            return GuardResult("", self._hit)
        return self._check(final=True)

    def _check(self, *, final: bool) -> GuardResult:
        hits, hold = self._filter.scan(self._pending, final=final, left=self._left)
        if hits:
            first = min(hits, key=lambda h: h.start)
            self._hit = dataclasses.replace(
                first, start=self._released + first.start, end=self._released + first.end
            )
            return GuardResult("", self._hit)
        released, self._pending = self._pending[:hold], self._pending[hold:]
        if released:
            self._released += len(released)
            keep = self._filter.context_chars
            self._left = (self._left + self._filter.fold(released))[-keep:]
        return GuardResult(released, None)
