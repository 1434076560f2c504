"""The OpenAI-compatible surface's answers: stateless, on the chat's own pipeline.

A completion is produced like a chat answer: the same `Upstream` (routes, queue, retries,
failover), the same `Producer` (one owner of every resource, shielded settling, the
first-delta deadline), the same output checks and the service's task group (shutdown).
Four things differ:

* the caller sends the whole conversation and nothing of it is stored: the answer's
  `Keeper` only records what the key used (`UsageKeeper`);
* events are encoded once as OpenAI's ``chat.completion.chunk`` server-sent events
  (`ChunkEncoder`), so a follower writes them as they are;
* WeChat's content check needs the openid of a mini program user, which an API caller has
  not: the local list checks the input (every message) and the output, as it streams;
* a caller that does not stream gets its answer asked of the provider whole (one JSON body,
  `Options.stream`): the provider layer turns it into the events a stream gives (one delta,
  then the finish), so everything above is the same; only the first-delta deadline, the
  whole answer's wait then, is the longer ``answer_deadline``.

    POST /v1/chat/completions ─▶ Completions.start ─▶ Answer (stored=False) ─▶ SSE lines
                                      │ model, key's limits, local check, admission
                                      └─▶ Producer(keeper=UsageKeeper) in `Answers`
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from mpchat.chat.answer import Answer, Event
from mpchat.chat.answers import Answers
from mpchat.chat.moderation import Moderation, NoModeration
from mpchat.chat.producer import AnswerContext, Producer, shielded
from mpchat.chat.upstream import Upstream
from mpchat.errors import InvalidRequest, MpchatError, NotFound
from mpchat.estimate import estimate_tokens
from mpchat.providers.types import Message, Options
from mpchat.storage.request_log import LoggedRequest, RequestLog

__all__ = [
    "SSE_PING",
    "ChunkEncoder",
    "CompletionRequest",
    "Completions",
    "ModelNotFound",
    "UsageKeeper",
    "completion_body",
    "openai_error",
]

SSE_PING = b": ping\n\n"  # a comment line: every SSE reader skips it
_DONE = b"data: [DONE]\n\n"


class ModelNotFound(NotFound):
    """An unknown model, or one the key may not use (the same answer: no enumeration)."""

    code = "model_not_found"
    default_message = "模型不存在或无权使用"


@dataclass(frozen=True, slots=True)
class CompletionRequest:
    """A validated ``/v1/chat/completions`` request (the edge checked shapes and bounds)."""

    caller: str  # whose queue place and limits: ``key:<id>``
    model: str  # as asked: a model or an alias
    messages: Sequence[Message]
    include_usage: bool = False
    max_tokens: int | None = None
    params: Mapping[str, Any] = field(default_factory=dict)  # passed through as they are
    tools: bool = False  # whether ``params`` ask for tools (or functions)
    stream: bool = True  # False: the caller waits for the whole answer (one JSON body)


class Completions:
    """Starts stateless answers; one per app, made in the lifespan."""

    def __init__(
        self,
        *,
        ctx: AnswerContext,
        answers: Answers,
        upstream: Upstream,
        aliases: Mapping[str, str],
        moderation: Moderation | None = None,
        max_answer_tokens: int | None = None,
        request_log: RequestLog | None = None,
        answer_deadline: float | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.ctx = ctx
        # A non-streamed answer's first text is all of it: queue, retries and the whole
        # answer's making must fit in this (never less than the first-delta deadline).
        self.answer_deadline = answer_deadline
        self.request_log = request_log
        self.answers = answers
        self.upstream = upstream
        self.moderation = moderation or NoModeration()
        self.max_answer_tokens = max_answer_tokens
        self._wall_clock = wall_clock
        served = upstream.models()
        # "default" is always there: the config's alias, else the model the chat uses.
        self.aliases = {"default": upstream.model,
                        **{a: t for a, t in aliases.items() if t in served}}
        self._names = [*served, *(a for a in self.aliases if a not in served)]

    def models(self) -> list[str]:
        """Every model a caller may name: those served, then the aliases."""
        return list(self._names)

    def resolve(self, model: str, allowed: Callable[[str], bool] = lambda _: True) -> str:
        """The served model ``model`` names; `ModelNotFound` if none (or not ``allowed``)."""
        concrete = self.aliases.get(model, model)
        if not self.upstream.serves(concrete) or not (allowed(model) or allowed(concrete)):
            raise ModelNotFound()
        return concrete

    async def start(
        self,
        request: CompletionRequest,
        *,
        allowed: Callable[[str], bool] = lambda _: True,
        admit: Callable[[int], Awaitable[None]] | None = None,
        record_usage: Callable[[int], Awaitable[None]] | None = None,
    ) -> Answer:
        """Check and admit the request, launch its answer; `MpchatError` before it.

        ``allowed`` is the key's model allow-list, ``admit(tokens)`` its limits and quota
        (raising `RateLimited`/`QuotaExceeded`), ``record_usage(tokens)`` where its use goes.
        """
        ctx = self.ctx
        received_at = ctx.clock()
        model = self.resolve(request.model, allowed)
        if request.tools and not self.upstream.serves(model, tools=True):
            raise InvalidRequest("该模型不支持 tools")
        tokens = 0
        for text in _texts(request.messages):
            self.moderation.check_input_locally(text, user_id=request.caller)
            tokens += estimate_tokens(text)
        max_tokens = request.max_tokens or self.max_answer_tokens
        if admit is not None:
            await admit(tokens + (max_tokens or 0))
        admission = await self.upstream.admit(request.caller, tokens=tokens, model=model)
        source = self.upstream.stream(
            request.messages, user_key=request.caller, tokens=tokens, admission=admission,
            max_tokens=max_tokens,
            options=Options(model=model, params=request.params, stream=request.stream),
        )

        async def close_upstream() -> None:
            await source.aclose()  # the generator's finally frees the slot and budget
            await admission.release()  # idempotent; covers a generator never started

        message_id = "chatcmpl-" + secrets.token_hex(12)
        try:
            encode: Callable[[Event], bytes] = _unread
            if request.stream:
                encode = ChunkEncoder(completion_id=message_id, created=int(self._wall_clock()),
                                      model=model, include_usage=request.include_usage)
            answer = self.answers.new(
                message_id=message_id, user_id=request.caller, conversation_id="",
                question_id="", model=model, encode=encode, ping_line=SSE_PING, stored=False,
            )
            check = self.moderation.output(user_id=request.caller, message_id=message_id,
                                           remote=False)
        except BaseException:
            await shielded(close_upstream())
            raise
        keeper = UsageKeeper(record_usage, self._logger(request))
        producer = Producer(ctx, answer, upstream=source, close_upstream=close_upstream,
                            check=check, keeper=keeper, prompt_tokens=tokens,
                            received_at=received_at,
                            first_delta_deadline=None if request.stream
                            else max(self.answer_deadline or 0.0, ctx.first_delta_deadline))
        self.answers.launch(answer, producer.run)
        return answer

    def _logger(self, request: CompletionRequest) -> Callable[[Answer, str], None] | None:
        """With the request log on: how this request's ending is recorded."""
        request_log = self.request_log
        if request_log is None:
            return None
        key_id = request.caller.removeprefix("key:")

        def log(answer: Answer, content: str) -> None:
            request_log.record(LoggedRequest(
                id=answer.message_id, key_id=key_id, model=answer.model, status=answer.status,
                finish_reason=answer.finish_reason, prompt_tokens=answer.usage["prompt_tokens"],
                completion_tokens=answer.usage["completion_tokens"],
                messages=list(request.messages), answer=content,
            ))

        return log


class UsageKeeper:
    """A stateless answer is kept nowhere (but in the request log, when it is on); what it
    cost goes to the caller's key."""

    def __init__(self, record: Callable[[int], Awaitable[None]] | None,
                 log: Callable[[Answer, str], None] | None = None) -> None:
        self._record = record
        self._log = log

    async def keep(self, answer: Answer, *, content: str, meta: dict[str, Any],
                   event_seq: int) -> bool:
        if self._log is not None:
            self._log(answer, content)
        if self._record is not None:
            await self._record(answer.usage["prompt_tokens"] + answer.usage["completion_tokens"])
        return True

    async def drop(self, answer: Answer) -> None:
        """Nothing was said: it costs nothing (a request log still records it)."""
        if self._log is not None:
            self._log(answer, "")


def _unread(event: Event) -> bytes:
    """A non-streamed answer's events: nobody reads them (its one body is made from the
    ended answer, `completion_body`), so they are not encoded."""
    return b""


def _texts(messages: Sequence[Message]) -> list[str]:
    """The text of every message, for the local check and the token estimate."""
    texts = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            texts.extend(p["text"] for p in content
                         if isinstance(p, dict) and isinstance(p.get("text"), str))
    return texts


# -- OpenAI's wire format ----------------------------------------------------------------

# Errors as OpenAI's SDKs know them: the HTTP status OpenAI uses, its error ``type``, and
# its ``code`` where it has one (mpchat's own stable code otherwise; docs/openai.md).
_RENAMED = {
    "unauthorized": "invalid_api_key",
    "rate_limited": "rate_limit_exceeded",
    "quota_exceeded": "insufficient_quota",
}
_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
          404: "invalid_request_error", 413: "invalid_request_error", 429: "rate_limit_error"}


def openai_error(exc: MpchatError) -> tuple[int, dict[str, Any]]:
    """The HTTP status and body OpenAI would answer for ``exc``."""
    status = 429 if exc.code == "quota_exceeded" else exc.status  # OpenAI's quota is a 429
    return status, _error_body(exc.code, exc.message, status)


def _error_body(code: str, message: str, status: int) -> dict[str, Any]:
    code = _RENAMED.get(code, code)
    kind = "insufficient_quota" if code == "insufficient_quota" else _TYPES.get(
        status, "server_error")
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


class ChunkEncoder:
    """An answer's events as OpenAI's streamed chunks (SSE lines), each encoded once."""

    __slots__ = ("_head", "_include_usage", "completion_id", "created", "model")

    def __init__(self, *, completion_id: str, created: int, model: str,
                 include_usage: bool) -> None:
        self.completion_id = completion_id
        self.created = created
        self._include_usage = include_usage
        self.model = model
        self._head = self._prefix(model)

    def _prefix(self, model: str) -> bytes:
        # Every chunk starts alike: built once (and again if a failover changes the model).
        self.model = model
        head = orjson.dumps({"id": self.completion_id, "object": "chat.completion.chunk",
                             "created": self.created, "model": model,
                             "system_fingerprint": None})
        return b"data: " + head[:-1] + b',"choices":[{"index":0,"delta":'

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        tail = b',"logprobs":null,"finish_reason":' + orjson.dumps(finish) + b"}]}\n\n"
        return self._head + orjson.dumps(delta) + tail

    def __call__(self, event: Event) -> bytes:
        kind = event["type"]
        if kind == "delta":
            return self._chunk({"content": event["text"]})
        if kind == "reasoning":  # DeepSeek's name for it, which most clients know
            return self._chunk({"reasoning_content": event["text"]})
        if kind == "tool_call":
            return self._chunk({"tool_calls": [_tool_call_piece(event)]})
        if kind == "start":
            self._head = self._prefix(event["model"])
            return self._chunk({"role": "assistant", "content": ""})
        if kind == "done":
            if event["model"] != self.model:
                self._head = self._prefix(event["model"])
            lines = [self._chunk({}, event["finish_reason"])]
            if self._include_usage:
                lines.append(self._usage_chunk(event["usage"]))
            lines.append(_DONE)
            return b"".join(lines)
        if kind == "error":  # after the start: the answer failed (OpenAI's SDKs raise it)
            body = _error_body(event["code"], event["message"], 500)
            return b"data: " + orjson.dumps(body) + b"\n\n"
        if kind == "queued":
            return b": queued " + str(event["position"]).encode("ascii") + b"\n\n"
        name: str = kind
        return b": " + name.encode("ascii") + b"\n\n"  # retract: the done after it says it

    def _usage_chunk(self, usage: Mapping[str, int]) -> bytes:
        return b"data: " + orjson.dumps({
            "id": self.completion_id, "object": "chat.completion.chunk",
            "created": self.created, "model": self.model, "system_fingerprint": None,
            "choices": [], "usage": _usage(usage)}) + b"\n\n"


def _tool_call_piece(event: Event) -> dict[str, Any]:
    function: dict[str, Any] = {"arguments": event["arguments"]}
    piece: dict[str, Any] = {"index": event["index"]}
    if event["id"] is not None:
        piece["id"] = event["id"]
        piece["type"] = "function"
    if event["name"] is not None:
        function["name"] = event["name"]
    piece["function"] = function
    return piece


def _usage(usage: Mapping[str, int]) -> dict[str, int]:
    prompt, completion = usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}


def completion_body(answer: Answer, *, created: int) -> dict[str, Any]:
    """The non-streamed ``chat.completion`` of an ended answer."""
    message: dict[str, Any] = {"role": "assistant", "content": answer.content,
                               "refusal": None}
    if answer.tool_calls:
        message["tool_calls"] = [{k: v for k, v in call.items() if k != "index"}
                                 for call in answer.tool_calls]
        message["content"] = answer.content or None
    return {
        "id": answer.message_id,
        "object": "chat.completion",
        "created": created,
        "model": answer.model,
        "system_fingerprint": None,
        "choices": [{"index": 0, "message": message, "logprobs": None,
                     "finish_reason": answer.finish_reason}],
        "usage": _usage(answer.usage),
    }
