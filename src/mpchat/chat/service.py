"""One chat turn, from the user's message to an answer that lives on its own.

`ChatService.start` does everything that may still fail with an HTTP status: validation,
the per-user limit, a place in the upstream queue, the input checks, storing the question
(with its answer's row, status ``streaming``). It then launches the answer's producer
(`mpchat.chat.producer`) as a task of the service and returns the `Answer`, which the
request, and any later connection (`follow`), only follows.

When the input check does I/O (WeChat), the provider call starts at the same time
(`Prefetch`), but nothing of the answer, not even `start`, leaves before the input passed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from mpchat.chat.answer import Answer
from mpchat.chat.answers import Answers
from mpchat.chat.context import Context, build_messages, fit_context, history_budget
from mpchat.chat.keeper import ConversationKeeper
from mpchat.chat.moderation import Moderation, NoModeration
from mpchat.chat.prefetch import Prefetch
from mpchat.chat.producer import AnswerContext, Producer, SettleQuota, shielded
from mpchat.chat.profiles import ChatProfile, build_profiles
from mpchat.chat.resume import open_follow
from mpchat.chat.summarize import Summarizer
from mpchat.chat.timings import Timings
from mpchat.chat.upstream import Upstream, UpstreamEvent
from mpchat.errors import ContentRejected, InvalidRequest, NotFound, RateLimited, UpstreamError
from mpchat.estimate import estimate_tokens
from mpchat.limits import RateLimiter
from mpchat.providers.types import Options
from mpchat.quota import Quotas
from mpchat.storage import answers as stored
from mpchat.storage import messages as store

__all__ = ["ChatRequest", "ChatService", "Replay"]

log = logging.getLogger("mpchat.chat")


@dataclass(frozen=True, slots=True)
class ChatRequest:
    user_id: str
    content: str
    conversation_id: str | None = None
    profile: str | None = None
    # The client's name for this request (``Idempotency-Key``): a retry of it follows the
    # answer the first one started instead of asking again (`ChatService.start_once`).
    idempotency_key: str | None = None


@dataclass(frozen=True, slots=True)
class Replay:
    """A retried request's answer, already started by the first: its lines from ``start``."""

    message_id: str
    lines: AsyncIterator[bytes]


class ChatService:
    """Holds what every turn needs; one per app, made in the lifespan."""

    def __init__(
        self,
        *,
        ctx: AnswerContext,
        answers: Answers,
        upstream: Upstream,
        limiter: RateLimiter,
        system_prompt: str,
        moderation: Moderation | None = None,
        profiles: Mapping[str, ChatProfile] | None = None,
        context_budget: int = 3000,
        max_answer_tokens: int | None = None,
        max_content_chars: int = 2000,
        summarizer: Summarizer | None = None,
        quotas: Quotas | None = None,
    ) -> None:
        self.ctx = ctx
        self.answers = answers
        self.upstream = upstream
        self.limiter = limiter
        self.moderation = moderation or NoModeration()
        self.system_prompt = system_prompt
        self.context_budget = context_budget
        self.max_answer_tokens = max_answer_tokens
        # By name (`mpchat.chat.profiles`): a request's ``profile``, else ``default``.
        self.profiles = build_profiles(system_prompt=system_prompt,
                                       context_budget=context_budget,
                                       max_answer_tokens=max_answer_tokens) | dict(profiles or {})
        self.max_content_chars = max_content_chars
        self.summarizer = summarizer
        self.quotas = quotas if quotas is not None and quotas.enabled else None
        if self.quotas is not None and max_answer_tokens is None:
            # An answer reserves what it may cost: the provider is told the bound it reserved.
            self.max_answer_tokens = self.quotas.config.max_completion_tokens
        self._keeper = ConversationKeeper(ctx.transactions, ctx.keyring)

    async def wait_idle(self) -> None:
        """Until every answer under way has ended and been stored (for tests)."""
        await self.answers.wait_idle()

    async def start_once(self, request: ChatRequest) -> Answer | Replay:
        """`start`, or, for a request whose key was seen, the answer the first one started.

        A mobile client that lost its connection before ``start`` cannot tell whether its
        question arrived, and sends it again with the same key. The question's id is derived
        from the key (`keyed_id`), so of two copies only one is stored, on any instance: the
        other (before its limits, checks and reservation when the first is stored already;
        after them, which it then gives back, when both ran at once) follows that answer.
        """
        key = request.idempotency_key
        if key is None:
            return await self.start(request)
        question_id = store.keyed_id(request.user_id, key)
        replay = await self._replay(request, question_id)  # costs no limit, check or units
        if replay is not None:
            return replay
        try:
            return await self.start(request)
        except NotFound:
            replay = await self._replay(request, question_id)  # the other copy won the race
            if replay is None:
                raise
            return replay

    async def _replay(self, request: ChatRequest, question_id: str) -> Replay | None:
        found = await store.find_keyed_turn(self.ctx.engine, self.ctx.keyring,
                                            question_id=question_id, user_id=request.user_id)
        if found is None:
            return None
        if found.content != request.content or request.conversation_id not in (
                None, found.conversation_id):
            raise InvalidRequest("Idempotency-Key 已用于另一条消息")
        if found.status == "rejected":
            raise ContentRejected()
        if found.answer_id is None:
            # The first copy ended without a word (the provider failed, the instance died):
            # the key is spent; the client asks again under a new one.
            raise UpstreamError("上一次请求没有得到回答，请重新发送")
        lines = await self.follow(message_id=found.answer_id, user_id=request.user_id,
                                  after=-1)
        return Replay(found.answer_id, lines)

    async def start(self, request: ChatRequest) -> Answer:
        """Admit, check and store the question, launch the answer; `MpchatError` before it."""
        ctx = self.ctx
        received_at = ctx.clock()
        timings = Timings.begin(request.profile)
        content = request.content
        if not content.strip():
            raise InvalidRequest("content 不能为空")
        if len(content) > self.max_content_chars:
            raise InvalidRequest(f"content 不能超过 {self.max_content_chars} 个字符")
        profile = self.profiles.get(request.profile or "default")
        if profile is None:
            raise InvalidRequest("未知的 profile")
        self.moderation.check_input_locally(content, user_id=request.user_id)
        timings.local_done = timings.clock()
        decision = await self.limiter.hit(request.user_id)
        if not decision.allowed:
            ctx.metrics.rate_limited.inc()
            raise RateLimited(retry_after=decision.retry_after)

        tokens = estimate_tokens(content)
        answer_id = store.new_id()
        settle_quota = await self._reserve(request.user_id, answer_id, profile)  # 402 first
        try:
            return await self._launch(request, answer_id, profile, tokens, received_at,
                                      settle_quota, timings)
        except BaseException:
            if settle_quota is not None:  # no answer: nothing was produced, nothing is due
                await shielded(_quietly(settle_quota(0, 0, False)))
            raise

    def _answer_bound(self, profile: ChatProfile) -> int | None:
        """The profile's bound on the answer; with quotas, never above what is reserved."""
        bound = profile.max_answer_tokens
        if self.quotas is not None:
            cap = self.max_answer_tokens or self.quotas.config.max_completion_tokens
            bound = cap if bound is None else min(bound, cap)
        return bound

    async def _reserve(self, user_id: str, answer_id: str,
                       profile: ChatProfile) -> SettleQuota | None:
        """The answer's maximum cost held (its whole context budget and answer bound), and
        how to settle it; `QuotaExceeded` when it cannot be held; None with quotas off."""
        quotas = self.quotas
        if quotas is None:
            return None
        reservation = await quotas.reserve(
            user_id=user_id, model=profile.model or self.upstream.model,
            prompt_tokens=profile.context_budget,
            max_completion_tokens=self._answer_bound(profile) or 0, key=answer_id)
        if reservation is None:
            return None

        async def settle(prompt: int, completion: int, produced: bool) -> dict[str, Any]:
            view = await quotas.settle(reservation, prompt_tokens=prompt,
                                       completion_tokens=completion, produced=produced)
            return view.to_dict()

        return settle

    async def _launch(self, request: ChatRequest, answer_id: str, profile: ChatProfile,
                      tokens: int, received_at: float,
                      settle_quota: SettleQuota | None, timings: Timings) -> Answer:
        ctx, content, system_prompt = self.ctx, request.content, profile.system_prompt
        admission = await self.upstream.admit(request.user_id, tokens=tokens,
                                              model=profile.model)  # Busy: 503
        try:
            turn = await store.begin_turn(
                ctx.transactions, ctx.keyring, user_id=request.user_id,
                conversation_id=request.conversation_id, content=content, tokens=tokens,
                answer_id=answer_id, owner=ctx.owner, lease_until=ctx.lease_until(),
                question_id=(None if request.idempotency_key is None
                             else store.keyed_id(request.user_id, request.idempotency_key)),
            )
        except BaseException:
            await shielded(admission.release())
            raise
        budget = history_budget(profile.context_budget, system_prompt=system_prompt,
                                question_tokens=tokens)
        context = fit_context(turn.earlier, text=turn.text, summary=turn.summary,
                              budget=budget)
        messages = build_messages(system_prompt=system_prompt, history=context.history,
                                  new_message=content, summary=context.summary,
                                  omitted=context.omitted)
        prompt_tokens = sum(estimate_tokens(m["content"]) for m in messages)
        params = profile.params()
        options = Options(model=profile.model, params=params) if profile.model or params else None
        source = self.upstream.stream(messages, user_key=request.user_id, tokens=prompt_tokens,
                                      admission=admission, max_tokens=self._answer_bound(profile),
                                      options=options)
        upstream: AsyncIterator[UpstreamEvent] = source
        prefetch: Prefetch[UpstreamEvent] | None = None

        async def close_upstream() -> None:
            if prefetch is not None:
                await prefetch.aclose()
            await source.aclose()  # the generator's finally frees the slot and budget
            await admission.release()  # idempotent; covers a generator never started

        answer = self.answers.new(
            message_id=answer_id, user_id=request.user_id,
            conversation_id=turn.conversation_id, question_id=turn.user_message_id,
            model=profile.model or admission.route.provider.model,
        )
        try:
            if self.moderation.checks_remotely:
                upstream = prefetch = Prefetch(source)
                timings.wechat_from = timings.clock()
                await self.moderation.check_input(content, user_id=request.user_id)
                timings.wechat_to = timings.clock()
            check = self.moderation.output(user_id=request.user_id, message_id=answer_id)
        except BaseException as exc:
            # Refused, or the client left while the input was checked: no answer at all.
            await shielded(self._abandon(turn, answer_id, close_upstream,
                                          rejected=isinstance(exc, ContentRejected)))
            raise
        producer = Producer(ctx, answer, upstream=upstream, close_upstream=close_upstream,
                            check=check, keeper=self._keeper, prompt_tokens=prompt_tokens,
                            received_at=received_at,
                            on_complete=self._summary_job(turn, context, request.user_id),
                            settle_quota=settle_quota, timings=timings)
        self.answers.launch(answer, producer.run)
        return answer

    async def _abandon(self, turn: store.Turn, answer_id: str,
                       close_upstream: Callable[[], Awaitable[None]], *, rejected: bool) -> None:
        await close_upstream()
        await stored.drop_answer(self.ctx.transactions, message_id=answer_id,
                                 question_id=turn.user_message_id,
                                 conversation_id=turn.conversation_id)
        if rejected:
            await store.set_message_status(self.ctx.engine, message_id=turn.user_message_id,
                                           status="rejected")

    def _summary_job(self, turn: store.Turn, context: Context,
                     user_id: str) -> Callable[[], None] | None:
        """When the turn's context left older turns out: once it completes, summarise all but
        the newest turns that fit in half the budget (`Context.summarize_before`)."""
        summarizer, before = self.summarizer, context.summarize_before
        if summarizer is None or not context.omitted or not before:
            return None
        return functools.partial(summarizer.schedule, conversation_id=turn.conversation_id,
                                 user_id=user_id, before=before)

    async def follow(self, *, message_id: str, user_id: str, after: int) -> AsyncIterator[bytes]:
        """The answer's lines after seq ``after``, live to its end; `NotFound` if none."""
        return await open_follow(
            answers=self.answers, engine=self.ctx.engine, keyring=self.ctx.keyring,
            message_id=message_id, user_id=user_id, after=after,
            ping_interval=self.answers.ping_interval,
            poll_interval=self.answers.save_interval,
        )

    async def cancel(self, *, message_id: str, user_id: str) -> None:
        """The user's stop: the answer ends ``cancelled``; idempotent; `NotFound` if none."""
        local = self.answers.find(message_id, user_id)
        if local is not None:
            local.cancel("cancelled")
            return
        relay = self.answers.relay
        row = await stored.read_answer(self.ctx.engine, self.ctx.keyring,
                                       message_id=message_id, user_id=user_id)
        if row is None and not (relay is not None and await relay.owner(message_id) == user_id):
            raise NotFound()
        if row is None or row.status == "streaming":
            await self.answers.stop(message_id=message_id, reason="cancelled")

    async def stop_user(self, user_id: str) -> None:
        """Stop every answer of the user (their data is being deleted), here and elsewhere.

        Answers produced elsewhere without a relay stop at their next write, which finds
        their row gone.
        """
        live = self.answers.live_of(user_id)
        await self.answers.stop(user_id=user_id, reason="deleted")
        await _ended(live)

    async def stop_conversation(self, conversation_id: str, *, user_id: str) -> None:
        """Stop this instance's answers in a conversation being deleted (others: as above)."""
        live = [a for a in self.answers.live_of(user_id)
                if a.conversation_id == conversation_id]
        for answer in live:
            answer.cancel("deleted")
        await _ended(live)


async def _quietly(work: Awaitable[object]) -> None:
    try:
        await work
    except Exception:  # left open: the sweep releases it, at no cost to the user
        log.warning("a quota reservation could not be released", exc_info=True)


async def _ended(answers: list[Answer]) -> None:
    if answers:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5.0):
                await asyncio.gather(*(a.wait_ended() for a in answers))
