"""POST /v1/chat/completions and GET /v1/models: OpenAI's API, for server-side callers.

Authenticated by the operator's API keys (``Authorization: Bearer sk-mp-...``); errors in
OpenAI's shape (`mpchat.api.errors`). The answer is produced by the chat's own pipeline
(`mpchat.chat.completions`); this module only checks shapes and follows it.
"""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Depends, Path, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from mpchat.api.deps import Svc
from mpchat.api.streaming import FollowResponse, ai_headers
from mpchat.apikeys import ApiKey
from mpchat.chat.completions import CompletionRequest, completion_body
from mpchat.errors import InvalidRequest

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["openai"])

SSE = "text/event-stream; charset=utf-8"
# What a caller may ask of the provider; passed through as it is. Anything else in the
# body is ignored (OpenAI adds fields faster than any proxy; a field the provider does not
# know would fail the request there).
_PASSED = ("temperature", "top_p", "stop", "user", "seed", "presence_penalty",
           "frequency_penalty", "response_format", "tools", "tool_choice",
           "parallel_tool_calls", "functions", "function_call")


class _Message(BaseModel):
    # Tool calls, tool_call_id, name: passed to the provider as they are.
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None


class _StreamOptions(BaseModel):
    include_usage: bool = False


class CompletionBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1, max_length=128)
    messages: list[_Message] = Field(min_length=1, max_length=2000)
    stream: bool = False
    stream_options: _StreamOptions | None = None
    n: int | None = None
    max_tokens: int | None = Field(default=None, ge=1, le=1_000_000)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=1_000_000)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    stop: str | list[Annotated[str, Field(max_length=256)]] | None = Field(default=None,
                                                                          max_length=4)
    user: str | None = Field(default=None, max_length=256)
    seed: int | None = None
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    response_format: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = Field(default=None, max_length=128)
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    functions: list[dict[str, Any]] | None = Field(default=None, max_length=128)
    function_call: str | dict[str, Any] | None = None

    def params(self) -> dict[str, Any]:
        return {name: value for name in _PASSED
                if (value := getattr(self, name)) is not None}


async def _api_key(request: Request, svc: Svc) -> ApiKey:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return await svc.api_keys.authenticate(
        token.strip() if scheme.lower() == "bearer" else None)


Key = Annotated[ApiKey, Depends(_api_key)]


@router.get("/models")
async def models(key: Key, svc: Svc) -> Response:
    names = [m for m in svc.completions.models() if key.allows(m)]
    body = {"object": "list",
            "data": [{"id": m, "object": "model", "created": 0, "owned_by": "mpchat"}
                     for m in names]}
    return Response(orjson.dumps(body), media_type="application/json")


@router.get("/models/{model:path}")
async def model(
    model: Annotated[str, Path(min_length=1, max_length=128)], key: Key, svc: Svc
) -> Response:
    svc.completions.resolve(model, key.allows)  # ModelNotFound: 404 as OpenAI says it
    body = {"id": model, "object": "model", "created": 0, "owned_by": "mpchat"}
    return Response(orjson.dumps(body), media_type="application/json")


@router.post("/chat/completions")
async def chat_completions(body: CompletionBody, key: Key, svc: Svc) -> Response:
    if body.n not in (None, 1):
        raise InvalidRequest("只支持 n=1（only n=1 is supported）")
    created = int(time.time())
    params = body.params()
    keys = svc.api_keys

    async def admit(tokens: int) -> None:
        await keys.admit(key, tokens=tokens)

    async def record_usage(tokens: int) -> None:
        await keys.record_usage(key, tokens=tokens)

    answer = await svc.completions.start(
        CompletionRequest(
            caller=f"key:{key.id}",
            model=body.model,
            messages=[m.model_dump(exclude_none=True) for m in body.messages],
            include_usage=bool(body.stream_options and body.stream_options.include_usage),
            max_tokens=body.max_completion_tokens or body.max_tokens,
            params=params,
            tools=bool(body.tools or body.functions),
            stream=body.stream,
        ),
        allowed=key.allows, admit=admit, record_usage=record_usage,
    )
    try:
        # As the chat's: the stream's headers wait (briefly) for the route that serves.
        await (answer.wait_started() if body.stream else answer.wait_ended())
    except asyncio.CancelledError:
        answer.cancel("client_gone")  # stateless: nobody can pick it up again
        raise
    if answer.failure is not None and (not body.stream or not answer.start_published):
        raise answer.failure  # a status, as OpenAI answers a failed request
    headers = ai_headers(answer.message_id, svc.settings.model_display_name or answer.model)
    if not body.stream:
        return Response(orjson.dumps(completion_body(answer, created=created)),
                        media_type="application/json", headers=headers)

    def left(completed: bool) -> None:
        if not completed:
            answer.cancel("client_gone")

    return FollowResponse(answer.lines_after(-1), headers=headers, on_leave=left,
                          media_type=SSE)
