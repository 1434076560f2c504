"""Test helpers: run the real app over loopback HTTP, log in, read NDJSON streams, poll."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
import uvicorn

from mpchat.app import create_app
from mpchat.settings import Settings


async def wait_until(
    predicate: Callable[[], bool | Awaitable[bool]],
    *,
    timeout: float,  # noqa: ASYNC109 - the deadline is the point of this helper
    interval: float = 0.01,
    what: str | None = None,
) -> None:
    """Poll ``predicate`` (plain or async) until it is true; `TimeoutError` after ``timeout`` s.

    For state that offers no event to wait on (another process, a server starting, a
    background task's effect). The error names what was awaited and for how long.
    """
    deadline = time.monotonic() + timeout
    while True:
        outcome = predicate()
        if inspect.isawaitable(outcome):
            outcome = await outcome
        if outcome:
            return
        if time.monotonic() >= deadline:
            name = what or getattr(predicate, "__qualname__", repr(predicate))
            raise TimeoutError(f"wait_until: {name} still false after {timeout:g} s")
        await asyncio.sleep(interval)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Running:
    base_url: str
    http: aiohttp.ClientSession
    app: Any
    state: dict[str, Any]  # the lifespan's state, as the server holds it

    @property
    def services(self) -> Any:
        return self.state.get("services")

    async def login(self, code: str = "alice") -> str:
        async with self.http.post(f"{self.base_url}/api/v1/login", json={"code": code}) as r:
            assert r.status == 200, await r.text()
            return str((await r.json())["token"])

    async def chat_events(
        self, token: str, body: dict[str, Any]
    ) -> tuple[int, list[dict[str, Any]]]:
        headers = {"Authorization": f"Bearer {token}"}
        async with self.http.post(f"{self.base_url}/api/v1/chat", json=body,
                                  headers=headers) as r:
            raw = await r.read()
        return r.status, [orjson.loads(line) for line in raw.splitlines() if line]


def keeping_state(app: Any, into: dict[str, Any]) -> Any:
    """``app``, and the lifespan state the server gives it copied into ``into`` once set."""

    async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            async def sent(message: dict[str, Any]) -> None:
                if message["type"] == "lifespan.startup.complete":
                    into.update(scope["state"])
                await send(message)

            await app(scope, receive, sent)
        else:
            await app(scope, receive, send)

    return asgi


class PromptServer(uvicorn.Server):
    """uvicorn's server, which stops as soon as a test is done with it.

    uvicorn looks at ``should_exit`` every 0.1 s, and when stopping it waits 0.1 s more for
    open connections to close. A run starts some 500 apps: that was a minute of waiting. Here
    the main loop wakes when `exit` is called, and the wait is left out when no connection is
    open (the test's client closed its own first); with one open, uvicorn's own shutdown runs.
    """

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._exit = asyncio.Event()

    def exit(self) -> None:
        self.should_exit = True
        self._exit.set()

    async def main_loop(self) -> None:
        counter = 0
        while not await self.on_tick(counter):  # uvicorn's tick (Date header, max requests)
            counter = (counter + 1) % 864000
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._exit.wait(), 0.1)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self.server_state.connections or sockets:
            await super().shutdown(sockets)
            return
        for server in self.servers:
            server.close()
        await asyncio.wait_for(self._wait_tasks_to_complete(),
                               timeout=self.config.timeout_graceful_shutdown)
        if not self.force_exit:
            await self.lifespan.shutdown()


ConfigFor = Callable[[Any, int], uvicorn.Config]  # (the ASGI app, a port) -> its config


def _plain_config(app: Any, port: int) -> uvicorn.Config:
    return uvicorn.Config(app, host="127.0.0.1", port=port, loop="none", http="httptools",
                          log_config=None, access_log=False, lifespan="on")


@contextlib.asynccontextmanager
async def running_app(
    settings: Settings, *, config: ConfigFor = _plain_config
) -> AsyncIterator[Running]:
    """The app on uvicorn (httptools), on a free loopback port, in this event loop;
    ``config`` builds the server's configuration (tests/server: the production one)."""
    app = create_app(settings)
    state: dict[str, Any] = {}
    port = free_port()
    server = PromptServer(config(keeping_state(app, state), port))
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(15):
            while not server.started:
                if task.done():
                    task.result()  # surfaces a start-up failure
                    raise RuntimeError("server stopped during start-up")
                await asyncio.sleep(0.01)
        async with aiohttp.ClientSession() as http:
            yield Running(f"http://127.0.0.1:{port}", http, app, state)
    finally:
        server.exit()
        await task


def shown_text(events: Sequence[Mapping[str, Any]]) -> str:
    """What a client that follows seq shows: deltas, a snapshot replacing what came before."""
    text = ""
    for event in events:
        if event["type"] == "delta":
            text += event["text"]
        elif event["type"] == "snapshot":
            text = event["text"]
    return text
