"""The OpenAI-compatible surface over real HTTP, driven by the official ``openai`` SDK."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import openai
import pytest

from mpchat.fakes.upstream import FakeUpstream
from tests.utils import Running, running_app


@dataclass
class Surface:
    app: Running
    key: str
    client: openai.AsyncOpenAI

    @property
    def services(self) -> Any:
        return self.app.services

    def sdk(self, key: str | None = None, **options: Any) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(api_key=key or self.key, base_url=f"{self.app.base_url}/v1",
                                  max_retries=options.pop("max_retries", 0), **options)


def upstream_settings(fake: FakeUpstream, **more: Any) -> dict[str, Any]:
    return {"upstream_base_url": fake.base_url, "upstream_api_key": "sk-provider-secret",
            "upstream_model": "fake-model", **more}


@asynccontextmanager
async def open_surface(settings: Any, **key_options: Any) -> AsyncIterator[Surface]:
    async with running_app(settings) as app:
        _, secret = await app.services.api_keys.create(name="test", **key_options)
        client = openai.AsyncOpenAI(api_key=secret, base_url=f"{app.base_url}/v1",
                                    max_retries=0)
        try:
            yield Surface(app, secret, client)
        finally:
            await client.close()


@pytest.fixture
async def surface(settings_factory, fake_upstream) -> AsyncIterator[Surface]:  # type: ignore[no-untyped-def]
    async with open_surface(settings_factory(**upstream_settings(fake_upstream))) as s:
        yield s
