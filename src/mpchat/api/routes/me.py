"""GET /api/v1/me: the caller's remaining chat budget (rate limit, quota and credits);
GET /api/v1/me/export: all their data."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from mpchat.api.deps import Caller, Svc
from mpchat.storage.export import export_user

router = APIRouter(prefix="/api/v1", tags=["identity"])


@router.get("/me")
async def me(caller: Caller, svc: Svc) -> dict[str, object]:
    decision = await svc.limiter.peek(caller.user_id)
    return {
        "user_id": caller.user_id,
        "rate_limit": {
            "limit": decision.limit,
            "window_s": svc.limiter.rate.window,
            "remaining": decision.remaining,
            "reset_s": round(decision.reset_s, 3),
        },
        "quota": (await svc.quotas.view(caller.user_id)).to_dict(),
    }


@router.get("/me/export")
async def export(caller: Caller, svc: Svc) -> dict[str, Any]:
    """Everything the service holds about the caller, as one JSON document (docs/security.md)."""
    return await export_user(
        svc.engine, svc.keyring, user_id=caller.user_id, label=svc.settings.ai_label,
        user_hash=await svc.moderation.user_events_key(caller.user_id),
    )
