"""Conversations and their messages; deletion of one, or of all the caller's data."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from mpchat.api.deps import Caller, Svc, parse_cursor
from mpchat.api.models import ConversationOut, ConversationPage, MessageOut, MessagePage
from mpchat.errors import NotFound
from mpchat.storage import conversations, messages

router = APIRouter(prefix="/api/v1", tags=["conversations"])

ConversationId = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$")]


@router.get("/conversations", response_model=ConversationPage)
async def list_conversations(
    caller: Caller,
    svc: Svc,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    before: Annotated[str | None, Query(max_length=20)] = None,
) -> ConversationPage:
    items, cursor = await conversations.list_conversations(
        svc.engine, svc.keyring, user_id=caller.user_id, limit=limit, before=parse_cursor(before)
    )
    return ConversationPage(
        items=[
            ConversationOut(
                id=c.id, title=c.title, updated_at=c.updated_at, message_count=c.message_count
            )
            for c in items
        ],
        next=str(cursor) if cursor is not None else None,
    )


@router.get("/conversations/{conversation_id}/messages", response_model=MessagePage)
async def list_messages(
    conversation_id: ConversationId,
    caller: Caller,
    svc: Svc,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    before: Annotated[str | None, Query(max_length=20)] = None,
) -> MessagePage:
    items, cursor = await messages.list_messages(
        svc.engine,
        svc.keyring,
        conversation_id=conversation_id,
        user_id=caller.user_id,
        limit=limit,
        before=parse_cursor(before),
    )
    return MessagePage(
        items=[
            MessageOut(
                id=m.id, role=m.role, content=m.content, status=m.status,
                created_at=m.created_at, summarized=m.summarized,
            )
            for m in items
        ],
        next=str(cursor) if cursor is not None else None,
    )


@router.delete("/conversations/{conversation_id}", status_code=204)
async def delete_conversation(
    conversation_id: ConversationId, caller: Caller, svc: Svc
) -> Response:
    await svc.chat.stop_conversation(conversation_id, user_id=caller.user_id)
    if not await conversations.delete_conversation(
        svc.engine, conversation_id=conversation_id, user_id=caller.user_id
    ):
        raise NotFound()
    return Response(status_code=204)


@router.delete("/me/data", status_code=204)
async def delete_my_data(caller: Caller, svc: Svc) -> Response:
    await svc.chat.stop_user(caller.user_id)  # answers under way store nothing
    if svc.chat.ctx.usage is not None:
        await svc.chat.ctx.usage.flush()  # their usage records written, so deleted below
    await conversations.delete_user_data(svc.engine, user_id=caller.user_id)
    await svc.moderation.forget_user(caller.user_id)  # audit rows kept, anonymised
    svc.auth.forget_user(caller.user_id)
    return Response(status_code=204)
