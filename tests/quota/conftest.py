"""Fixtures for the quota tests: an injected wall clock and `Quotas` on each backend."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from mpchat.quota import QuotaConfig, Quotas

# 2030-01-01 12:00 in Shanghai: the day's period began at 2029-12-31 16:00 UTC.
NOON_SHANGHAI = datetime(2030, 1, 1, 4, 0, tzinfo=UTC)


class Clock:
    def __init__(self, at: datetime = NOON_SHANGHAI) -> None:
        self.now = at

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kw: float) -> None:
        self.now += timedelta(**kw)


@pytest.fixture
def clock() -> Clock:
    return Clock()


def quota_config(**overrides: Any) -> QuotaConfig:
    values: dict[str, Any] = {
        "free_units": 10,
        "prices": {
            "default": {"per_message": 1},
            "tokens": {"per_1k_prompt": 1, "per_1k_completion": 2},
            "per5": {"per_message": 1},
        },
    }
    values.update(overrides)
    return QuotaConfig.model_validate(values)


MakeQuotas = Callable[..., Quotas]


@pytest.fixture
def make_quotas(tx: Any, clock: Clock) -> MakeQuotas:
    """`Quotas` over the migrated engine of each backend, timed by ``clock``."""

    def make(**overrides: Any) -> Quotas:
        aliases = overrides.pop("aliases", None)
        return Quotas(tx, quota_config(**overrides), aliases=aliases, utcnow=clock)

    return make
