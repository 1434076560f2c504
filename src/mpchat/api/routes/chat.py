"""POST /api/v1/chat: NDJSON stream (default) or one JSON body."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

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
    headers = _ai_headers(run, svc.settings.model_display_name)
    if not body.stream:
        return Response(orjson.dumps(await run.collect()), media_type="application/json",
                         headers=headers)
    return StreamingResponse(_ndjson(run), media_type=NDJSON, headers=headers)


def _ai_headers(run: ChatRun, display_name: str | None) -> dict[str, str]:
    """The implicit AI-content marker (docs/safety.md, "Labels"), beside the visible label."""
    return {
        "X-AI-Generated": "true",
        "X-AI-Content-Id": run.message_id,
        # Percent-encoded: header values are latin-1 and a display name may be Chinese.
        "X-AI-Provider": quote(display_name or run.model, safe=""),
    }


async def _ndjson(run: ChatRun) -> AsyncIterator[bytes]:
    events = run.events()
    try:
        async for event in events:
            yield orjson.dumps(event) + b"\n"
    finally:
        # Close at once when the client goes away, so the answer so far is stored and the
        # provider request is cancelled now, not whenever the generator is collected.
        await events.aclose()
