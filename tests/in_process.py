"""The app in this process, without a socket: an httpx2 client over ASGI, the lifespan run.

For tests of plain requests and responses (login, conversations, bad input, operations):
no server to start and stop, so about 200 ms less per app than `tests.utils.running_app`.
The transport hands the whole response over at its end, so streaming, slow readers and
clients that go away stay on the real server over loopback HTTP (`running_app`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx2
import orjson

from mpchat.app import create_app
from mpchat.settings import Settings

__all__ = ["InProcess", "in_process_app"]


@dataclass
class InProcess:
    """`tests.utils.Running`'s helpers, on an in-process client."""

    base_url: str
    http: httpx2.AsyncClient
    state: dict[str, Any]  # the lifespan's state

    @property
    def services(self) -> Any:
        return self.state["services"]

    async def login(self, code: str = "alice") -> str:
        r = await self.http.post(f"{self.base_url}/api/v1/login", json={"code": code})
        assert r.status_code == 200, r.text
        return str(r.json()["token"])

    async def chat_events(
        self, token: str, body: dict[str, Any]
    ) -> tuple[int, list[dict[str, Any]]]:
        r = await self.http.post(f"{self.base_url}/api/v1/chat", json=body,
                                 headers={"Authorization": f"Bearer {token}"})
        return r.status_code, [orjson.loads(line) for line in r.content.splitlines() if line]


@contextlib.asynccontextmanager
async def in_process_app(settings: Settings) -> AsyncIterator[InProcess]:
    """The app of ``settings``, started and stopped as a server would, served in-process."""
    app = create_app(settings)
    async with _lifespan(app) as state:

        async def served(scope: dict[str, Any], receive: Any, send: Any) -> None:
            # As a server does: every request gets a copy of the lifespan's state.
            await app({**scope, "state": dict(state)}, receive, send)

        base_url = "http://mpchat.test"
        transport = httpx2.ASGITransport(app=served)
        async with httpx2.AsyncClient(transport=transport, base_url=base_url) as http:
            yield InProcess(base_url, http, state)


@contextlib.asynccontextmanager
async def _lifespan(app: Any) -> AsyncIterator[dict[str, Any]]:
    """The ASGI lifespan protocol, as a server runs it: startup, its state, shutdown.

    A startup that fails raises what the app raised.
    """
    state: dict[str, Any] = {}
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"},
             "state": state}
    task = asyncio.create_task(app(scope, inbox.get, outbox.put))

    async def step(kind: str) -> None:
        await inbox.put({"type": f"lifespan.{kind}"})
        reply = asyncio.ensure_future(outbox.get())
        await asyncio.wait({reply, task}, return_when=asyncio.FIRST_COMPLETED)
        if not reply.done():
            reply.cancel()
            await task  # the app ended without an answer: its error, if it raised one
            raise RuntimeError(f"the app ended its lifespan during {kind}")
        message = reply.result()
        if message["type"] != f"lifespan.{kind}.complete":
            await task  # Starlette re-raises what failed after reporting it
            raise RuntimeError(f"lifespan {kind} failed: {message.get('message', '')}")

    try:
        await step("startup")
        try:
            yield state
        finally:
            await step("shutdown")
    finally:
        if not task.done():
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
