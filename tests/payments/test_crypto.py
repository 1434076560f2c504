"""WeChat Pay's signatures and AEAD: what the service signs, the fake verifies, and back."""

from __future__ import annotations

from pathlib import Path

import pytest

from mpchat.fakes.wechatpay_keys import FakeWeChatPayKeys
from mpchat.payments import crypto


def test_authorization_header_round_trip(pay_keys: FakeWeChatPayKeys) -> None:
    header = crypto.authorization(
        mchid="1900000109", serial="ABC", key=pay_keys.merchant, method="POST",
        path="/v3/pay/transactions/jsapi", body=b'{"a":1}', timestamp="1700000000",
        nonce="N" * 32,
    )
    fields = crypto.parse_authorization(header)
    assert fields is not None and header.startswith("WECHATPAY2-SHA256-RSA2048 ")
    assert {k: fields[k] for k in ("mchid", "serial_no", "timestamp", "nonce_str")} == {
        "mchid": "1900000109", "serial_no": "ABC", "timestamp": "1700000000",
        "nonce_str": "N" * 32}
    message = crypto.request_message("POST", "/v3/pay/transactions/jsapi", "1700000000",
                                     "N" * 32, b'{"a":1}')
    assert message == b'POST\n/v3/pay/transactions/jsapi\n1700000000\n' + b"N" * 32 + b'\n{"a":1}\n'
    public = pay_keys.merchant.public_key()
    assert crypto.verify(public, message, fields["signature"])
    assert not crypto.verify(public, message.replace(b"1}", b"2}"), fields["signature"])
    assert crypto.parse_authorization("Bearer x") is None


@pytest.mark.parametrize("signature", ["", "not base64!", "AAAA"])
def test_garbage_signatures_do_not_verify(pay_keys: FakeWeChatPayKeys, signature: str) -> None:
    assert not crypto.verify(pay_keys.platform.public_key(), b"x", signature)


def test_aead_round_trip_and_failures() -> None:
    key = b"k" * 32
    sealed = crypto.encrypt(key, nonce="n" * 12, plaintext="交易".encode(),
                            associated_data="transaction")
    assert crypto.decrypt(key, nonce="n" * 12, ciphertext=sealed,
                          associated_data="transaction").decode() == "交易"
    for kw in ({"nonce": "m" * 12}, {"associated_data": "other"}, {"ciphertext": "@@@"},
               {"ciphertext": ""}):
        args = {"nonce": "n" * 12, "ciphertext": sealed, "associated_data": "transaction"} | kw
        with pytest.raises(ValueError):
            crypto.decrypt(key, **args)
    with pytest.raises(ValueError):
        crypto.decrypt(b"x" * 32, nonce="n" * 12, ciphertext=sealed,
                       associated_data="transaction")


def test_key_files_are_checked(tmp_path: Path, pay_keys: FakeWeChatPayKeys) -> None:
    env = pay_keys.write(tmp_path)
    assert crypto.load_private_key(Path(env["MPCHAT_WECHATPAY_PRIVATE_KEY"]))
    assert crypto.load_public_key(Path(env["MPCHAT_WECHATPAY_PUBLIC_KEY"]))
    with pytest.raises(ValueError, match=r"pub_key\.pem: not an unencrypted PEM private key"):
        crypto.load_private_key(Path(env["MPCHAT_WECHATPAY_PUBLIC_KEY"]))
    with pytest.raises(ValueError, match=r"missing\.pem"):
        crypto.load_public_key(tmp_path / "missing.pem")
    again = FakeWeChatPayKeys.load(tmp_path)
    assert again is not None and again.public_key_id == pay_keys.public_key_id
