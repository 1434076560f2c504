"""The checks of one streamed answer: the local guard inline, WeChat per segment, in the background.

**stream** (the default): what the guard releases is sent at once and collected into
segments (`mpchat.safety.segments`); each is checked by WeChat while the answer goes on, and
a failed check retracts the answer at the next delta. The last segment is checked before the
tail is sent.

**strict**: nothing leaves before WeChat passed it. Segments are checked as they become due
(the first at once), concurrently, and released in order as their checks pass, handed to the
producer's ``on_release`` callback the moment they may go. A failed check withholds that
segment and everything after it, and so does a local hit (what the guard released before the
hit is still checked and shown if it passes): once every segment before the failure has been
released, `verdict` raises `Withheld`, and the answer ends ``content_filter`` without a
``retract``, since nothing unchecked was shown. Segments after a failure are not checked.

Without WeChat (``remote=False``) both modes are the local guard alone, which never releases
a listed word anyway.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from mpchat.chat.moderation import Retracted, Withheld
from mpchat.safety.output_guard import OutputGuard
from mpchat.safety.segments import Segment, Segmenter, SegmentPolicy
from mpchat.safety.wordfilter import Hit

if TYPE_CHECKING:
    from mpchat.safety.moderator import Moderator

__all__ = ["AnswerCheck"]


@dataclass(slots=True)
class _Queued:
    """A strict-mode segment, in the answer's order, and where its check stands."""

    index: int
    text: str
    state: Literal["waiting", "passed", "failed"] = "waiting"


class AnswerCheck:
    """Implements `mpchat.chat.moderation.OutputCheck` for one answer."""

    def __init__(self, moderator: Moderator, *, user_id: str, message_id: str, remote: bool,
                 strict: bool, policy: SegmentPolicy, clock: Callable[[], float]) -> None:
        self._mod = moderator
        self._user_id = user_id
        self._message_id = message_id
        self._guard = OutputGuard(moderator.word_filter)
        self._remote = remote
        self._strict = strict and remote
        self._clock = clock
        self._segmenter = Segmenter(policy, clock=clock)
        self._passed: list[str] = []  # what the guard released, in order
        self._tasks: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(moderator.max_concurrent_checks)
        self._timer: asyncio.TimerHandle | None = None
        self._timer_due: float | None = None
        self._failed: str | None = None  # why, once a check failed or the list hit
        self._closed = False
        # strict mode: segments in order; the first that failed; checked text not handed over
        self._queue: deque[_Queued] = deque()
        self._count = 0
        self._withheld_from: int | None = None
        self._ready: list[str] = []
        self._release: Callable[[str], None] | None = None

    def on_release(self, release: Callable[[str], None]) -> None:
        self._release = release

    def feed(self, piece: str) -> str:
        self.verdict()
        result = self._guard.feed(piece)
        if result.hit is not None:
            self._local_hit(result.hit)
        text = result.text
        if text:
            self._passed.append(text)
        if not self._remote:
            return text
        for segment in self._segmenter.add(text):
            self._start(segment)
        self._arm_timer()
        return self._take_ready() if self._strict else text

    def verdict(self) -> None:
        if self._failed is None:
            return
        if not self._strict:
            raise Retracted(self._failed)
        if self._queue and self._queue[0].state == "failed":
            raise Withheld(self._failed)  # everything before the failure was handed over

    async def finish(self) -> str:
        result = self._guard.flush()
        if result.hit is not None:
            self._local_hit(result.hit)
        self._mod.count("local", "output", "pass")
        tail = result.text
        if not self._remote:
            self.verdict()
            return tail
        self._cancel_timer()
        for segment in self._segmenter.add(tail):
            self._start(segment)
        last = self._segmenter.rest()
        if last is not None:
            self._start(last)
        # No segment starts after this point: feed is not called during finish.
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.verdict()
        return self._take_ready() if self._strict else tail

    async def conclude(self) -> None:
        self._cancel_timer()
        if self._strict:
            # Only checked text was shown: what still waits was never shown and stays unsaid.
            await self.aclose()
            return
        if self._remote:
            last = self._segmenter.rest()  # released text is checked, even when it ends early
            if last is not None:
                self._start(last)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self.verdict()

    async def aclose(self) -> None:
        self._closed = True
        self._cancel_timer()
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- the checks ------------------------------------------------------------------------

    def _local_hit(self, hit: Hit) -> None:
        if self._failed is None or not self._failed.startswith("local:"):
            text = "".join(self._passed) + self._guard.held
            self._mod.local_hit(text, hit, stage="output", user_id=self._user_id,
                                message_id=self._message_id)
            self._failed = f"local:{hit.rule}"
            if self._strict:
                # What the guard released before the hit may still show once WeChat passed
                # it; the hit's place in the queue withholds the rest.
                before = self._segmenter.rest()
                if before is not None:
                    self._start(before)
                self._withhold(self._enqueue("", state="failed"))
        self.verdict()

    def _start(self, segment: Segment) -> None:
        entry = self._enqueue(segment.text) if self._strict else None
        task = asyncio.get_running_loop().create_task(self._check(segment, entry))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _enqueue(self, text: str, *, state: Literal["waiting", "failed"] = "waiting") -> _Queued:
        entry = _Queued(self._count, text, state)
        self._count += 1
        self._queue.append(entry)
        return entry

    def _needless(self, entry: _Queued | None) -> bool:
        """Whether a check would be wasted quota: its text can never be shown."""
        if entry is None:  # stream mode: once one failed, the answer is retracted
            return self._failed is not None
        return self._withheld_from is not None and entry.index > self._withheld_from

    async def _check(self, segment: Segment, entry: _Queued | None) -> None:
        if self._needless(entry):
            return
        async with self._slots:
            if self._needless(entry):
                return
            refused = await self._mod.wechat(
                segment.check_text, stage="output", user_id=self._user_id,
                message_id=self._message_id, deferrable=True,
            )
        if refused is not None:
            if entry is None or self._withheld_from is None or entry.index < self._withheld_from:
                self._failed = f"wechat:{refused}"  # the reason of the earliest failure
            if entry is not None:
                self._withhold(entry)
        elif entry is not None:
            entry.state = "passed"
            self._advance()

    def _withhold(self, entry: _Queued) -> None:
        entry.state = "failed"
        if self._withheld_from is None or entry.index < self._withheld_from:
            self._withheld_from = entry.index

    def _advance(self) -> None:
        """Strict mode: hand over the segments at the head of the queue that passed."""
        while self._queue and self._queue[0].state == "passed":
            text = self._queue.popleft().text
            if self._closed:
                continue
            if self._release is not None:
                self._release(text)
            else:
                self._ready.append(text)

    def _take_ready(self) -> str:
        text, self._ready = "".join(self._ready), []
        return text

    # -- the latency bound while no text arrives --------------------------------------------

    def _arm_timer(self) -> None:
        due = self._segmenter.due_at()
        if due == self._timer_due:
            return  # the buffer's first piece is the same: so is the moment it is due
        self._cancel_timer()
        if due is None or self._closed:
            return
        self._timer_due = due
        delay = max(due - self._clock(), 0.0)
        self._timer = asyncio.get_running_loop().call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer, self._timer_due = None, None
        if self._closed:
            return
        for segment in self._segmenter.take_due():
            self._start(segment)
        self._arm_timer()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._timer_due = None, None
