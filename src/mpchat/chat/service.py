"""One chat turn, from the user's message to the stored answer.

`ChatService.start` does everything that can still fail with an HTTP status (profile,
conversation ownership, storing the question); the returned `ChatRun` then streams
events (`start`, `delta`..., `done` or `error`) and stores the answer when it ends,
whether it completed, broke, or the client went away.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import anyio
from sqlalchemy.ext.asyncio import AsyncEngine

from mpchat.chat.context import build_messages
from mpchat.chat.tokens import estimate_tokens
from mpchat.errors import InvalidRequest, MpchatError, UpstreamError, UpstreamTimeout
from mpchat.metrics import Metrics
from mpchat.providers.retry import RetryPolicy
from mpchat.providers.types import (
    Delta,
    Finish,
    Provider,
    ProviderError,
    ProviderTimeout,
    Retryable,
    StreamEvent,
)
from mpchat.storage import messages as store
from mpchat.storage.crypto import Keyring

__all__ = ["ChatRequest", "ChatRun", "ChatService"]

log = logging.getLogger("mpchat.chat")
_background: set[asyncio.Future[Any]] = set()  # strong references to shielded writes
Event = dict[str, Any]


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
        provider: Provider,
        retry: RetryPolicy,
        label: str,
        system_prompt: str,
        profiles: Mapping[str, str] | None = None,
        context_budget: int = 3000,
        max_answer_tokens: int | None = None,
        max_content_chars: int = 2000,
        metrics: Metrics | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.engine = engine
        self.keyring = keyring
        self.provider = provider
        self.retry = retry
        self.label = label
        self.system_prompt = system_prompt
        self.profiles = dict(profiles or {})
        self.context_budget = context_budget
        self.max_answer_tokens = max_answer_tokens
        self.max_content_chars = max_content_chars
        self.metrics = metrics or Metrics()
        self.sleep = sleep
        self._active = 0
        self._idle = asyncio.Event()
        self._idle.set()

    async def wait_idle(self) -> None:
        """Until every answer under way has ended and been stored (for shutdown, tests)."""
        await self._idle.wait()

    def _enter(self) -> None:
        self._active += 1
        self._idle.clear()

    def _leave(self) -> None:
        self._active -= 1
        if self._active == 0:
            self._idle.set()

    async def start(self, request: ChatRequest) -> ChatRun:
        """Store the question and build the context; raises `MpchatError` before any event."""
        if not request.content.strip():
            raise InvalidRequest("content 不能为空")
        if len(request.content) > self.max_content_chars:
            raise InvalidRequest(f"content 不能超过 {self.max_content_chars} 个字符")
        system_prompt = self.system_prompt
        if request.profile:
            if request.profile not in self.profiles:
                raise InvalidRequest("未知的 profile")
            system_prompt = self.profiles[request.profile]
        tokens = estimate_tokens(request.content)
        budget = self.context_budget - tokens - estimate_tokens(system_prompt)
        turn = await store.begin_turn(
            self.engine,
            self.keyring,
            user_id=request.user_id,
            conversation_id=request.conversation_id,
            content=request.content,
            tokens=tokens,
            history_budget=max(budget, 0),
        )
        messages = build_messages(
            system_prompt=system_prompt,
            history=turn.history,
            new_message=request.content,
            omitted=turn.omitted,
        )
        return ChatRun(self, request.user_id, turn, messages)


class ChatRun:
    """One answer being produced. Iterate `events()` exactly once."""

    def __init__(
        self,
        service: ChatService,
        user_id: str,
        turn: store.Turn,
        messages: list[dict[str, str]],
    ) -> None:
        self._svc = service
        self._user_id = user_id
        self.turn = turn
        self.messages = messages
        self.conversation_id = turn.conversation_id
        self.message_id = store.new_id()
        self.model = service.provider.model
        self.failure: MpchatError | None = None
        self.answer = ""
        self.status = "pending"
        self._finish_reason = "stop"
        self._usage: dict[str, int] = {}

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
        svc.metrics.answering.inc()
        try:
            async for event in self._events():
                yield event
        finally:
            svc._leave()
            svc.metrics.answering.dec()
            svc.metrics.chats.labels(self.status).inc()

    async def _events(self) -> AsyncGenerator[Event]:
        yield self.start_event()
        parts: list[str] = []
        finish: Finish | None = None
        began = time.monotonic()
        try:
            async for event in self._answer():
                if isinstance(event, Delta):
                    if not parts:
                        self._svc.metrics.first_delta.observe(time.monotonic() - began)
                    parts.append(event.text)
                    yield {"type": "delta", "text": event.text}
                else:
                    finish = event
        except MpchatError as exc:
            self.failure = exc
        except BaseException:
            # The client went away (cancellation) or the consumer closed us: keep what
            # was said, even though the request that produced it is being torn down.
            await _shielded(self._store("".join(parts), "truncated", None))
            raise
        status = "complete" if self.failure is None else "truncated"
        usage = await self._store("".join(parts), status, finish)
        log.info(
            "chat conversation=%s status=%s chunks=%d seconds=%.3f",
            self.conversation_id, self.status, len(parts), time.monotonic() - began,
        )
        if self.failure is not None:
            yield {"type": "error", **self.failure.to_dict()}
        else:
            yield {
                "type": "done",
                "finish_reason": finish.reason if finish else "stop",
                "usage": usage,
            }

    async def collect(self) -> Event:
        """Run to the end and return the non-streaming response body."""
        async for _ in self.events():
            pass
        if self.failure is not None:
            raise self.failure
        return {
            "conversation_id": self.conversation_id,
            "message_id": self.message_id,
            "content": self.answer,
            "finish_reason": self._finish_reason,
            "usage": self._usage,
            "ai_generated": True,
            "label": self._svc.label,
        }

    async def _answer(self) -> AsyncGenerator[StreamEvent]:
        """The provider's events; failed attempts are retried until the first event."""
        svc = self._svc
        policy = svc.retry
        attempt = 0
        while True:
            attempt += 1
            stream = svc.provider.stream(self.messages, max_tokens=svc.max_answer_tokens)
            try:
                first = await anext(stream)
                svc.metrics.upstream_attempts.labels(svc.provider.name, "ok").inc()
                break
            except Retryable as exc:
                await stream.aclose()
                svc.metrics.upstream_attempts.labels(svc.provider.name, "retryable").inc()
                log.warning("provider attempt %d failed: %s", attempt, exc)
                if attempt >= policy.attempts:
                    raise _as_client_error(exc) from None
                await svc.sleep(policy.wait(attempt, exc.retry_after))
            except ProviderError as exc:
                await stream.aclose()
                log.warning("provider refused the request: %s", exc)
                raise _as_client_error(exc) from None
        try:
            yield first
            async for event in stream:
                yield event
        except ProviderError as exc:
            # Output already reached the client: never retried, stored as truncated.
            log.warning("provider broke mid-answer: %s", exc)
            raise _as_client_error(exc) from None
        finally:
            await stream.aclose()

    async def _store(self, answer: str, status: str, finish: Finish | None) -> dict[str, int]:
        svc = self._svc
        usage = finish.usage if finish else None
        prompt_tokens = (
            usage.prompt_tokens
            if usage
            else sum(estimate_tokens(m["content"]) for m in self.messages)
        )
        completion_tokens = usage.completion_tokens if usage else estimate_tokens(answer)
        self.answer, self.status = answer, status
        self._finish_reason = finish.reason if finish else "stop"
        self._usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens}
        if not answer and status != "complete":
            # Nothing was said: keep the question in history, out of future context.
            await store.set_message_status(
                svc.engine, message_id=self.turn.user_message_id, status="unanswered"
            )
            self.status = "unanswered"
            return self._usage
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
            meta={"provider": svc.provider.name, "model": self.model, "ai_generated": True},
        )
        return self._usage


def _as_client_error(exc: ProviderError) -> MpchatError:
    return UpstreamTimeout() if isinstance(exc, ProviderTimeout) else UpstreamError()


async def _shielded(work: Awaitable[Any]) -> None:
    """Finish ``work`` even inside a cancelled scope (a disconnected client's request)."""
    task = asyncio.ensure_future(work)
    _background.add(task)
    task.add_done_callback(_background.discard)
    with anyio.CancelScope(shield=True):
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            # Natively cancelled anyway: the task still runs to completion on its own.
            pass
        except Exception:
            log.exception("could not store a truncated answer")
