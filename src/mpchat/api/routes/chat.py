"""POST /api/v1/chat: NDJSON stream (default) or one JSON body."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response, StreamingResponse

from mpchat.api.deps import Caller, Svc
from mpchat.api.errors import NDJSON
from mpchat.api.models import ChatBody, ChatResponse
from mpchat.chat.service import ChatRequest, ChatRun

router = APIRouter(prefix="/api/v1", tags=["chat"])


@router.post(
    "/chat",
    response_model=ChatResponse,
    responses={200: {"content": {"application/x-ndjson": {}}, "description": "stream: true"}},
)
async def chat(body: ChatBody, request: Request, caller: Caller, svc: Svc) -> Any:
    request.state.stream = body.stream
    run = await svc.chat.start(
        ChatRequest(
            user_id=caller.user_id,
            content=body.content,
            conversation_id=body.conversation_id,
            profile=body.profile,
        )
    )
    if not body.stream:
        return Response(orjson.dumps(await run.collect()), media_type="application/json")
    return StreamingResponse(_ndjson(run), media_type=NDJSON)


async def _ndjson(run: ChatRun) -> AsyncIterator[bytes]:
    events = run.events()
    try:
        async for event in events:
            yield orjson.dumps(event) + b"\n"
    finally:
        # Close at once when the client goes away, so the answer so far is stored and the
        # provider request is cancelled now, not whenever the generator is collected.
        await events.aclose()
