"""The operator's user operations: look a user up, block and unblock them, revoke their sessions.

``POST /admin/v1/users/{user_id}/block``: the user gets 403 ``blocked`` on every call but
login (their token is checked against the database on every call while blocked, on every
instance at once; a session cached as live before the block is re-checked within seconds),
their answers under way stop, and nothing of theirs reaches a provider any more.
``/unblock`` lifts it. ``DELETE /admin/v1/users/{user_id}/sessions`` logs them out everywhere.
Writes need ``MPCHAT_ADMIN_TOKEN``; the read-only token gets 403 ``forbidden``.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel
from starlette.responses import Response

from mpchat.api.deps import Svc, require_admin
from mpchat.errors import NotFound
from mpchat.storage import users as stored

__all__ = ["router"]

log = logging.getLogger("mpchat.admin")
router = APIRouter(prefix="/admin/v1/users", tags=["admin"],
                   dependencies=[Depends(require_admin)])
UserId = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$")]


class UserOut(BaseModel):
    id: str
    created_at: datetime
    blocked_at: datetime | None
    sessions: int  # live login sessions


class UserPage(BaseModel):
    items: list[UserOut]


@router.get("", response_model=UserPage)
async def search_users(
    svc: Svc,
    q: Annotated[str, Query(max_length=32, pattern=r"^[0-9a-f]*$",
                            description="a user id or its start")] = "",
    blocked: bool | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> UserPage:
    found = await stored.search_users(svc.engine, prefix=q, blocked=blocked, limit=limit)
    return UserPage(items=[UserOut(**row) for row in found])


@router.get("/{user_id}", response_model=UserOut)
async def get_user(user_id: UserId, svc: Svc) -> UserOut:
    found = await stored.search_users(svc.engine, prefix=user_id, blocked=None, limit=1)
    if not found or found[0]["id"] != user_id:
        raise NotFound()
    return UserOut(**found[0])


@router.post("/{user_id}/block", status_code=204)
async def block(user_id: UserId, svc: Svc) -> Response:
    if not await stored.set_blocked(svc.engine, user_id=user_id, blocked=True):
        raise NotFound()
    svc.auth.forget_user(user_id)  # this instance: at once
    await svc.chat.answers.stop(user_id=user_id, reason="cancelled")  # and with a relay, all
    log.info("user %s blocked by the operator", user_id)
    return Response(status_code=204)


@router.post("/{user_id}/unblock", status_code=204)
async def unblock(user_id: UserId, svc: Svc) -> Response:
    if not await stored.set_blocked(svc.engine, user_id=user_id, blocked=False):
        raise NotFound()
    log.info("user %s unblocked by the operator", user_id)
    return Response(status_code=204)


@router.delete("/{user_id}/sessions", status_code=204)
async def revoke_sessions(user_id: UserId, svc: Svc) -> Response:
    """Every login of the user ends (401 on their next call; they may log in again)."""
    await stored.delete_user_sessions(svc.engine, user_id=user_id)
    svc.auth.forget_user(user_id)
    log.info("sessions of user %s revoked by the operator", user_id)
    return Response(status_code=204)
