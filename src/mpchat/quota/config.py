"""The ``[quota]``, ``[quota.prices]`` and ``[[plans]]`` tables of the ``MPCHAT_CONFIG`` file.

```toml
[quota]
period = "day"                # day | week (resets Mondays) | month (resets on the 1st)
reset_time = "00:00"          # local time of the reset, in `timezone`
timezone = "Asia/Shanghai"
free_units = 100              # free units per user per period (0: credits only)
max_completion_tokens = 1024  # reserved for, and the most the provider is asked to write,
                              # when MPCHAT_MAX_ANSWER_TOKENS is unset

[quota.prices]                # units one answer costs, per model or alias; "default" for the rest
default = { per_message = 1 }
"deepseek-chat" = { per_1k_prompt = 1, per_1k_completion = 2 }
"deepseek-reasoner" = { per_message = 1, per_1k_completion = 4 }   # both: added

[[plans]]                     # credit packs users can buy (WeChat Pay)
id = "p10"
title = "1000 点"
price_fen = 1000              # 10.00 CNY
credits = 1000
```

Without ``[quota]`` quotas are off: nothing is reserved or charged, and ``/me`` says so.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = ["PlanConfig", "PriceConfig", "QuotaConfig"]

Period = Literal["day", "week", "month"]
# Far above any sane price or pack, far below the 64-bit columns: sums cannot overflow.
_MAX_UNITS = 10**12
_MAX_PER_1K = Decimal(10**6)


class PriceConfig(BaseModel):
    """What one answer costs, in units: ``per_message`` plus the tokens at ``per_1k_*``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    per_message: int = Field(default=0, ge=0, le=_MAX_UNITS)
    per_1k_prompt: Decimal = Field(default=Decimal(0), ge=0, le=_MAX_PER_1K)
    per_1k_completion: Decimal = Field(default=Decimal(0), ge=0, le=_MAX_PER_1K)

    @model_validator(mode="before")
    @classmethod
    def _not_empty(cls, data: object) -> object:
        if isinstance(data, dict) and not data:
            raise ValueError("a price needs per_message, per_1k_prompt or per_1k_completion")
        return data


DEFAULT_PRICE = PriceConfig(per_message=1)


class PlanConfig(BaseModel):
    """A credit pack: what the user pays (fen, 1/100 CNY) and the credits it grants."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,32}$")
    title: str = Field(min_length=1, max_length=64)
    price_fen: int = Field(ge=1, le=10**9)
    credits: int = Field(ge=1, le=_MAX_UNITS)


class QuotaConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    period: Period = "day"
    reset_time: dt.time = dt.time(0, 0)
    timezone: str = "Asia/Shanghai"
    free_units: int = Field(default=0, ge=0, le=_MAX_UNITS)
    # An answer's reservation needs a bound on what it may write; the provider is told it, so
    # no answer costs more than it reserved. MPCHAT_MAX_ANSWER_TOKENS, when set, wins.
    max_completion_tokens: int = Field(default=1024, ge=1, le=1_000_000)
    prices: dict[str, PriceConfig] = Field(default_factory=dict)

    @field_validator("reset_time", mode="before")
    @classmethod
    def _hh_mm(cls, value: object) -> object:
        if isinstance(value, str):
            try:
                parsed = dt.datetime.strptime(value, "%H:%M").time()
            except ValueError:
                raise ValueError(f"reset_time {value!r}: use HH:MM, e.g. \"00:00\"") from None
            return parsed
        return value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"timezone {value!r} is not an IANA zone name") from None
        return value

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def default_price(self) -> PriceConfig:
        """``prices.default``, or one unit per answer when the file names none."""
        return self.prices.get("default", DEFAULT_PRICE)
