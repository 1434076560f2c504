"""The NDJSON response that follows an answer, written without a task group per response.

Starlette's `StreamingResponse` runs every response in an anyio task group with a second
task listening for the disconnect; measured under 300 held streams that was about 9 % of
the CPU. Here one small watcher task waits for the disconnect and cancels the writer,
which stops at once (and lets the answer go on: an answer is not its connection).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from urllib.parse import quote

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

__all__ = ["STREAM_HEADERS", "FollowResponse", "ai_headers"]

NDJSON = "application/x-ndjson; charset=utf-8"

# What a proxy or CDN in front must not do to a stream: buffer it (nginx, and the gateways
# built on it, honour X-Accel-Buffering), store it, or recompress it (``no-transform``: a
# gzip layer would hold the lines back until it had a block's worth).
STREAM_HEADERS = {"Cache-Control": "no-cache, no-transform", "X-Accel-Buffering": "no"}


class FollowResponse(Response):
    """Writes ``lines`` as they come; ``on_leave(completed)`` runs once at the end.

    Every such response carries `STREAM_HEADERS`, so no proxy in front holds its lines back.
    """

    media_type = NDJSON

    def __init__(
        self,
        lines: AsyncIterator[bytes],
        *,
        headers: Mapping[str, str] | None = None,
        on_leave: Callable[[bool], None] | None = None,
        media_type: str = NDJSON,
    ) -> None:
        # As StreamingResponse does: no body, so no Content-Length.
        self.status_code = 200
        self.background = None
        self.media_type = media_type
        self.init_headers(STREAM_HEADERS if headers is None else {**STREAM_HEADERS, **headers})
        self._lines = lines
        self._on_leave = on_leave

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        writer = asyncio.current_task()
        assert writer is not None
        state = {"writing": True}
        watcher = asyncio.create_task(_watch(receive, writer, state))
        completed = False
        try:
            await send({"type": "http.response.start", "status": self.status_code,
                        "headers": self.raw_headers})
            send_body = scope.get("mpchat.send_body", send)
            async for chunk in self._lines:
                await send_body({"type": "http.response.body", "body": chunk,
                                 "more_body": True})
            await send_body({"type": "http.response.body", "body": b"", "more_body": False})
            completed = True
        except asyncio.CancelledError:
            if state["writing"]:
                raise  # not the watcher's: the server is going down
            writer.uncancel()  # the client left; the answer goes on without it
        finally:
            state["writing"] = False
            watcher.cancel()
            aclose = getattr(self._lines, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()
            if self._on_leave is not None:
                self._on_leave(completed)


def ai_headers(content_id: str, provider: str) -> dict[str, str]:
    """The implicit AI-content marker (docs/safety.md, "Labels"), beside the visible label."""
    return {
        "X-AI-Generated": "true",
        "X-AI-Content-Id": content_id,
        # Percent-encoded: header values are latin-1 and a display name may be Chinese.
        "X-AI-Provider": quote(provider, safe=""),
    }


async def _watch(receive: Receive, writer: asyncio.Task[object], state: dict[str, bool]) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
    if state["writing"]:
        state["writing"] = False
        writer.cancel()
