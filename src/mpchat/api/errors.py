"""Errors to HTTP, in one place: the envelope of API.md, one NDJSON line for chat, or
OpenAI's error shape under ``/v1/``.

A chat request that fails before ``start`` gets its status and, unless it asked for
``stream: false``, a single ``error`` line: a mini program reading chunks may never
see a plain JSON body. The OpenAI-compatible surface answers as OpenAI does (statuses
and ``{"error": {"message", "type", "param", "code"}}``), so its SDKs raise their usual
exceptions.
"""

from __future__ import annotations

import logging

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Scope

from mpchat.chat.completions import openai_error
from mpchat.errors import (
    InvalidRequest,
    MpchatError,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
)
from mpchat.storage.engine import STORAGE_ERRORS, is_outage

__all__ = ["OUTAGE_RETRY_AFTER", "error_response", "install_error_handlers", "too_large_app"]

log = logging.getLogger("mpchat.api")
NDJSON = "application/x-ndjson; charset=utf-8"
CHAT_PATH = "/api/v1/chat"
OPENAI_PREFIX = "/v1/"
# WeChat Pay's notifications: refused with WeChat Pay's shape, and never a 5xx (API.md).
WECHATPAY_NOTIFY_PATH = "/api/v1/pay/wechat/notify"


OUTAGE_RETRY_AFTER = 5.0


class _MethodNotAllowed(InvalidRequest):
    status, default_message = 405, "不支持该请求方法"


def error_response(exc: MpchatError, *, ndjson: bool, openai: bool = False) -> Response:
    headers = {}
    if exc.retry_after is not None:
        headers["Retry-After"] = str(exc.to_dict()["retry_after"])
    if openai:
        status, shape = openai_error(exc)
        return Response(orjson.dumps(shape), status, headers, media_type="application/json")
    if ndjson:
        body = orjson.dumps({"type": "error", **exc.to_dict()}) + b"\n"
        return Response(body, exc.status, headers, media_type=NDJSON)
    return Response(
        orjson.dumps({"error": exc.to_dict()}), exc.status, headers, media_type="application/json"
    )


def _wants_ndjson(scope: Scope) -> bool:
    if scope.get("path") != CHAT_PATH:
        return False
    return scope.get("state", {}).get("stream", True) is not False


def _wechatpay_refusal(exc: MpchatError) -> Response:
    """``{"code": "FAIL", "message"}``; a failure of ours is 429, so WeChat Pay retries later."""
    status = exc.status if 400 <= exc.status < 500 else 429
    return Response(orjson.dumps({"code": "FAIL", "message": exc.message}), status,
                    media_type="application/json")


def _respond(exc: MpchatError, scope: Scope) -> Response:
    if scope.get("path") == WECHATPAY_NOTIFY_PATH:
        return _wechatpay_refusal(exc)
    if str(scope.get("path", "")).startswith(OPENAI_PREFIX):
        return error_response(exc, ndjson=False, openai=True)
    return error_response(exc, ndjson=_wants_ndjson(scope))


def too_large_app(scope: Scope) -> ASGIApp:
    return _respond(PayloadTooLarge(), scope)


def install_error_handlers(app: FastAPI) -> None:
    async def on_domain(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, MpchatError)
        return _respond(exc, request.scope)

    async def on_validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return _respond(_describe(exc), request.scope)

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        cause = exc.__cause__
        if isinstance(cause, MpchatError):  # e.g. the body limit hit while FastAPI read it
            domain: MpchatError = cause
        elif exc.status_code == 404:
            domain = NotFound()
        elif exc.status_code == 405:
            domain = _MethodNotAllowed()
        else:
            domain = InvalidRequest()
        return _respond(domain, request.scope)

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        if is_outage(exc):
            # The database is down or going away: a dependency, not a bug. Retry later.
            log.warning("database unavailable on %s %s: %s", request.method,
                        request.url.path, type(exc).__name__)
            return _respond(ServiceUnavailable(retry_after=OUTAGE_RETRY_AFTER), request.scope)
        # Logged with its traceback; the client learns nothing but the request id.
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return _respond(MpchatError(), request.scope)

    # Storage and connection errors are answered here rather than by the catch-all, which
    # Starlette re-raises after answering (a traceback per request during an outage).
    for kind in STORAGE_ERRORS:
        app.add_exception_handler(kind, on_unexpected)

    app.add_exception_handler(MpchatError, on_domain)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(HTTPException, on_http)
    app.add_exception_handler(Exception, on_unexpected)


def _describe(exc: RequestValidationError) -> InvalidRequest:
    """A short zh-CN message naming the first bad field, without echoing its value."""
    errors = exc.errors()
    if not errors:
        return InvalidRequest()
    first = errors[0]
    loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path")]
    kind = str(first.get("type", ""))
    if kind == "json_invalid":
        return InvalidRequest("请求体不是合法的 JSON")
    if kind in ("model_attributes_type", "dict_type") and not loc:
        return InvalidRequest("请求体必须是 JSON 对象（Content-Type: application/json）")
    field = ".".join(loc) or "请求"
    if kind == "missing":
        return InvalidRequest(f"缺少字段 {field}")
    return InvalidRequest(f"字段 {field} 不合法")
