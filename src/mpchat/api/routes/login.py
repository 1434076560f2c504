"""POST /api/v1/login, POST /api/v1/logout."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from mpchat.api.deps import Caller, Svc
from mpchat.api.models import LoginBody, LoginResponse

router = APIRouter(prefix="/api/v1", tags=["identity"])


@router.post("/login", response_model=LoginResponse)
async def login(body: LoginBody, request: Request, svc: Svc) -> LoginResponse:
    result = await svc.auth.login(code=body.code, cloud_openid=request.headers.get("x-wx-openid"))
    return LoginResponse(token=result.token, expires_in=result.expires_in)


@router.post("/logout", status_code=204)
async def logout(caller: Caller, svc: Svc) -> Response:
    await svc.auth.logout(caller)
    return Response(status_code=204)
