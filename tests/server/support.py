"""The app served as `mpchat serve` serves it (`mpchat.server.uvicorn_config`), in this loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from mpchat.app import create_app
from mpchat.server import uvicorn_config
from mpchat.settings import Settings
from tests.utils import PromptServer, Running, free_port, keeping_state

__all__ = ["serving"]


@contextlib.asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[Running]:
    """Like `tests.utils.running_app`, but with the production listener and proxy settings."""
    app = create_app(settings)
    state: dict[str, Any] = {}
    port = free_port()
    server = PromptServer(uvicorn_config(settings, keeping_state(app, state),
                                         host="127.0.0.1", port=port))
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(15):
            while not server.started:
                if task.done():
                    task.result()
                    raise RuntimeError("server stopped during start-up")
                await asyncio.sleep(0.01)
        async with aiohttp.ClientSession() as http:
            yield Running(f"http://127.0.0.1:{port}", http, app, state)
    finally:
        server.exit()
        await task
