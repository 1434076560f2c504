"""Pure ASGI middleware: request ids, the body size limit (before any parsing), and whether
a chat request asked for a stream (read from the request itself, before anything fails)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Mapping

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mpchat.errors import PayloadTooLarge
from mpchat.logs import request_id

__all__ = ["BodyLimitMiddleware", "ChatModeMiddleware", "RequestIdMiddleware"]

_SANE_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,128}$")


class RequestIdMiddleware:
    """Echo a sane ``X-Request-Id`` or make one; it is in ``scope["state"]["request_id"]``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = b""
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                rid = value if _SANE_ID.match(value) else b""
                break
        if not rid:
            rid = uuid.uuid4().hex.encode()
        scope.setdefault("state", {})["request_id"] = rid.decode()
        request_id.set(rid.decode())  # for the logs (MPCHAT_LOG_FORMAT=json)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", rid)]
            await send(message)

        # A long stream's body parts may skip the wrappers between here and the route (each
        # a coroutine call per part, a tenth of a held stream's CPU): they have seen the
        # response start, and nothing in them changes a body (`mpchat.api.streaming`).
        scope["mpchat.send_body"] = send
        await self.app(scope, receive, send_with_id)


class BodyLimitMiddleware:
    """Refuse bodies over ``max_bytes``: by Content-Length at once, else while reading.

    ``on_too_large`` builds the response (the error shape lives in `mpchat.api.errors`).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_bytes: int,
        on_too_large: Callable[[Scope], ASGIApp],
        prefix_limits: Mapping[str, int] | None = None,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.on_too_large = on_too_large
        # Paths under a prefix with a limit of their own (the OpenAI-compatible surface,
        # whose callers send whole conversations).
        self.prefix_limits = tuple((prefix_limits or {}).items())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        max_bytes = self.max_bytes
        for prefix, limit in self.prefix_limits:
            if scope["path"].startswith(prefix):
                max_bytes = limit
                break
        for name, value in scope["headers"]:
            if name == b"content-length":
                if not value.isdigit() or int(value) > max_bytes:
                    await self.on_too_large(scope)(scope, receive, send)
                    return
                break
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_bytes:
                    raise PayloadTooLarge()
            return message

        await self.app(scope, limited_receive, send)


_NOT_STREAM = re.compile(rb'"stream"\s*:\s*false')


class ChatModeMiddleware:
    """Sets ``scope["state"]["stream"]`` for ``POST`` to ``path`` from the request's body.

    A ``stream: false`` caller gets JSON error bodies, the others one NDJSON line; that
    must not depend on how far the request got before it failed (authentication and
    validation run before the route could look at the body). So the body (at most
    ``max_bytes``; the size limit inside answers beyond that) is read here first, then
    handed on unchanged.
    """

    def __init__(self, app: ASGIApp, *, path: str, max_bytes: int) -> None:
        self.app = app
        self.path = path
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != self.path or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        buffered: list[Message] = []
        size, more = 0, True
        while more and size <= self.max_bytes:
            message = await receive()
            buffered.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(m.get("body", b"") for m in buffered if m["type"] == "http.request")
        scope.setdefault("state", {})["stream"] = not _asks_no_stream(body, complete=not more)

        async def replay() -> Message:
            return buffered.pop(0) if buffered else await receive()

        await self.app(scope, replay, send)


def _asks_no_stream(body: bytes, *, complete: bool) -> bool:
    if complete:
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:
            parsed = None
        if isinstance(parsed, dict):
            return parsed.get("stream") is False
    return _NOT_STREAM.search(body) is not None  # a body cut short or malformed: a guess
