"""Payments from settings: on, off, half-configured (refused in production), the fake's CLI."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import ValidationError

from mpchat.fakes import wechatpay
from mpchat.services import open_services
from mpchat.settings import Settings, UnsafeSettings
from mpchat.storage.crypto import generate_key_spec
from tests.utils import running_app, wait_until

PRODUCTION = {"env": "production", "wechat_appid": "wx1234567890abcdef",
              "wechat_secret": "s" * 32, "secret_key": "k" * 32}


def test_half_configured_refuses_production(pay_settings: Callable[..., Settings]) -> None:
    full = pay_settings(**PRODUCTION, encryption_keys=generate_key_spec("k1"))
    full.refuse_unsafe()  # complete and https: fine
    with pytest.raises(UnsafeSettings, match="missing MPCHAT_WECHATPAY_SERIAL"):
        pay_settings(**PRODUCTION, encryption_keys=generate_key_spec("k1"),
                     wechatpay_serial=None).refuse_unsafe()
    with pytest.raises(UnsafeSettings, match="NOTIFY_URL must be an https"):
        pay_settings(**PRODUCTION, encryption_keys=generate_key_spec("k1"),
                     wechatpay_notify_url="http://x/notify").refuse_unsafe()
    with pytest.raises(UnsafeSettings, match="MPCHAT_WECHAT_APPID is missing"):
        pay_settings(**{**PRODUCTION, "wechat_appid": None, "auth_mode": "cloudrun"},
                     encryption_keys=generate_key_spec("k1")).refuse_unsafe()


def test_the_api_v3_key_is_32_characters(pay_settings: Callable[..., Settings]) -> None:
    with pytest.raises(ValidationError, match="32-character"):
        pay_settings(wechatpay_apiv3_key="short")


async def test_half_configured_in_development_is_off(
    pay_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="mpchat.payments")
    async with running_app(pay_settings(wechatpay_public_key_id=None)) as app:
        assert app.services.payments is None and app.services.quotas.enabled
    assert "missing MPCHAT_WECHATPAY_PUBLIC_KEY_ID" in caplog.text


async def test_payments_need_quotas(pay_settings: Callable[..., Settings]) -> None:
    with pytest.raises(ValueError, match=r"configure \[quota\]"):
        async with open_services(pay_settings(config=None)):
            pass


async def test_a_bad_key_file_stops_the_start(
    pay_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    (tmp_path / "bad.pem").write_text("nope")
    with pytest.raises(ValueError, match=r"bad\.pem"):
        async with open_services(pay_settings(wechatpay_private_key=tmp_path / "bad.pem")):
            pass


async def test_the_fake_cli_writes_what_the_service_needs(tmp_path: Path) -> None:
    task = asyncio.create_task(wechatpay.run("127.0.0.1", 0, tmp_path, "http://x/notify"))
    try:
        env_file = tmp_path / "wechatpay.env"
        await wait_until(env_file.exists, timeout=20, what="wechatpay.env")
        lines = dict(line.split("=", 1) for line in env_file.read_text().splitlines())
        assert lines["MPCHAT_WECHATPAY_API_BASE"].startswith("http://127.0.0.1:")
        values = {k.removeprefix("MPCHAT_").lower(): v for k, v in lines.items()}
        settings = Settings(_env_file=None, **values)  # type: ignore[call-arg]
        assert settings.wechatpay_enabled
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
