"""GET /admin/v1/audit: the content safety audit trail; GET /admin/v1/requests: the
OpenAI-compatible surface's request log (when on), for the operator.

Authenticated by ``Authorization: Bearer <MPCHAT_ADMIN_TOKEN>``. With no admin token
configured the admin API does not exist (404), so it cannot be guessed into.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel

from mpchat.api.deps import Svc, parse_cursor, require_admin
from mpchat.devkeys import resolve_secrets
from mpchat.storage import audit, request_log

__all__ = ["router"]


router = APIRouter(prefix="/admin/v1", tags=["admin"], dependencies=[Depends(require_admin)])


class AuditEventOut(BaseModel):
    id: str
    created_at: datetime
    check: str
    stage: str
    verdict: str
    rule: str | None
    user: str  # the keyed hash of the user id
    message_id: str | None
    trace_id: str | None
    excerpt: str | None
    detail: dict[str, Any] | None  # which rule decided (docs/safety.md, Audit)


class AuditPage(BaseModel):
    items: list[AuditEventOut]
    next: str | None


@router.get("/audit", response_model=AuditPage)
async def list_audit(
    svc: Svc,
    check: Literal["local", "wechat"] | None = None,
    stage: Literal["input", "output"] | None = None,
    verdict: Literal["pass", "review", "risky", "unavailable", "hit"] | None = None,
    user: Annotated[str | None, Query(max_length=64, description="a user id")] = None,
    since: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    before: Annotated[str | None, Query(max_length=20)] = None,
) -> AuditPage:
    user_hash = None
    if user is not None:
        # The same key the moderator hashed with: derived from the app's secret.
        user_hash = audit.hash_user(audit.audit_key(resolve_secrets(svc.settings)[0]), user)
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    items, cursor = await audit.list_events(
        svc.engine, check=check, stage=stage, verdict=verdict, user_hash=user_hash,
        since=since, before=parse_cursor(before), limit=limit,
    )
    return AuditPage(
        items=[
            AuditEventOut(
                id=str(e.seq), created_at=e.created_at, check=e.check, stage=e.stage,
                verdict=e.verdict, rule=e.rule, user=e.user_hash, message_id=e.message_id,
                trace_id=e.trace_id, excerpt=e.excerpt, detail=e.detail,
            )
            for e in items
        ],
        next=str(cursor) if cursor is not None else None,
    )


class RequestPage(BaseModel):
    items: list[request_log.LoggedRequest]  # messages and answer None: undecryptable
    next: datetime | None  # pass as ``before`` for the next page


@router.get("/requests", response_model=RequestPage)
async def list_requests(
    svc: Svc,
    key_id: Annotated[str | None, Query(max_length=32)] = None,
    before: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> RequestPage:
    if before is not None and before.tzinfo is None:
        before = before.replace(tzinfo=UTC)
    items = await request_log.list_requests(svc.engine, svc.keyring, key_id=key_id,
                                            before=before, limit=limit + 1)
    page = items[:limit]
    return RequestPage(items=page, next=page[-1].created_at if len(items) > limit else None)
