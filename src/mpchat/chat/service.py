"""One chat turn, from the user's message to the stored answer.

`ChatService.start` does everything that may still fail with an HTTP status: validation,
the per-user limit, a place in the upstream queue, the input checks, storing the question.
The `ChatRun` it returns streams events (`start`, `queued`..., `delta`..., then `done`,
`retract` or `error`) and stores the answer when it ends, whether it completed, was
retracted, broke, or the client went away.

When the input check does I/O (WeChat), the provider call starts at the same time
(`Prefetch`), but nothing of the answer, not even `start`, leaves before the input passed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Mapping
from dataclasses import dataclass
from typing import Any

import anyio
from sqlalchemy.ext.asyncio import AsyncEngine

from mpchat.chat.context import build_messages
from mpchat.chat.moderation import Moderation, NoModeration, Retracted
from mpchat.chat.prefetch import Prefetch
from mpchat.chat.summarize import Summarizer
from mpchat.chat.upstream import Admission, Queued, Served, Upstream
from mpchat.errors import ContentRejected, InvalidRequest, MpchatError, RateLimited
from mpchat.limits import RateLimiter
from mpchat.metrics import Metrics
from mpchat.providers.types import Delta, Finish
from mpchat.storage import messages as store
from mpchat.storage.crypto import Keyring
from mpchat.tokens import estimate_tokens

__all__ = ["ChatRequest", "ChatRun", "ChatService"]

log = logging.getLogger("mpchat.chat")
_background: set[asyncio.Future[Any]] = set()  # strong references to shielded writes
Event = dict[str, Any]
UpstreamEvent = Queued | Served | Delta | Finish


@dataclass(frozen=True, slots=True)
class ChatRequest:
    user_id: str
    content: str
    conversation_id: str | None = None
    profile: str | None = None


class ChatService:
    """Holds what every turn needs; one per app, made in the lifespan."""

    def __init__(
        self,
        *,
        engine: AsyncEngine,
        keyring: Keyring,
        upstream: Upstream,
        limiter: RateLimiter,
        label: str,
        system_prompt: str,
        moderation: Moderation | None = None,
        profiles: Mapping[str, str] | None = None,
        context_budget: int = 3000,
        max_answer_tokens: int | None = None,
        max_content_chars: int = 2000,
        metrics: Metrics | None = None,
        summarizer: Summarizer | None = None,
    ) -> None:
        self.engine = engine
        self.keyring = keyring
        self.upstream = upstream
        self.limiter = limiter
        self.moderation = moderation or NoModeration()
        self.label = label
        self.system_prompt = system_prompt
        self.profiles = dict(profiles or {})
        self.context_budget = context_budget
        self.max_answer_tokens = max_answer_tokens
        self.max_content_chars = max_content_chars
        self.metrics = metrics or Metrics()
        self.summarizer = summarizer
        self._active = 0
        self._idle = asyncio.Event()
        self._idle.set()

    async def wait_idle(self) -> None:
        """Until every answer under way has ended and been stored (for shutdown, tests)."""
        await self._idle.wait()

    def _enter(self) -> None:
        self._active += 1
        self._idle.clear()
        self.metrics.answering.inc()

    def _leave(self, status: str) -> None:
        self._active -= 1
        if self._active == 0:
            self._idle.set()
        self.metrics.answering.dec()
        self.metrics.chats.labels(status).inc()

    async def start(self, request: ChatRequest) -> ChatRun:
        """Admit, check and store the question; raises `MpchatError` before any event."""
        content = request.content
        if not content.strip():
            raise InvalidRequest("content 不能为空")
        if len(content) > self.max_content_chars:
            raise InvalidRequest(f"content 不能超过 {self.max_content_chars} 个字符")
        system_prompt = self.system_prompt
        if request.profile:
            if request.profile not in self.profiles:
                raise InvalidRequest("未知的 profile")
            system_prompt = self.profiles[request.profile]
        self.moderation.check_input_locally(content, user_id=request.user_id)
        decision = await self.limiter.hit(request.user_id)
        if not decision.allowed:
            self.metrics.rate_limited.inc()
            raise RateLimited(retry_after=decision.retry_after)

        tokens = estimate_tokens(content)
        budget = self.context_budget - tokens - estimate_tokens(system_prompt)
        admission = await self.upstream.admit(request.user_id, tokens=tokens)  # Busy: 503
        try:
            turn = await store.begin_turn(
                self.engine,
                self.keyring,
                user_id=request.user_id,
                conversation_id=request.conversation_id,
                content=content,
                tokens=tokens,
                history_budget=max(budget, 0),
            )
        except BaseException:
            await admission.release()
            raise
        messages = build_messages(
            system_prompt=system_prompt,
            history=turn.history,
            new_message=content,
            summary=turn.summary,
            omitted=turn.omitted,
        )
        upstream = self.upstream.stream(
            messages,
            user_key=request.user_id,
            tokens=sum(estimate_tokens(m["content"]) for m in messages),
            admission=admission,
            max_tokens=self.max_answer_tokens,
        )
        run = ChatRun(self, request.user_id, turn, messages, upstream, admission)
        if self.moderation.checks_remotely:
            await run.check_input_overlapped(content)
        return run


class ChatRun:
    """One answer being produced. Iterate `events()` exactly once."""

    def __init__(
        self,
        service: ChatService,
        user_id: str,
        turn: store.Turn,
        messages: list[dict[str, str]],
        upstream: AsyncGenerator[UpstreamEvent],
        admission: Admission,
    ) -> None:
        self._svc = service
        self._admission = admission
        self._user_id = user_id
        self._upstream: AsyncIterator[UpstreamEvent] = upstream
        self._upstream_gen = upstream
        self._prefetch: Prefetch[UpstreamEvent] | None = None
        self.turn = turn
        self.messages = messages
        self.conversation_id = turn.conversation_id
        self.message_id = store.new_id()
        self.model = service.upstream.model
        self.failure: MpchatError | None = None
        self.retracted = False
        self.answer = ""
        self.status = "pending"
        self.finish_reason = "stop"
        self.usage: dict[str, int] = {}
        self.provider: str | None = None

    async def check_input_overlapped(self, content: str) -> None:
        """Run the input check while the provider call starts; reject before any event."""
        svc = self._svc
        self._prefetch = Prefetch(self._upstream_gen)
        self._upstream = self._prefetch
        try:
            await svc.moderation.check_input(content, user_id=self._user_id)
        except BaseException as exc:
            await self._close_upstream()  # cancels the provider request, frees the slot
            if isinstance(exc, ContentRejected):
                await store.set_message_status(
                    svc.engine, message_id=self.turn.user_message_id, status="rejected"
                )
            raise

    def start_event(self) -> Event:
        return {
            "type": "start",
            "conversation_id": self.conversation_id,
            "message_id": self.message_id,
            "model": self.model,
            "ai_generated": True,
            "label": self._svc.label,
        }

    async def events(self) -> AsyncGenerator[Event]:
        svc = self._svc
        svc._enter()
        try:
            async for event in self._events():
                yield event
        finally:
            self._svc._leave(self.status)

    async def _events(self) -> AsyncGenerator[Event]:
        svc = self._svc
        check = svc.moderation.output(user_id=self._user_id, message_id=self.message_id)
        parts: list[str] = []  # everything the provider said
        finish: Finish | None = None
        began = time.monotonic()
        yield self.start_event()
        try:
            try:
                async for event in self._upstream:
                    if isinstance(event, Delta):
                        if not parts:
                            svc.metrics.first_delta.observe(time.monotonic() - began)
                        parts.append(event.text)
                        text = check.feed(event.text)
                        check.verdict()
                        if text:
                            yield {"type": "delta", "text": text}
                    elif isinstance(event, Served):
                        self.provider = event.provider
                    elif isinstance(event, Queued):
                        yield {"type": "queued", "position": event.position}
                    else:
                        finish = event
                tail = await check.finish()
                if tail:
                    yield {"type": "delta", "text": tail}
            except Retracted as exc:
                self.retracted = True
                log.info("answer %s retracted: %s", self.message_id, exc.reason)
            except MpchatError as exc:
                self.failure = exc
            finally:
                await self._close_upstream()
                await check.aclose()
        except BaseException:
            # The client went away (cancellation) or the consumer closed us: keep what
            # was said, even though the request that produced it is being torn down.
            try:
                await _shielded(self._store("".join(parts), "truncated", None))
            except Exception:
                log.exception("could not store a truncated answer")
            raise
        if self.retracted:
            await _shielded(self._store("".join(parts), "retracted", finish))
            self.finish_reason = "content_filter"
            yield {"type": "retract", "reason": "content_safety"}
            yield {"type": "done", "finish_reason": self.finish_reason, "usage": self.usage}
            return
        status = "complete" if self.failure is None else "truncated"
        # Shielded: a client leaving now must not undo the answer it already received.
        await _shielded(self._store("".join(parts), status, finish))
        turn = self.turn
        if svc.summarizer is not None and turn.omitted and turn.oldest_kept_seq:
            svc.summarizer.schedule(conversation_id=self.conversation_id,
                                    user_id=self._user_id, before=turn.oldest_kept_seq)
        log.debug("chat %s status=%s seconds=%.3f", self.conversation_id, self.status,
                  time.monotonic() - began)
        if self.failure is not None:
            yield {"type": "error", **self.failure.to_dict()}
        else:
            yield {"type": "done", "finish_reason": self.finish_reason, "usage": self.usage}

    async def _close_upstream(self) -> None:
        """Stop the provider call and free its slot; idempotent."""
        if self._prefetch is not None:
            await self._prefetch.aclose()
        await self._upstream_gen.aclose()
        await self._admission.release()

    async def collect(self) -> Event:
        """Run to the end and return the non-streaming response body."""
        async for _ in self.events():
            pass
        if self.failure is not None:
            raise self.failure
        return {
            "conversation_id": self.conversation_id,
            "message_id": self.message_id,
            "content": "" if self.retracted else self.answer,
            "finish_reason": self.finish_reason,
            "usage": self.usage,
            "ai_generated": True,
            "label": self._svc.label,
        }

    async def _store(self, answer: str, status: str, finish: Finish | None) -> None:
        svc = self._svc
        usage = finish.usage if finish else None
        prompt_tokens = (
            usage.prompt_tokens
            if usage
            else sum(estimate_tokens(m["content"]) for m in self.messages)
        )
        completion_tokens = usage.completion_tokens if usage else estimate_tokens(answer)
        self.answer, self.status = answer, status
        self.finish_reason = finish.reason if finish else "stop"
        self.usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens}
        if not answer and status == "truncated":
            # Nothing was said: keep the question in history, out of future context.
            await store.set_message_status(
                svc.engine, message_id=self.turn.user_message_id, status="unanswered"
            )
            self.status = "unanswered"
            return
        await store.finish_turn(
            svc.engine,
            svc.keyring,
            user_id=self._user_id,
            conversation_id=self.conversation_id,
            message_id=self.message_id,
            content=answer,
            status=status,
            tokens=estimate_tokens(answer),
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            meta={
                "ai_generated": True,
                "content_id": self.message_id,
                "provider": self.provider,
                "model": self.model,
            },
        )


async def _shielded(work: Awaitable[Any]) -> None:
    """Finish ``work`` even inside a cancelled scope (a disconnected client's request).

    Its exceptions propagate. If the caller is cancelled natively anyway, the work still
    runs to completion on its own (strongly referenced in ``_background``).
    """
    task = asyncio.ensure_future(work)
    _background.add(task)
    task.add_done_callback(_background.discard)
    with anyio.CancelScope(shield=True):
        await asyncio.shield(task)
