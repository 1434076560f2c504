"""The chat pipeline's content moderation: the local word filter, then WeChat msgSecCheck.

Input: the local filter first (microseconds, before anything is stored), then, when WeChat
content security is on, msgSecCheck (scene 2, "comment": a user's free text published to
the service, the scene WeChat applies the mini program's own keyword settings to), which the
chat service overlaps with the start of the provider call.

Output: `OutputGuard` holds back what could start a listed word; what it releases is cut into
sentence-sized segments, each checked by WeChat in the background while the stream goes on.
A failed segment retracts the answer at the next delta. At the end, the last segment and the
whole answer are checked before the tail is released.

Every WeChat decision and every local hit goes to the audit trail; local passes are only
counted (they are nearly every message, on the hot path).
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from typing import Literal

from mpchat.chat.moderation import OutputCheck, Retracted
from mpchat.errors import ContentRejected, ServiceUnavailable
from mpchat.metrics import Metrics
from mpchat.safety.output_guard import OutputGuard
from mpchat.safety.wordfilter import Hit, WordFilter
from mpchat.storage.audit import AuditEvent, AuditVerdict, AuditWriter, Stage, hash_user
from mpchat.wechat.security import ContentSecurity, Scene, Verdict

__all__ = ["CHAT_SCENE", "Moderator", "OpenidCache", "OpenidLookup", "segments"]

log = logging.getLogger("mpchat.safety")

CHAT_SCENE: Scene = 2
_SENTENCE_ENDS = frozenset("。！？!?\n")
_EXCERPT_CHARS = 100
_UNAVAILABLE_MESSAGE = "内容安全检查暂时不可用，请稍后再试"

OpenidLookup = Callable[[str], Awaitable[str | None]]


class OpenidCache:
    """user id -> openid, looked up once and kept in a bounded LRU (openids never change)."""

    def __init__(self, lookup: OpenidLookup, *, size: int = 4096) -> None:
        self._lookup = lookup
        self._size = size
        self._cache: OrderedDict[str, str] = OrderedDict()

    async def get(self, user_id: str) -> str | None:
        openid = self._cache.get(user_id)
        if openid is not None:
            self._cache.move_to_end(user_id)
            return openid
        openid = await self._lookup(user_id)
        if openid is not None:
            self._cache[user_id] = openid
            if len(self._cache) > self._size:
                self._cache.popitem(last=False)
        return openid


def segments(buffer: str, *, min_chars: int, max_chars: int) -> tuple[list[str], str]:
    """Complete segments of ``buffer`` and the rest still growing.

    A segment ends after a sentence end once it has ``min_chars`` (so "好的。" does not cost
    a WeChat call of its own), or at ``max_chars`` whatever comes.
    """
    done: list[str] = []
    start = 0
    for index, ch in enumerate(buffer):
        size = index + 1 - start
        if (ch in _SENTENCE_ENDS and size >= min_chars) or size >= max_chars:
            done.append(buffer[start : index + 1])
            start = index + 1
    return done, buffer[start:]


class Moderator:
    """Implements `mpchat.chat.moderation.Moderation`. One per app; ``aclose()`` at shutdown."""

    def __init__(
        self,
        *,
        word_filter: WordFilter,
        audit: AuditWriter | None,
        audit_key: bytes,
        security: ContentSecurity | None = None,
        openids: OpenidCache | None = None,
        review_policy: Literal["allow", "block"] = "allow",
        unavailable_policy: Literal["open", "closed"] = "closed",
        audit_text: bool = False,
        metrics: Metrics | None = None,
        segment_min_chars: int = 30,
        segment_max_chars: int = 200,
        max_concurrent_checks: int = 4,
        closers: Sequence[Callable[[], Awaitable[None]]] = (),
    ) -> None:
        if security is not None and openids is None:
            raise ValueError("WeChat checks need an openid lookup")
        self.word_filter = word_filter
        self.security = security
        self._openids = openids
        self._audit = audit
        self._audit_key = audit_key
        self.review_policy = review_policy
        self.unavailable_policy = unavailable_policy
        self.audit_text = audit_text
        self._metrics = metrics
        self.segment_min_chars = segment_min_chars
        self.segment_max_chars = segment_max_chars
        self.max_concurrent_checks = max_concurrent_checks
        self._closers = tuple(closers)  # e.g. the access token provider's aclose

    @property
    def checks_remotely(self) -> bool:
        return self.security is not None

    def check_input_locally(self, text: str, *, user_id: str) -> None:
        self.word_filter.reload_if_changed()  # rate-limited by the filter's min_interval
        hit = self.word_filter.first(text)
        if hit is None:
            self.count("local", "input", "pass")
            return
        self.local_hit(text, hit, stage="input", user_id=user_id, message_id=None)
        raise ContentRejected()

    async def check_input(self, text: str, *, user_id: str) -> None:
        decision = await self.wechat(text, stage="input", user_id=user_id, message_id=None)
        if decision is not None:
            raise ContentRejected(_UNAVAILABLE_MESSAGE if decision == "unavailable" else None)

    def output(self, *, user_id: str, message_id: str, remote: bool = True) -> OutputCheck:
        return _AnswerCheck(self, user_id=user_id, message_id=message_id,
                            remote=remote and self.security is not None)

    async def flush_audit(self) -> None:
        """Until the audit events recorded so far are written (tests, operators' tools)."""
        if self._audit is not None:
            await self._audit.flush()

    async def aclose(self) -> None:
        """Write the queued audit events; close what the moderator was given to close."""
        if self._audit is not None:
            await self._audit.aclose()
        for close in self._closers:
            await close()

    # -- used by the answer checks -------------------------------------------------------

    def count(self, check: str, stage: str, verdict: str) -> None:
        if self._metrics is not None:
            self._metrics.safety.labels(check, stage, verdict).inc()

    def local_hit(
        self, text: str, hit: Hit, *, stage: Stage, user_id: str, message_id: str | None
    ) -> None:
        self.count("local", stage, "hit")
        log.info("local filter hit on %s: rule=%s", stage, hit.rule)
        excerpt = text[max(hit.start - 20, 0) : hit.end + 20] if self.audit_text else None
        self._record(AuditEvent(check="local", stage=stage, verdict="hit", rule=hit.rule,
                                user_hash=hash_user(self._audit_key, user_id),
                                message_id=message_id, excerpt=excerpt))

    async def wechat(
        self, text: str, *, stage: Stage, user_id: str, message_id: str | None
    ) -> AuditVerdict | None:
        """msgSecCheck ``text``; the reason to refuse it, or None when it may go."""
        assert self.security is not None and self._openids is not None
        verdict: Verdict | None = None
        try:
            openid = await self._openids.get(user_id)
            if openid is None:
                log.error("no openid for user %s: cannot ask WeChat", user_id)
            else:
                verdict = await self.security.check(text, openid=openid, scene=CHAT_SCENE)
        except ServiceUnavailable:
            pass
        except Exception:
            # Never let a surprise in the check escape as a 500: it is "unavailable".
            log.exception("wechat content check failed")
        outcome: AuditVerdict
        if verdict is None or verdict.unavailable:
            outcome = "unavailable"
            refuse = self.unavailable_policy == "closed"
            log.warning("wechat check unavailable on %s; policy %s", stage,
                        self.unavailable_policy)
        else:
            outcome = verdict.suggest
            refuse = outcome == "risky" or (outcome == "review" and self.review_policy == "block")
        self.count("wechat", stage, outcome)
        self._record(AuditEvent(
            check="wechat", stage=stage, verdict=outcome,
            rule=str(verdict.label) if verdict is not None and verdict.label is not None
            else None,
            user_hash=hash_user(self._audit_key, user_id), message_id=message_id,
            trace_id=verdict.trace_id if verdict is not None else None,
            excerpt=text[:_EXCERPT_CHARS] if self.audit_text else None,
        ))
        return outcome if refuse else None

    def _record(self, event: AuditEvent) -> None:
        if self._audit is None:
            return
        try:
            self._audit.record(event)
        except Exception:  # the audit must never fail a chat
            log.exception("could not queue an audit event")


class _AnswerCheck:
    """One streamed answer: the local guard inline, WeChat checks in background tasks."""

    def __init__(self, moderator: Moderator, *, user_id: str, message_id: str,
                 remote: bool) -> None:
        self._mod = moderator
        self._user_id = user_id
        self._message_id = message_id
        self._guard = OutputGuard(moderator.word_filter)
        self._remote = remote
        self._released: list[str] = []
        self._buffer = ""  # released, not yet part of a checked segment
        self._segments = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(moderator.max_concurrent_checks)
        self._failed: str | None = None

    def feed(self, piece: str) -> str:
        self.verdict()
        result = self._guard.feed(piece)
        if result.hit is not None:
            self._local_hit(result.hit)
        if result.text:
            self._released.append(result.text)
        if result.text and self._remote:
            done, self._buffer = segments(
                self._buffer + result.text,
                min_chars=self._mod.segment_min_chars,
                max_chars=self._mod.segment_max_chars,
            )
            for segment in done:
                self._start(segment)
        return result.text

    def verdict(self) -> None:
        if self._failed is not None:
            raise Retracted(self._failed)

    async def finish(self) -> str:
        result = self._guard.flush()
        if result.hit is not None:
            self._local_hit(result.hit)
        self._mod.count("local", "output", "pass")
        tail = result.text
        if self._remote:
            last = self._buffer + tail
            self._buffer = ""
            if last.strip():
                self._start(last)
            if self._segments > 1:
                # Segment by segment, a model may miss what only the whole makes clear.
                self._start("".join(self._released) + tail)
            # No segment starts after this point: feed is not called during finish.
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self.verdict()
        return tail

    async def conclude(self) -> None:
        if self._remote and self._buffer.strip():
            self._start(self._buffer)  # released text is checked, even when it ends early
            self._buffer = ""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self.verdict()

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _local_hit(self, hit: Hit) -> None:
        text = "".join(self._released) + self._guard.held
        self._mod.local_hit(text, hit, stage="output", user_id=self._user_id,
                            message_id=self._message_id)
        self._failed = f"local:{hit.rule}"
        raise Retracted(self._failed)

    def _start(self, text: str) -> None:
        self._segments += 1
        task = asyncio.get_running_loop().create_task(self._check(text))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _check(self, text: str) -> None:
        if self._failed is not None:
            return  # already retracted: save the quota
        async with self._slots:
            if self._failed is not None:
                return
            refused = await self._mod.wechat(text, stage="output", user_id=self._user_id,
                                             message_id=self._message_id)
        if refused is not None and self._failed is None:
            self._failed = f"wechat:{refused}"
