"""POST /api/v1/login, POST /api/v1/logout."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from mpchat.api.deps import Caller, Svc
from mpchat.api.models import LoginBody, LoginResponse
from mpchat.errors import RateLimited

router = APIRouter(prefix="/api/v1", tags=["identity"])


@router.post("/login", response_model=LoginResponse)
async def login(body: LoginBody, request: Request, svc: Svc) -> LoginResponse:
    # Per client address, so codes cannot be sprayed. Behind a proxy, run uvicorn with
    # --proxy-headers / --forwarded-allow-ips so this is the real client's address.
    address = request.client.host if request.client else "unknown"
    decision = await svc.login_limiter.hit(address)
    if not decision.allowed:
        raise RateLimited(retry_after=decision.retry_after)
    result = await svc.auth.login(code=body.code, cloud_openid=request.headers.get("x-wx-openid"))
    return LoginResponse(token=result.token, expires_in=result.expires_in)


@router.post("/logout", status_code=204)
async def logout(caller: Caller, svc: Svc) -> Response:
    await svc.auth.logout(caller)
    return Response(status_code=204)
