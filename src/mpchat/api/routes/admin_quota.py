"""/admin/v1: a user's balance and ledger, credits granted or taken back, totals per day."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, Field

from mpchat.api.deps import Svc, parse_cursor, require_admin
from mpchat.errors import NotFound
from mpchat.services import Services
from mpchat.storage.users import openid_of

__all__ = ["router"]

router = APIRouter(prefix="/admin/v1", tags=["admin"], dependencies=[Depends(require_admin)])

UserId = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$")]


class CreditsBody(BaseModel):
    amount: int = Field(strict=True, ge=-(10**12), le=10**12)  # negative: taken back
    reason: str = Field(min_length=1, max_length=200, strict=True)
    # The same key again changes nothing (a retried request); default: a new one.
    key: str | None = Field(default=None, min_length=1, max_length=64, strict=True)


async def _known(svc: Services, user_id: str) -> None:
    if await openid_of(svc.engine, user_id=user_id) is None:
        raise NotFound("用户不存在")


@router.get("/users/{user_id}/quota")
async def user_quota(
    user_id: UserId,
    svc: Svc,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    before: Annotated[str | None, Query(max_length=20)] = None,
) -> dict[str, object]:
    """The balance, the free allowance left and the ledger, newest first (``next``: a cursor)."""
    await _known(svc, user_id)
    view = await svc.quotas.view(user_id)
    rows = await svc.quotas.ledger(user_id, limit=limit, before=parse_cursor(before))
    quota = view.to_dict()
    if view.enabled:
        quota["free_units"] = view.free_units
    return {
        "user_id": user_id, "quota": quota, "ledger": [row.to_dict() for row in rows],
        "next": str(rows[-1].seq) if len(rows) == limit else None,
    }


@router.post("/users/{user_id}/credits")
async def grant_credits(user_id: UserId, body: CreditsBody, svc: Svc) -> dict[str, object]:
    """A ledger row; refused (400) when it would take the balance below zero."""
    await _known(svc, user_id)
    key = body.key or uuid.uuid4().hex
    applied = await svc.quotas.grant(user_id, body.amount, reason=body.reason, key=key)
    return {"applied": applied, "key": key,
            "quota": (await svc.quotas.view(user_id)).to_dict()}


@router.get("/quota/daily")
async def daily_totals(
    svc: Svc, days: Annotated[int, Query(ge=1, le=366)] = 7
) -> dict[str, object]:
    """The last ``days`` local days (the quota's timezone), newest first, today included."""
    totals = await svc.quotas.totals_per_day(days)
    return {"timezone": svc.quotas.config.timezone, "items": [t.to_dict() for t in totals]}
