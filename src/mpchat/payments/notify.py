"""Opening a WeChat Pay notification: verify who sent it, then decrypt what it says.

In this order, each step refusing with its own reason (logged by the caller, never with the
body, the ciphertext or a key):

1. ``Wechatpay-Serial`` must be the configured public key id (`UnverifiedNotification`);
2. ``Wechatpay-Timestamp`` within five minutes of now, either way (`UnverifiedNotification`);
3. ``Wechatpay-Signature`` must verify, with the WeChat Pay public key, over
   ``timestamp\\nnonce\\nbody\\n`` (`UnverifiedNotification`);
4. the body must be a notification, its resource AEAD_AES_256_GCM, and it must decrypt with
   the API v3 key into a transaction (`InvalidNotification`).

A signed body changed by one byte fails step 3; a replay within the window is the same
notification again, which the grant's idempotency absorbs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from mpchat.errors import InvalidNotification, UnverifiedNotification
from mpchat.payments import crypto
from mpchat.payments.types import Notification, Transaction, decode

__all__ = ["WINDOW_S", "Opened", "open_notification"]

WINDOW_S = 300
_ALGORITHM = "AEAD_AES_256_GCM"


@dataclass(frozen=True, slots=True)
class Opened:
    id: str  # WeChat Pay's notification id (for the logs)
    event_type: str
    transaction: Transaction | None  # None: not a payment (another event type)


def open_notification(headers: Mapping[str, str], body: bytes, *, public_key: RSAPublicKey,
                      public_key_id: str, apiv3_key: bytes, now: float) -> Opened:
    serial = headers.get("wechatpay-serial", "")
    timestamp = headers.get("wechatpay-timestamp", "")
    nonce = headers.get("wechatpay-nonce", "")
    signature = headers.get("wechatpay-signature", "")
    if not (serial and timestamp and nonce and signature):
        raise UnverifiedNotification("缺少微信支付签名头")
    if serial != public_key_id:
        raise UnverifiedNotification("签名公钥 ID 不匹配")
    if not timestamp.isdigit() or len(timestamp) > 12 or abs(now - int(timestamp)) > WINDOW_S:
        raise UnverifiedNotification("通知时间戳不在允许范围内")
    if not crypto.verify(public_key, crypto.response_message(timestamp, nonce, body), signature):
        raise UnverifiedNotification("通知签名验证失败")
    try:
        notification = decode(body, Notification)
    except ValueError:
        raise InvalidNotification("通知格式不正确") from None
    if not notification.event_type.startswith("TRANSACTION."):
        return Opened(notification.id, notification.event_type, None)
    resource = notification.resource
    if resource.algorithm != _ALGORITHM:
        raise InvalidNotification("不支持的加密算法")
    try:
        plain = crypto.decrypt(apiv3_key, nonce=resource.nonce, ciphertext=resource.ciphertext,
                               associated_data=resource.associated_data)
    except ValueError:
        raise InvalidNotification("通知内容无法解密") from None
    try:
        transaction = decode(plain, Transaction)
    except ValueError:
        raise InvalidNotification("通知内容不是交易") from None
    return Opened(notification.id, notification.event_type, transaction)
