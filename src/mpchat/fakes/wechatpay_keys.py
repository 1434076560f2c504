"""The fake WeChat Pay's keys, and the notifications it signs with them (good and bad).

Two RSA key pairs, as in real life: the merchant's (the service signs requests with the
private key, written to ``apiclient_key.pem``; the fake verifies with the public key) and
WeChat Pay's "platform" pair (the fake signs answers and notifications; the service
verifies with the public key, written to ``pub_key.pem``). Plus the merchant id, the
certificate serial, the public key id and the API v3 key.
"""

from __future__ import annotations

import json
import secrets
import string
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

from mpchat.payments import crypto

__all__ = ["NOTIFY_MODES", "FakeWeChatPayKeys", "NotifyMode", "signed_notification"]

NotifyMode = Literal["normal", "forged", "wrong_serial", "old_timestamp", "altered_amount",
                     "tampered", "bad_ciphertext"]
NOTIFY_MODES: tuple[str, ...] = NotifyMode.__args__  # type: ignore[attr-defined]
_CHINA = ZoneInfo("Asia/Shanghai")


def _new_key() -> RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pem(key: RSAPrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _public_pem(key: RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


@dataclass(frozen=True)
class FakeWeChatPayKeys:
    mchid: str
    serial: str
    public_key_id: str
    apiv3_key: str = field(repr=False)
    merchant: RSAPrivateKey = field(repr=False)
    platform: RSAPrivateKey = field(repr=False)

    @classmethod
    def generate(cls) -> FakeWeChatPayKeys:
        alphabet = string.ascii_letters + string.digits
        return cls(
            mchid="19" + "".join(secrets.choice(string.digits) for _ in range(8)),
            serial=secrets.token_hex(20).upper(),
            public_key_id="PUB_KEY_ID_01" + "".join(secrets.choice(string.digits)
                                                    for _ in range(30)),
            apiv3_key="".join(secrets.choice(alphabet) for _ in range(32)),
            merchant=_new_key(), platform=_new_key(),
        )

    def write(self, directory: Path) -> dict[str, str]:
        """The service's files (``apiclient_key.pem``, ``pub_key.pem``) and the fake's own
        (``fake_keys.json``, to run again with the same keys); the service's settings."""
        directory.mkdir(parents=True, exist_ok=True)
        private, public = directory / "apiclient_key.pem", directory / "pub_key.pem"
        private.write_bytes(_pem(self.merchant))
        private.chmod(0o600)
        public.write_bytes(_public_pem(self.platform))
        own = directory / "fake_keys.json"
        own.write_text(json.dumps({
            "mchid": self.mchid, "serial": self.serial, "public_key_id": self.public_key_id,
            "apiv3_key": self.apiv3_key, "merchant": _pem(self.merchant).decode(),
            "platform": _pem(self.platform).decode(),
        }), encoding="utf-8")
        own.chmod(0o600)
        return {
            "MPCHAT_WECHATPAY_MCHID": self.mchid,
            "MPCHAT_WECHATPAY_APIV3_KEY": self.apiv3_key,
            "MPCHAT_WECHATPAY_PRIVATE_KEY": str(private.resolve()),
            "MPCHAT_WECHATPAY_SERIAL": self.serial,
            "MPCHAT_WECHATPAY_PUBLIC_KEY": str(public.resolve()),
            "MPCHAT_WECHATPAY_PUBLIC_KEY_ID": self.public_key_id,
        }

    @classmethod
    def load(cls, directory: Path) -> FakeWeChatPayKeys | None:
        """The keys ``write`` left in ``directory``, or None."""
        try:
            data: dict[str, Any] = json.loads((directory / "fake_keys.json").read_text("utf-8"))
        except FileNotFoundError:
            return None
        keys = {}
        for name in ("merchant", "platform"):
            key = serialization.load_pem_private_key(data[name].encode(), password=None)
            assert isinstance(key, RSAPrivateKey)
            keys[name] = key
        return cls(mchid=data["mchid"], serial=data["serial"],
                   public_key_id=data["public_key_id"], apiv3_key=data["apiv3_key"], **keys)

    def sign_answer(self, body: bytes, *, forged: bool = False,
                    serial: str | None = None) -> dict[str, str]:
        """The headers WeChat Pay signs an answer (and a notification) with."""
        timestamp, nonce = str(int(datetime.now(UTC).timestamp())), crypto.new_nonce()
        key = _new_key() if forged else self.platform
        return {
            "Wechatpay-Serial": serial or self.public_key_id,
            "Wechatpay-Timestamp": timestamp, "Wechatpay-Nonce": nonce,
            "Wechatpay-Signature": crypto.sign(key, crypto.response_message(timestamp, nonce,
                                                                             body)),
            "Wechatpay-Signature-Type": crypto.SCHEMA,
            "Request-ID": uuid.uuid4().hex,
        }


def signed_notification(keys: FakeWeChatPayKeys, transaction: dict[str, Any],
                        mode: str = "normal") -> tuple[dict[str, str], bytes]:
    """The headers and body of a ``TRANSACTION.SUCCESS`` notification, spoilt as ``mode`` says.

    ``forged``: signed by another key. ``wrong_serial``: another public key id.
    ``old_timestamp``: ten minutes old. ``altered_amount``: WeChat Pay itself reports one fen
    more than ordered. ``tampered``: the body changed after signing. ``bad_ciphertext``:
    the resource encrypted with another API v3 key.
    """
    if mode not in NOTIFY_MODES:
        raise ValueError(f"unknown notification mode {mode!r}")
    transaction = json.loads(json.dumps(transaction))
    if mode == "altered_amount":
        transaction["amount"]["total"] += 1
        transaction["amount"]["payer_total"] += 1
    apiv3 = keys.apiv3_key if mode != "bad_ciphertext" else secrets.token_hex(16)
    nonce = secrets.token_hex(6)
    ciphertext = crypto.encrypt(apiv3.encode(), nonce=nonce, associated_data="transaction",
                                plaintext=json.dumps(transaction, ensure_ascii=False).encode())
    now = datetime.now(UTC)
    body = json.dumps({
        "id": str(uuid.uuid4()), "create_time": now.astimezone(_CHINA).isoformat("T", "seconds"),
        "resource_type": "encrypt-resource", "event_type": "TRANSACTION.SUCCESS",
        "summary": "支付成功",
        "resource": {"original_type": "transaction", "algorithm": "AEAD_AES_256_GCM",
                     "ciphertext": ciphertext, "associated_data": "transaction", "nonce": nonce},
    }, ensure_ascii=False).encode()
    timestamp = now - timedelta(minutes=10) if mode == "old_timestamp" else now
    ts, sig_nonce = str(int(timestamp.timestamp())), crypto.new_nonce()
    key = _new_key() if mode == "forged" else keys.platform
    headers = {
        "Content-Type": "application/json",
        "Wechatpay-Serial": "PUB_KEY_ID_0000000000WRONG" if mode == "wrong_serial"
        else keys.public_key_id,
        "Wechatpay-Timestamp": ts, "Wechatpay-Nonce": sig_nonce,
        "Wechatpay-Signature": crypto.sign(key, crypto.response_message(ts, sig_nonce, body)),
        "Wechatpay-Signature-Type": crypto.SCHEMA,
    }
    if mode == "tampered":
        body = body.replace("支付成功".encode(), "支付成功!".encode())
    return headers, body
