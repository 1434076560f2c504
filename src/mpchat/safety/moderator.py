"""The chat pipeline's content moderation: the local word filter, then WeChat msgSecCheck.

Input: the local filter first (microseconds, before anything is stored), then, when WeChat
content security is on, msgSecCheck (scene 2, "comment": a user's free text published to
the service, the scene WeChat applies the mini program's own keyword settings to), which the
chat service overlaps with the start of the provider call.

Output (`mpchat.safety.answer_check`): `OutputGuard` holds back what could start a listed
word; what it releases is collected into segments as large as one WeChat call takes, cut at
sentence ends when old enough (`mpchat.safety.segments`), each checked in the background.
``output_mode="stream"`` sends text at once and retracts the answer if a check fails;
``"strict"`` sends nothing before its check passed. WeChat calls for answers are deferrable:
they leave part of the app's quota to input checks (`mpchat.wechat.CallQuota`).

Every WeChat decision and every local hit goes to the audit trail with the rule that decided
(the list entry, ``file:line``, and the span; with ``MPCHAT_AUDIT_TEXT`` also the term and the
span as normalised; WeChat's label and suggestion, and the policy when one decided); local
passes are only counted (they are nearly every message, on the hot path).
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from typing import Literal

from mpchat.chat.moderation import OutputCheck
from mpchat.errors import ContentRejected, ServiceUnavailable
from mpchat.metrics import Metrics
from mpchat.safety.answer_check import AnswerCheck
from mpchat.safety.segments import STREAM_POLICY, STRICT_POLICY, SegmentPolicy
from mpchat.safety.wordfilter import Hit, WordFilter
from mpchat.storage.audit import AuditEvent, AuditVerdict, AuditWriter, Stage, hash_user
from mpchat.wechat.security import ContentSecurity, Scene, Verdict

__all__ = ["CHAT_SCENE", "Moderator", "OpenidCache", "OpenidLookup", "OutputMode"]

log = logging.getLogger("mpchat.safety")

CHAT_SCENE: Scene = 2
_EXCERPT_CHARS = 100
_UNAVAILABLE_MESSAGE = "内容安全检查暂时不可用，请稍后再试"

OpenidLookup = Callable[[str], Awaitable[str | None]]
OutputMode = Literal["stream", "strict"]


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
        output_mode: OutputMode = "stream",
        segment_policy: SegmentPolicy | None = None,
        max_concurrent_checks: int = 4,
        clock: Callable[[], float] | None = None,
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
        self.output_mode = output_mode
        self.segment_policy = segment_policy or (
            STRICT_POLICY if output_mode == "strict" else STREAM_POLICY)
        self.max_concurrent_checks = max_concurrent_checks
        self._clock = clock
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
        return AnswerCheck(self, user_id=user_id, message_id=message_id,
                           remote=remote and self.security is not None,
                           strict=self.output_mode == "strict", policy=self.segment_policy,
                           clock=self._clock or asyncio.get_running_loop().time)

    async def flush_audit(self) -> None:
        """Until the audit events recorded so far are written (tests, operators' tools)."""
        if self._audit is not None:
            await self._audit.flush()

    async def user_events_key(self, user_id: str) -> str | None:
        """The user's key in the audit (their keyed hash), once the events recorded so far
        are written; None without an audit."""
        if self._audit is None:
            return None
        await self._audit.flush()
        return hash_user(self._audit_key, user_id)

    async def forget_user(self, user_id: str) -> int:
        """The user deleted their data: anonymise their audit rows; how many."""
        if self._audit is None:
            return 0
        return await self._audit.anonymise(hash_user(self._audit_key, user_id))

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
        log.info("local filter hit on %s: rule=%s list=%s", stage, hit.rule, hit.source)
        excerpt = text[max(hit.start - 20, 0) : hit.end + 20] if self.audit_text else None
        detail: dict[str, object] = {"list": hit.source, "span": [hit.start, hit.end]}
        if self.audit_text:
            # The term, and the span folded as the filter saw it (with whatever disguised
            # it): the user's words, so only where the operator keeps text at all.
            detail["term"] = hit.word
            detail["normalised"] = self.word_filter.fold(text[hit.start : hit.end])
        self._record(AuditEvent(check="local", stage=stage, verdict="hit", rule=hit.rule,
                                user_hash=hash_user(self._audit_key, user_id),
                                message_id=message_id, excerpt=excerpt, detail=detail))

    async def wechat(
        self, text: str, *, stage: Stage, user_id: str, message_id: str | None,
        deferrable: bool = False,
    ) -> AuditVerdict | None:
        """msgSecCheck ``text``; the reason to refuse it, or None when it may go.

        ``deferrable`` (an answer's checks): behind input checks when the quota is tight."""
        assert self.security is not None and self._openids is not None
        verdict: Verdict | None = None
        try:
            openid = await self._openids.get(user_id)
            if openid is None:
                log.error("no openid for user %s: cannot ask WeChat", user_id)
            else:
                verdict = await self.security.check(text, openid=openid, scene=CHAT_SCENE,
                                                    deferrable=deferrable)
        except ServiceUnavailable:
            pass
        except Exception:
            # Never let a surprise in the check escape as a 500: it is "unavailable".
            log.exception("wechat content check failed")
        outcome: AuditVerdict
        detail: dict[str, object]
        if verdict is None or verdict.unavailable:
            outcome = "unavailable"
            refuse = self.unavailable_policy == "closed"
            log.warning("wechat check unavailable on %s; policy %s", stage,
                        self.unavailable_policy)
            detail = {"policy": f"unavailable:{self.unavailable_policy}"}
        else:
            outcome = verdict.suggest
            refuse = outcome == "risky" or (outcome == "review" and self.review_policy == "block")
            detail = {"suggest": verdict.suggest, "label": verdict.label}
            if outcome == "review":
                detail["policy"] = f"review:{self.review_policy}"
        detail["refused"] = refuse
        self.count("wechat", stage, outcome)
        self._record(AuditEvent(
            check="wechat", stage=stage, verdict=outcome,
            rule=str(verdict.label) if verdict is not None and verdict.label is not None
            else None,
            user_hash=hash_user(self._audit_key, user_id), message_id=message_id,
            trace_id=verdict.trace_id if verdict is not None else None,
            excerpt=text[:_EXCERPT_CHARS] if self.audit_text else None, detail=detail,
        ))
        return outcome if refuse else None

    def _record(self, event: AuditEvent) -> None:
        if self._audit is None:
            return
        try:
            self._audit.record(event)
        except Exception:  # the audit must never fail a chat
            log.exception("could not queue an audit event")
