"""Builds `Payments` from settings (called once, in the lifespan); None when payments are off."""

from __future__ import annotations

import logging

import aiohttp

from mpchat.payments import crypto
from mpchat.payments.client import Merchant, WeChatPayClient
from mpchat.payments.service import Payments
from mpchat.providers.config import FileConfig
from mpchat.quota import Quotas
from mpchat.settings import Settings
from mpchat.storage.transactions import Transactions

__all__ = ["DEV_APPID", "build_payments"]

log = logging.getLogger("mpchat.payments")

# The appid of development orders when no MPCHAT_WECHAT_APPID is set (dev login, the fake
# WeChat Pay). Production refuses to start without a real one.
DEV_APPID = "wx0000000000000000"


def build_payments(settings: Settings, config: FileConfig, transactions: Transactions,
                   http: aiohttp.ClientSession, quotas: Quotas) -> Payments | None:
    """`ValueError` (naming the setting or file) for a configuration that cannot work."""
    if not settings.wechatpay_enabled:
        if settings.wechatpay_missing:  # production refused this already (refuse_unsafe)
            log.warning("WeChat Pay is half-configured, payments are off; missing %s",
                        ", ".join(settings.wechatpay_missing))
        return None
    if not quotas.enabled:
        raise ValueError("WeChat Pay sells credits: configure [quota] in MPCHAT_CONFIG")
    if not config.plans:
        log.warning("WeChat Pay is configured but MPCHAT_CONFIG has no [[plans]] to sell")
    assert settings.wechatpay_apiv3_key is not None  # wechatpay_enabled says so
    assert settings.wechatpay_private_key is not None and settings.wechatpay_public_key
    merchant = Merchant(
        mchid=str(settings.wechatpay_mchid),
        appid=settings.wechat_appid or DEV_APPID,
        serial=str(settings.wechatpay_serial),
        private_key=crypto.load_private_key(settings.wechatpay_private_key),
        public_key=crypto.load_public_key(settings.wechatpay_public_key),
        public_key_id=str(settings.wechatpay_public_key_id),
        apiv3_key=settings.wechatpay_apiv3_key.get_secret_value().encode(),
        notify_url=str(settings.wechatpay_notify_url),
        api_base=settings.wechatpay_api_base,
    )
    log.info("WeChat Pay on: mchid=%s base=%s plans=%d", merchant.mchid, merchant.api_base,
             len(config.plans))
    return Payments(transactions=transactions, quotas=quotas,
                    client=WeChatPayClient(http, merchant), plans=config.plans)
