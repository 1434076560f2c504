"""GET /api/v1/me: the caller's remaining chat budget (rate limit, quota and credits)."""

from __future__ import annotations

from fastapi import APIRouter

from mpchat.api.deps import Caller, Svc

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
