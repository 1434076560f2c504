"""Fixtures for the API key tests: injected clocks and a key store on each backend."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from mpchat.apikeys import ApiKeys


class Clocks:
    """A monotonic clock (the cache, the limits) and a wall clock (expiry) that move together."""

    def __init__(self) -> None:
        self.mono = 1000.0
        self.wall = datetime(2030, 1, 1, tzinfo=UTC)

    def monotonic(self) -> float:
        return self.mono

    def utcnow(self) -> datetime:
        return self.wall

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += timedelta(seconds=seconds)


@pytest.fixture
def clocks() -> Clocks:
    return Clocks()


def make_keys(engine: Any, clocks: Clocks, **kw: Any) -> ApiKeys:
    return ApiKeys(engine, clock=clocks.monotonic, utcnow=clocks.utcnow, **kw)


@pytest.fixture
async def keys(engine: Any, clocks: Clocks) -> AsyncIterator[ApiKeys]:
    """Keys on a migrated engine of each backend, timed by ``clocks``."""
    store = make_keys(engine, clocks)
    yield store
    await store.aclose()

