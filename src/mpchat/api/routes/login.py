"""POST /api/v1/login, POST /api/v1/logout."""

from __future__ import annotations

import hashlib

from fastapi import APIRouter, Request, Response

from mpchat.api.deps import Caller, Svc
from mpchat.api.models import LoginBody, LoginResponse
from mpchat.errors import RateLimited

router = APIRouter(prefix="/api/v1", tags=["identity"])


@router.post("/login", response_model=LoginResponse)
async def login(body: LoginBody, request: Request, svc: Svc) -> LoginResponse:
    cloud_openid = svc.auth.login_openid(request.headers.get("x-wx-openid"))
    decision = await svc.login_limiter.hit(_limit_key(request, cloud_openid))
    if not decision.allowed:
        raise RateLimited(retry_after=decision.retry_after)
    result = await svc.auth.login(code=body.code, cloud_openid=cloud_openid)
    return LoginResponse(token=result.token, expires_in=result.expires_in)


@router.post("/logout", status_code=204)
async def logout(caller: Caller, svc: Svc) -> Response:
    await svc.auth.logout(caller)
    return Response(status_code=204)


def _limit_key(request: Request, cloud_openid: str | None) -> str:
    """Whose logins are counted together, so codes cannot be sprayed.

    Where this service believes the platform's ``X-WX-OPENID`` (`Authenticator.login_openid`),
    every request comes from WeChat's gateway: one bucket per openid (hashed: the key may be
    kept in Redis). Otherwise the client's address, whatever header it sent: the TCP peer, or
    behind the proxies of ``MPCHAT_FORWARDED_ALLOW_IPS`` the address they name (uvicorn
    rewrites ``client``). A forged openid never opens a bucket of its own.
    """
    if cloud_openid:
        return "openid:" + hashlib.sha256(cloud_openid.encode()).hexdigest()[:32]
    return "addr:" + (request.client.host if request.client else "unknown")
