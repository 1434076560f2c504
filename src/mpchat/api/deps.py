"""Dependencies, declared once: the services of the lifespan and the caller's identity."""

from __future__ import annotations

import hmac
from typing import Annotated, TypedDict, cast

from fastapi import Depends, Request

from mpchat.auth.tokens import Claims
from mpchat.errors import Forbidden, InvalidRequest, NotFound, Unauthorized
from mpchat.services import Services

__all__ = ["AppState", "Caller", "Svc", "parse_cursor", "require_admin", "services_of"]


class AppState(TypedDict):
    """What the app's lifespan yields (Starlette's lifespan state): the server hands a
    copy of it to every request as ``request.state``."""

    services: Services


def services_of(request: Request) -> Services:
    """The lifespan's `Services`: the one place that reads the request's state.

    FastAPI cannot inject a ``Request[AppState]``, so the state's type is stated here.
    """
    return cast(AppState, request.state)["services"]


async def _services(request: Request) -> Services:
    # async: FastAPI would run a plain def in a worker thread, on every request.
    return services_of(request)


Svc = Annotated[Services, Depends(_services)]


async def _caller(request: Request, svc: Svc) -> Claims:
    """A bearer session token; only where the operator said WeChat's gateway is the sole way
    in (``MPCHAT_CLOUDRUN_HEADER_AUTH=always``), the ``X-WX-OPENID`` header instead."""
    if svc.auth.header_identifies_calls:
        return await svc.auth.authenticate_cloudrun(request.headers.get("x-wx-openid"))
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return await svc.auth.authenticate(token.strip() if scheme.lower() == "bearer" else None)


async def require_admin(request: Request, svc: Svc) -> None:
    """The operator's bearer token (``MPCHAT_ADMIN_TOKEN``); without one the admin API is 404.

    ``MPCHAT_ADMIN_READONLY_TOKEN`` reads (GET, HEAD) and nothing else: 403 ``forbidden``.
    """
    configured = svc.settings.admin_token
    if configured is None or not configured.get_secret_value():
        raise NotFound()
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    given = token.strip().encode("utf-8") if scheme.lower() == "bearer" else b""
    if _matches(given, configured.get_secret_value()):
        return
    readonly = svc.settings.admin_readonly_token
    if readonly is not None and _matches(given, readonly.get_secret_value()):
        if request.method in ("GET", "HEAD"):
            return
        raise Forbidden("只读令牌不能执行此操作")
    raise Unauthorized("管理令牌无效")


def _matches(given: bytes, secret: str) -> bool:
    return bool(secret) and hmac.compare_digest(given, secret.encode("utf-8"))


def parse_cursor(before: str | None) -> int | None:
    """Cursors are opaque to clients; here, the positive sequence number they stand for."""
    if before is None:
        return None
    # ASCII digits only: str.isdigit() also accepts "²" or "٣", which int() then refuses.
    if not (before.isascii() and before.isdigit()) or len(before) > 18:
        raise InvalidRequest("before 游标不合法")
    return int(before)


Caller = Annotated[Claims, Depends(_caller)]
