"""Dependencies, declared once: the services of the lifespan and the caller's identity."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from mpchat.auth.tokens import Claims
from mpchat.errors import InvalidRequest
from mpchat.services import Services

__all__ = ["Caller", "Svc", "parse_cursor"]


def _services(request: Request) -> Services:
    services: Services = request.state.services
    return services


async def _caller(request: Request) -> Claims:
    services: Services = request.state.services
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if services.auth.mode == "cloudrun":
        return await services.auth.authenticate_cloudrun(request.headers.get("x-wx-openid"))
    return await services.auth.authenticate(token.strip() if scheme.lower() == "bearer" else None)


def parse_cursor(before: str | None) -> int | None:
    """Cursors are opaque to clients; here, the positive sequence number they stand for."""
    if before is None:
        return None
    if not before.isdigit() or len(before) > 18:
        raise InvalidRequest("before 游标不合法")
    return int(before)


Svc = Annotated[Services, Depends(_services)]
Caller = Annotated[Claims, Depends(_caller)]
