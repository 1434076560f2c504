"""What an answer costs: the operator's price list applied to tokens, in whole units.

The cost of one answer is ``per_message + ceil((prompt * per_1k_prompt + completion *
per_1k_completion) / 1000)``: computed exactly (decimals, no floats) and rounded up once,
on the whole answer, so many small answers never round to nothing. An answer that produced
nothing costs nothing, ``per_message`` included.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from decimal import Decimal

from mpchat.quota.config import PriceConfig, QuotaConfig

__all__ = ["Prices"]

_THOUSAND = Decimal(1000)


class Prices:
    """The price of each model, by the name a caller used or the model it resolved to.

    Lookup order: the name itself; the model an alias of that name points at; an alias that
    points at this model (the first in the file); ``default``.
    """

    def __init__(self, config: QuotaConfig, *, aliases: Mapping[str, str] | None = None) -> None:
        self._prices = dict(config.prices)
        self._default = config.default_price
        self._aliases = dict(aliases or {})

    def of(self, model: str) -> PriceConfig:
        price = self._prices.get(model)
        if price is not None:
            return price
        target = self._aliases.get(model)
        if target is not None and target in self._prices:
            return self._prices[target]
        for alias, aliased in self._aliases.items():
            if aliased == model and alias in self._prices and alias != "default":
                return self._prices[alias]
        return self._default

    def cost(self, model: str, *, prompt_tokens: int, completion_tokens: int) -> int:
        """Units for an answer that produced something."""
        price = self.of(model)
        tokens = (Decimal(max(prompt_tokens, 0)) * price.per_1k_prompt
                  + Decimal(max(completion_tokens, 0)) * price.per_1k_completion)
        return price.per_message + math.ceil(tokens / _THOUSAND)
