"""The app served as `mpchat serve` serves it (`mpchat.server.uvicorn_config`), in this loop."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import uvicorn

from mpchat.server import uvicorn_config
from mpchat.settings import Settings
from tests.utils import Running, running_app

__all__ = ["serving"]


@contextlib.asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[Running]:
    """Like `tests.utils.running_app`, but with the production listener and proxy settings."""

    def production(app: Any, port: int) -> uvicorn.Config:
        return uvicorn_config(settings, app, host="127.0.0.1", port=port)

    async with running_app(settings, config=production) as running:
        yield running
