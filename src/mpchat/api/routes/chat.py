"""POST /api/v1/chat (NDJSON stream or one JSON body), and following or stopping an answer."""

from __future__ import annotations

import asyncio
import re
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Path, Query, Request
from starlette.responses import Response

from mpchat.api.deps import Caller, Svc
from mpchat.api.models import ChatBody, ChatResponse
from mpchat.api.streaming import FollowResponse, ai_headers
from mpchat.blank import is_blank
from mpchat.chat.answer import Answer
from mpchat.chat.replay import Folded, fold
from mpchat.chat.service import ChatRequest, Replay
from mpchat.chat.timings import server_timing
from mpchat.errors import InvalidRequest, MpchatError

router = APIRouter(prefix="/api/v1", tags=["chat"])

MessageId = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$")]
# What a client may name a request by (docs/chat.md, "Retrying a request"): ASCII only.
_KEY = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


@router.post(
    "/chat",
    response_model=ChatResponse,
    responses={200: {"content": {"application/x-ndjson": {}}, "description": "stream: true"}},
)
async def chat(body: ChatBody, request: Request, caller: Caller, svc: Svc) -> Any:
    request.state.stream = body.stream
    if is_blank(body.content):  # zero-width characters alone are no question
        raise InvalidRequest("content 不能为空")
    key = request.headers.get("idempotency-key")
    if key is not None and not _KEY.fullmatch(key):
        raise InvalidRequest("Idempotency-Key 须为 1 到 64 个字母、数字或 -_.:")
    try:
        started = await svc.chat.start_once(
            ChatRequest(
                user_id=caller.user_id,
                content=body.content,
                conversation_id=body.conversation_id,
                profile=body.profile,
                idempotency_key=key,
            )
        )
    except MpchatError as exc:  # refused before its answer: counted in the usage records
        usage = svc.chat.ctx.usage
        if usage is not None:
            usage.record_refusal(user_id=caller.user_id, code=exc.code, profile=body.profile)
        raise
    if isinstance(started, Replay):
        return await _replayed(started, body.stream, svc)
    answer = started
    cancel_on_leave = svc.settings.on_disconnect == "cancel"
    try:
        # `start` leaves within a bound (AnswerContext.start_wait): the headers then name
        # the route that serves, and an answer that failed before it gets its HTTP status.
        await (answer.wait_started() if body.stream else answer.wait_ended())
    except asyncio.CancelledError:
        if cancel_on_leave:
            answer.cancel("client_gone")
        raise
    if not body.stream:
        if answer.failure is not None:
            raise answer.failure
        headers = _ai_headers(answer, svc.settings.model_display_name)
        if answer.timings:  # a stream's headers leave too early: its timings are in `done`
            headers["Server-Timing"] = server_timing(answer.timings)
        return Response(orjson.dumps(_body(answer, svc.settings.ai_label)),
                        media_type="application/json", headers=headers)
    if answer.failure is not None and not answer.start_published:
        raise answer.failure  # failed before its start: a plain HTTP status

    def left(completed: bool) -> None:
        if not completed and cancel_on_leave:
            answer.cancel("client_gone")

    lines = answer.lines_after(-1)
    return FollowResponse(lines, headers=_ai_headers(answer, svc.settings.model_display_name),
                          on_leave=left)


@router.get("/messages/{message_id}/events",
            responses={200: {"content": {"application/x-ndjson": {}}}})
async def events(
    message_id: MessageId,
    caller: Caller,
    svc: Svc,
    after: Annotated[int, Query(ge=-1, le=10_000_000)] = -1,
) -> Response:
    lines = await svc.chat.follow(message_id=message_id, user_id=caller.user_id, after=after)
    return FollowResponse(lines)


@router.post("/messages/{message_id}/cancel", status_code=204)
async def cancel(message_id: MessageId, caller: Caller, svc: Svc) -> Response:
    await svc.chat.cancel(message_id=message_id, user_id=caller.user_id)
    return Response(status_code=204)


async def _replayed(replay: Replay, stream: bool, svc: Svc) -> Response:
    """A retried request: the first one's answer, followed from its `start`."""
    headers = ai_headers(replay.message_id,
                         svc.settings.model_display_name or svc.chat.upstream.model)
    if stream:
        return FollowResponse(replay.lines, headers=headers)
    body = _body(await fold(replay.lines), svc.settings.ai_label)
    return Response(orjson.dumps(body), media_type="application/json", headers=headers)


def _body(answer: Answer | Folded, label: str) -> dict[str, Any]:
    """The ``stream: false`` body, of an answer followed here or of one folded from its lines."""
    return {
        "conversation_id": answer.conversation_id,
        "message_id": answer.message_id,
        "content": answer.content,
        "finish_reason": answer.finish_reason,
        "usage": answer.usage,
        "ai_generated": True,
        "label": label,
    } | ({"quota": answer.quota} if answer.quota is not None else {})


def _ai_headers(answer: Answer, display_name: str | None) -> dict[str, str]:
    return ai_headers(answer.message_id, display_name or answer.model)
