"""The task that produces one answer, and the one owner of everything the answer holds.

`Producer.run` reads the provider (through `Upstream`: queue place, retries, failover),
checks the output and publishes the answer's events (`Answers` writes the text so far of
all answers at once). Its
``finally`` is the single place where the answer's resources are given back, however it
ends; the settling is shielded, so no cancellation can leave a slot held or a row
``streaming``:

    ends as            provider call   output checks         stored              last event
    complete           read to end     whole answer checked  complete            done
    provider failure   closed          pending ones finish   truncated/dropped   error
    retracted          closed          (one has failed)      retracted           retract, done
    filtered (strict   closed          (one has failed)      filtered/dropped    done (finish_reason
      mode)                                                                       content_filter)
    cancelled (user,   closed at once  pending ones finish   truncated/dropped   done (cancelled)
      client gone)
    deleted            closed at once  dropped               nothing             error not_found
    shutdown           closed at once  pending ones finish   truncated/dropped   error

"dropped": nothing was said, so there is no answer and the question is ``unanswered``.
A truncated answer keeps only the text that was released to clients. Where an ended
answer goes is its `Keeper`'s business: the conversation's storage (`ConversationKeeper`)
for the mini program's chat, the key's usage for the stateless OpenAI-compatible surface.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
from sqlalchemy.ext.asyncio import AsyncEngine

from mpchat.chat.answer import Answer, Event
from mpchat.chat.keeper import Keeper
from mpchat.chat.moderation import OutputCheck, Retracted, Withheld
from mpchat.chat.timings import Timings
from mpchat.chat.timings import clock as monotonic
from mpchat.chat.upstream import Queued, Served, UpstreamEvent
from mpchat.errors import MpchatError, NotFound, ServiceUnavailable, UpstreamTimeout
from mpchat.estimate import estimate_tokens
from mpchat.metrics import Metrics
from mpchat.providers.types import Delta, Finish, Reasoning, ToolCall
from mpchat.storage.crypto import Keyring
from mpchat.storage.transactions import Transactions
from mpchat.storage.usage import UsageLog

__all__ = ["AnswerContext", "Producer", "SettleQuota", "shielded"]

log = logging.getLogger("mpchat.chat")
# (prompt tokens, completion tokens, whether anything was produced) -> ``done.quota``
SettleQuota = Callable[[int, int, bool], Awaitable[dict[str, Any] | None]]
_background: set[asyncio.Future[Any]] = set()  # strong references to shielded settling


class Deleted(NotFound):
    default_message = "对话已删除"


class ShuttingDown(ServiceUnavailable):
    default_message = "服务正在重启，请稍后查看回答"


@dataclass(slots=True)
class AnswerContext:
    """What a producer needs from the service (one per app)."""

    engine: AsyncEngine
    transactions: Transactions  # the turn's and the answer's writes (storage.transactions)
    keyring: Keyring
    metrics: Metrics
    label: str
    owner: str  # this instance, as the answers' rows name it
    first_delta_deadline: float
    lease: float
    settle_checks_timeout: float = 5.0
    # ``start`` waits for the route that serves (so it names the right model, and an answer
    # failing at once gets an HTTP status), but never longer than this: the client needs
    # the message id to resume.
    start_wait: float = 2.0
    # Deltas released within this many seconds of the previous delta leave as one
    # (MPCHAT_STREAM_COALESCE_MS): fewer lines, fewer writes, fewer `setData` on the phone.
    coalesce: float = 0.0
    clock: Callable[[], float] = lambda: asyncio.get_running_loop().time()
    usage: UsageLog | None = None  # one row per answer, written off its path

    def lease_until(self) -> datetime:
        return datetime.now(UTC) + timedelta(seconds=self.lease)


class Producer:
    """Produces one answer; `run` is the answer's task. Built by the service that starts it."""

    def __init__(
        self,
        ctx: AnswerContext,
        answer: Answer,
        *,
        upstream: AsyncIterator[UpstreamEvent],
        close_upstream: Callable[[], Awaitable[None]],
        check: OutputCheck,
        keeper: Keeper,
        prompt_tokens: int,
        received_at: float,
        on_complete: Callable[[], None] | None = None,
        settle_quota: SettleQuota | None = None,
        timings: Timings | None = None,
        first_delta_deadline: float | None = None,
    ) -> None:
        self.ctx = ctx
        # The service's, unless this answer's first text is all of it (a non-streamed one).
        self._first_delta_deadline = first_delta_deadline or ctx.first_delta_deadline
        self.timings = timings or Timings.begin()  # a few clock reads, none per delta
        self._settle_quota = settle_quota  # the user's quota reservation, if any
        self._on_complete = on_complete  # e.g. summarise the turns its context left out
        self.answer = answer
        self._upstream = upstream
        self._close_upstream = close_upstream
        self._check = check
        check.on_release(self._release)  # strict mode: text whose check passed meanwhile
        self._keeper = keeper
        self._prompt_tokens = prompt_tokens
        self._received_at = received_at
        self._released = answer.released  # text published as deltas
        self._said: list[str] = []  # everything the provider said
        self._finish: Finish | None = None
        self._serving = False  # the provider has said something (text or reasoning)
        self._held: list[str] = []  # released text waiting for its coalescing window
        self._flush: asyncio.TimerHandle | None = None

    async def run(self) -> None:
        answer, ctx = self.answer, self.ctx
        ctx.metrics.answering.inc()
        outcome = "complete"
        timer = asyncio.get_running_loop().call_later(ctx.start_wait, self._start)
        try:
            await self._stream()
        except Withheld as exc:  # nothing unchecked was shown: what was shown stays
            outcome = "filtered"
            log.info("answer %s stopped by content safety: %s", answer.message_id, exc.reason)
        except Retracted as exc:
            outcome = "retracted"
            log.info("answer %s retracted: %s", answer.message_id, exc.reason)
        except MpchatError as exc:
            outcome, answer.failure = "truncated", exc
        except asyncio.CancelledError:
            if answer.cancel_reason is None:
                answer.cancel_reason = "shutdown"  # torn down from outside: store what exists
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            outcome = "truncated"
        except Exception:
            log.exception("answer %s failed", answer.message_id)
            outcome, answer.failure = "truncated", MpchatError()
        finally:
            # The one place the answer's resources are given back. From here on it is
            # settling: a stop that comes now is too late to change how it ended.
            answer.settling = True
            timer.cancel()
            await shielded(self._close_upstream())
            await shielded(self._settle(outcome))
            log.debug("answer %s status=%s timings=%s", answer.message_id, answer.status,
                      answer.timings)
            ctx.metrics.answering.dec()
            ctx.metrics.chats.labels(answer.status).inc()

    # -- producing -------------------------------------------------------------------------

    async def _stream(self) -> None:
        answer, ctx, check = self.answer, self.ctx, self._check
        deadline = self._received_at + self._first_delta_deadline
        upstream = self._upstream
        self.timings.reading = monotonic()
        while True:
            try:
                if self._serving:
                    event = await anext(upstream)
                else:
                    # Queue, retries and backoff together never keep a client waiting
                    # for its first words longer than the deadline.
                    async with asyncio.timeout_at(deadline):
                        event = await anext(upstream)
            except StopAsyncIteration:
                break
            except TimeoutError:
                raise UpstreamTimeout() from None
            if isinstance(event, Delta):
                self._start()
                if not self._said:
                    ctx.metrics.first_delta.observe(ctx.clock() - self._received_at)
                self._said.append(event.text)
                text = check.feed(event.text)
                check.verdict()
                if text:
                    self._release(text)
            elif isinstance(event, Reasoning):
                self._start()
                self._publish_held()
                answer.publish({"type": "reasoning", "text": event.text})
            elif isinstance(event, ToolCall):  # asked for by the OpenAI-compatible surface
                self._start()
                self._publish_held()
                answer.add_tool_call(event)
                answer.publish({"type": "tool_call", "index": event.index, "id": event.id,
                                "name": event.name, "arguments": event.arguments})
            elif isinstance(event, Served):
                answer.provider, answer.model = event.provider, event.model
                self.timings.called, self.timings.first_token = event.called, event.first_token
                self._serving = True
                self._start()
            elif isinstance(event, Queued):
                self._start()
                answer.publish({"type": "queued", "position": event.position})
            elif isinstance(event, Finish):
                self._finish = event
        self.timings.ended = monotonic()
        tail = await check.finish()
        if tail:
            self._start()
            self._release(tail)

    def _start(self) -> None:
        """``start`` leaves with the first sign of life: a queue place or the provider's."""
        answer = self.answer
        if not answer.started and not answer.ended:
            answer.publish({
                "type": "start",
                "conversation_id": answer.conversation_id,
                "message_id": answer.message_id,
                "model": answer.model,
                "ai_generated": True,
                "label": self.ctx.label,
            })

    def _release(self, text: str) -> None:
        # Kept on the answer, whose text so far `Answers` writes with all others' at once.
        self._released.append(text)
        window = self.ctx.coalesce
        if len(self._released) == 1:
            self.timings.first_delta = monotonic()
            self.answer.publish({"type": "delta", "text": text})  # the first words at once
            return
        if not window:
            self.answer.publish({"type": "delta", "text": text})
            return
        self._held.append(text)
        if self._flush is None:
            self._flush = asyncio.get_running_loop().call_later(window, self._publish_held)

    def _publish_held(self) -> None:
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        if self._held:
            text, self._held = "".join(self._held), []
            self.answer.publish({"type": "delta", "text": text})

    # -- settling --------------------------------------------------------------------------

    async def _settle(self, outcome: str) -> None:
        answer, ctx, check = self.answer, self.ctx, self._check
        reason = answer.cancel_reason
        if outcome == "truncated" and reason != "deleted":
            try:
                # The checks of text already shown finish, so what is stored was checked.
                async with asyncio.timeout(ctx.settle_checks_timeout):
                    await check.conclude()
            except Retracted:
                outcome = "retracted"
            except TimeoutError:
                log.warning("answer %s: output checks did not finish in time",
                            answer.message_id)
        await check.aclose()
        answer.quota = await self._settled_quota()
        if reason == "deleted":
            answer.status, answer.failure = "deleted", Deleted()
            self._end({"type": "error", **answer.failure.to_dict()})
            return
        if reason == "shutdown" and answer.failure is None:
            answer.failure = ShuttingDown(retry_after=5)
        if reason is not None and answer.failure is None:
            answer.finish_reason = "cancelled"
        elif self._finish is not None:
            answer.finish_reason = self._finish.reason
        if outcome == "retracted":
            self._held = []  # withdrawn with the rest: never shown
            text = "".join(self._said)
            answer.finish_reason = "content_filter"
        else:
            text = "".join(self._released)
            if outcome == "filtered":
                answer.finish_reason = "content_filter"
        usage = self._finish.usage if self._finish is not None else None
        answer.usage = {
            "prompt_tokens": usage.prompt_tokens if usage else self._prompt_tokens,
            "completion_tokens": usage.completion_tokens if usage else estimate_tokens(text),
        }
        answer.content = "" if outcome == "retracted" else text
        self.timings.settle(answer, self.ctx.metrics.phases)
        self._lead_in()  # first, so that the seq stored below is the last event's
        terminal = self._terminal(outcome)
        try:
            if outcome != "retracted" and not text and not answer.tool_calls:
                answer.status = "unanswered"
                await self._keeper.drop(answer)
            else:
                answer.status = outcome
                meta = {"ai_generated": True, "content_id": answer.message_id,
                        "provider": answer.provider, "model": answer.model,
                        "reply_to": answer.question_id, "finish_reason": answer.finish_reason,
                        "timings": answer.timings}
                if answer.failure is not None:
                    meta["error"] = answer.failure.to_dict()
                kept = await self._keeper.keep(answer, content=text, meta=meta,
                                               event_seq=answer.next_seq + len(terminal) - 1)
                if not kept:
                    answer.status = "deleted"
                    terminal = [{"type": "error", **Deleted().to_dict()}]
        except Exception:
            # The row stays "streaming"; the sweeper settles it once this claim expires.
            log.exception("could not store answer %s", answer.message_id)
            answer.status = "unstored"
            answer.failure = ServiceUnavailable(retry_after=5)
            terminal = [{"type": "error", **answer.failure.to_dict()}]
        if answer.status == "complete" and self._on_complete is not None:
            self._on_complete()
        self._end(*terminal)

    async def _settled_quota(self) -> dict[str, Any] | None:
        """The quota reservation settled at what the answer really cost: the provider's
        usage, else an estimate of what it said (nothing said costs nothing)."""
        if self._settle_quota is None:
            return None
        usage = self._finish.usage if self._finish is not None else None
        said = "".join(self._said)
        try:
            return await self._settle_quota(
                usage.prompt_tokens if usage else self._prompt_tokens,
                usage.completion_tokens if usage else estimate_tokens(said), bool(said))
        except Exception:  # left open: the sweep releases it, at no cost to the user
            log.warning("answer %s: quota not settled", self.answer.message_id, exc_info=True)
            return None

    def _terminal(self, outcome: str) -> list[Event]:
        answer = self.answer
        if answer.failure is not None and outcome != "retracted":
            return [{"type": "error", **answer.failure.to_dict()}]
        done: Event = {"type": "done", "usage": answer.usage, "model": answer.model,
                       "finish_reason": "content_filter" if outcome == "retracted"
                       else answer.finish_reason}
        if answer.quota is not None:
            done["quota"] = answer.quota
        if answer.timings:
            done["timings"] = answer.timings
        if outcome == "retracted":
            return [{"type": "retract", "reason": "content_safety"}, done]
        return [done]

    def _lead_in(self) -> None:
        """What leaves before the last events: held text, and `start` unless the answer
        failed before it (then its request gets an HTTP status instead). Idempotent."""
        self._publish_held()
        if self.answer.started or self.answer.failure is None:
            self._start()

    def _end(self, *events: Event) -> None:
        answer = self.answer
        self._lead_in()
        for event in events:
            answer.publish(event)
        answer.end(self.ctx.clock())
        if self.ctx.usage is not None:
            self.ctx.usage.record_answer(answer, profile=self.timings.profile)


async def shielded(work: Awaitable[Any]) -> None:
    """Finish ``work`` even inside a cancelled scope; its exceptions propagate.

    If the caller is cancelled natively anyway, the work still runs to completion on its
    own (strongly referenced in ``_background``).
    """
    task = asyncio.ensure_future(work)
    _background.add(task)
    task.add_done_callback(_background.discard)
    with anyio.CancelScope(shield=True):
        await asyncio.shield(task)

