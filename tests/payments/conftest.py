"""Fixtures for the payment tests: the fake WeChat Pay, its key files, a configured service."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mpchat.fakes.wechatpay import FakeWeChatPay
from mpchat.fakes.wechatpay_keys import FakeWeChatPayKeys
from mpchat.settings import Settings

NOTIFY = "/api/v1/pay/wechat/notify"
ADMIN = "admin-token-quota-0123456789"
CONFIG = """
[quota]
free_units = 2
[quota.prices]
default = { per_message = 1 }
[[plans]]
id = "p10"
title = "1000 点"
price_fen = 1000
credits = 1000
[[plans]]
id = "p1"
title = "10 点"
price_fen = 100
credits = 10
"""


@pytest.fixture(scope="session")
def pay_keys() -> FakeWeChatPayKeys:
    """Made once: RSA key generation is the slow part of the fake."""
    return FakeWeChatPayKeys.generate()


@pytest.fixture
async def fake_pay(pay_keys: FakeWeChatPayKeys) -> AsyncIterator[FakeWeChatPay]:
    async with FakeWeChatPay(pay_keys) as fake:
        yield fake


@pytest.fixture
def pay_settings(
    settings_factory: Callable[..., Settings], fake_pay: FakeWeChatPay, tmp_path: Path
) -> Callable[..., Settings]:
    """Settings with quotas, two plans and WeChat Pay pointed at the fake."""
    env = fake_pay.keys.write(tmp_path / "wechatpay")
    config = tmp_path / "mpchat.toml"
    config.write_text(CONFIG, encoding="utf-8")
    values: dict[str, Any] = {name.removeprefix("MPCHAT_").lower(): value
                              for name, value in env.items()}
    values.update(config=config, admin_token=ADMIN, wechatpay_api_base=fake_pay.base_url,
                  wechatpay_notify_url="https://mpchat.example/api/v1/pay/wechat/notify")

    def make(**overrides: Any) -> Settings:
        return settings_factory(**{**values, **overrides})

    return make


@pytest.fixture
def payment_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(logging.INFO, logger="mpchat.payments")
    yield caplog
