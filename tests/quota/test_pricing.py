"""Prices: per message, per 1k tokens rounded up once per answer, aliases, the default."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from mpchat.quota import Prices, QuotaConfig


def prices(aliases: dict[str, str] | None = None, **table: dict[str, object]) -> Prices:
    return Prices(QuotaConfig.model_validate({"prices": table}), aliases=aliases)


def test_per_message_ignores_tokens() -> None:
    p = prices(default={"per_message": 3})
    assert p.cost("any", prompt_tokens=10_000, completion_tokens=50_000) == 3


@pytest.mark.parametrize(("prompt", "completion", "units"), [
    (0, 0, 0), (1, 0, 1), (1000, 0, 1), (1001, 0, 2), (0, 500, 1), (0, 501, 2),
    (400, 300, 1),  # 0.4 + 0.6 = exactly 1: rounded once on the sum, not per part
    (2000, 1000, 4),
])
def test_per_1k_rounds_up_on_the_whole_answer(prompt: int, completion: int, units: int) -> None:
    p = prices(m={"per_1k_prompt": 1, "per_1k_completion": 2})
    assert p.cost("m", prompt_tokens=prompt, completion_tokens=completion) == units


def test_fractional_prices_are_exact() -> None:
    p = prices(m={"per_1k_prompt": 0.1, "per_1k_completion": 0.3})
    # 0.1 * 10000 / 1000 + 0.3 * 10000 / 1000 = 4 exactly; floats would give 4.000000000000001.
    assert p.cost("m", prompt_tokens=10_000, completion_tokens=10_000) == 4


def test_per_message_and_tokens_add_up() -> None:
    p = prices(m={"per_message": 2, "per_1k_completion": 1})
    assert p.cost("m", prompt_tokens=5, completion_tokens=1500) == 4


def test_lookup_by_model_alias_and_default() -> None:
    p = prices({"fast": "deepseek-chat", "default": "deepseek-chat"},
               **{"deepseek-chat": {"per_message": 2}, "smart": {"per_message": 5},
                  "cheap": {"per_message": 0}, "default": {"per_message": 7}})
    assert p.of("deepseek-chat").per_message == 2
    assert p.of("fast").per_message == 2  # an alias of a priced model
    assert p.of("unknown").per_message == 7
    assert p.of("cheap").per_message == 0


def test_alias_with_a_price_covers_its_model() -> None:
    p = prices({"smart": "deepseek-reasoner"}, smart={"per_message": 5})
    assert p.of("deepseek-reasoner").per_message == 5


def test_no_default_means_one_unit_per_answer() -> None:
    assert prices().cost("x", prompt_tokens=10**6, completion_tokens=10**6) == 1


@pytest.mark.parametrize("bad", [
    {"default": {}}, {"default": {"per_message": -1}}, {"default": {"per_token": 1}},
    {"default": {"per_1k_prompt": -0.5}},
])
def test_bad_prices_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        QuotaConfig.model_validate({"prices": bad})


@pytest.mark.parametrize("bad", [
    {"reset_time": "24:00"}, {"reset_time": "noon"}, {"timezone": "Mars/Olympus"},
    {"period": "hour"}, {"free_units": -1}, {"free": 3},
])
def test_bad_quota_tables_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        QuotaConfig.model_validate(bad)
