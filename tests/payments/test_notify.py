"""Opening notifications: each way a notification can be wrong is refused for its reason."""

from __future__ import annotations

import time

import pytest

from mpchat.errors import InvalidNotification, UnverifiedNotification
from mpchat.fakes.wechatpay_keys import FakeWeChatPayKeys, signed_notification
from mpchat.payments.notify import open_notification

TRANSACTION = {
    "appid": "wx0000000000000000", "mchid": "1900000109", "out_trade_no": "mp" + "0" * 24,
    "transaction_id": "4200000000", "trade_type": "JSAPI", "trade_state": "SUCCESS",
    "success_time": "2030-01-01T12:00:00+08:00", "payer": {"openid": "o1"},
    "amount": {"total": 1000, "payer_total": 1000, "currency": "CNY", "payer_currency": "CNY"},
}


def _open(keys: FakeWeChatPayKeys, headers: dict[str, str], body: bytes) -> object:
    return open_notification({k.lower(): v for k, v in headers.items()}, body,
                             public_key=keys.platform.public_key(),
                             public_key_id=keys.public_key_id,
                             apiv3_key=keys.apiv3_key.encode(), now=time.time())


def test_a_valid_notification_opens(pay_keys: FakeWeChatPayKeys) -> None:
    opened = _open(pay_keys, *signed_notification(pay_keys, TRANSACTION))
    txn = opened.transaction  # type: ignore[attr-defined]
    assert (txn.out_trade_no, txn.trade_state, txn.amount.total) == (
        TRANSACTION["out_trade_no"], "SUCCESS", 1000)


def test_altered_amount_opens_but_says_so(pay_keys: FakeWeChatPayKeys) -> None:
    """Signed by WeChat Pay, so it opens; the order check (service) refuses it."""
    opened = _open(pay_keys, *signed_notification(pay_keys, TRANSACTION, "altered_amount"))
    assert opened.transaction.amount.total == 1001  # type: ignore[attr-defined]


@pytest.mark.parametrize(("mode", "error", "message"), [
    ("forged", UnverifiedNotification, "签名验证失败"),
    ("tampered", UnverifiedNotification, "签名验证失败"),
    ("wrong_serial", UnverifiedNotification, "公钥 ID"),
    ("old_timestamp", UnverifiedNotification, "时间戳"),
    ("bad_ciphertext", InvalidNotification, "无法解密"),
])
def test_spoilt_notifications_are_refused(
    pay_keys: FakeWeChatPayKeys, mode: str, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        _open(pay_keys, *signed_notification(pay_keys, TRANSACTION, mode))


@pytest.mark.parametrize("drop", ["Wechatpay-Serial", "Wechatpay-Signature",
                                  "Wechatpay-Timestamp", "Wechatpay-Nonce"])
def test_missing_headers(pay_keys: FakeWeChatPayKeys, drop: str) -> None:
    headers, body = signed_notification(pay_keys, TRANSACTION)
    del headers[drop]
    with pytest.raises(UnverifiedNotification):
        _open(pay_keys, headers, body)


@pytest.mark.parametrize("timestamp", ["-5", "1e9", "99999999999999", " 1"])
def test_odd_timestamps(pay_keys: FakeWeChatPayKeys, timestamp: str) -> None:
    headers, body = signed_notification(pay_keys, TRANSACTION)
    headers["Wechatpay-Timestamp"] = timestamp
    with pytest.raises(UnverifiedNotification, match="时间戳"):
        _open(pay_keys, headers, body)


def test_signed_bodies_of_other_shapes(pay_keys: FakeWeChatPayKeys) -> None:
    for body in (b"not json", b"[]", b'{"resource": 5}'):
        headers = pay_keys.sign_answer(body)
        with pytest.raises(InvalidNotification):
            _open(pay_keys, headers, body)
    other = b'{"event_type": "REFUND.SUCCESS", "resource": {"algorithm": "AEAD_AES_256_GCM", ' \
            b'"ciphertext": "", "nonce": ""}}'
    opened = _open(pay_keys, pay_keys.sign_answer(other), other)
    assert opened.transaction is None  # type: ignore[attr-defined]
