"""WeChat Pay API v3's cryptography: RSA-SHA256 signatures and AEAD_AES_256_GCM.

Written on `cryptography` directly rather than on the ``wechatpayv3`` package. That package
is synchronous (``requests``): each call would block the event loop or need a thread, and
it would bring a second HTTP stack beside the service's aiohttp session (its pool, its
timeouts from settings, its injection in tests). Its callback helper does not check the
timestamp window either, and it centres on downloading platform certificates where new
merchants get a WeChat Pay public key. What the protocol needs is four primitives:
RSA PKCS#1 v1.5 with SHA-256 to sign and to verify, and AES-256-GCM to decrypt, which
`cryptography` (already a dependency, for message encryption) does in a few lines. The
fake WeChat Pay uses the same functions from the other side.

Messages are bytes: a signature covers the exact body that travelled, never a re-encoding.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
import string
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

T = TypeVar("T")

__all__ = [
    "SCHEMA",
    "authorization",
    "decrypt",
    "encrypt",
    "load_private_key",
    "load_public_key",
    "new_nonce",
    "parse_authorization",
    "request_message",
    "response_message",
    "sign",
    "verify",
]

SCHEMA = "WECHATPAY2-SHA256-RSA2048"
_NONCE_ALPHABET = string.ascii_uppercase + string.digits
_AUTH_FIELD = re.compile(r'(\w+)="([^"]*)"')


def load_private_key(path: Path) -> RSAPrivateKey:
    """The merchant's API private key (``apiclient_key.pem``); `ValueError` naming the file."""
    key = _load_pem(path, lambda data: serialization.load_pem_private_key(data, password=None),
                    "an unencrypted PEM private key")
    if not isinstance(key, RSAPrivateKey):
        raise ValueError(f"{path}: not an RSA private key")
    return key


def load_public_key(path: Path) -> RSAPublicKey:
    """The WeChat Pay public key (``pub_key.pem``); `ValueError` naming the file."""
    key = _load_pem(path, serialization.load_pem_public_key, "a PEM public key")
    if not isinstance(key, RSAPublicKey):
        raise ValueError(f"{path}: not an RSA public key")
    return key


def _load_pem(path: Path, load: Callable[[bytes], T], what: str) -> T:
    try:
        return load(path.read_bytes())
    except OSError as exc:
        raise ValueError(f"{path}: {exc.strerror}") from None
    except (ValueError, TypeError):
        raise ValueError(f"{path}: not {what}") from None


def new_nonce() -> str:
    return "".join(secrets.choice(_NONCE_ALPHABET) for _ in range(32))


def request_message(method: str, path: str, timestamp: str, nonce: str, body: bytes) -> bytes:
    """What a request's Authorization signs: path with its query, body as sent ("" for GET)."""
    return f"{method}\n{path}\n{timestamp}\n{nonce}\n".encode() + body + b"\n"


def response_message(timestamp: str, nonce: str, body: bytes) -> bytes:
    """What ``Wechatpay-Signature`` signs, on answers and on notifications alike."""
    return f"{timestamp}\n{nonce}\n".encode() + body + b"\n"


def sign(key: RSAPrivateKey, message: bytes) -> str:
    return base64.b64encode(key.sign(message, padding.PKCS1v15(), hashes.SHA256())).decode()


def verify(key: RSAPublicKey, message: bytes, signature: str) -> bool:
    try:
        raw = base64.b64decode(signature, validate=True)
        key.verify(raw, message, padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True


def authorization(*, mchid: str, serial: str, key: RSAPrivateKey, method: str, path: str,
                  body: bytes, timestamp: str, nonce: str) -> str:
    signature = sign(key, request_message(method, path, timestamp, nonce, body))
    return (f'{SCHEMA} mchid="{mchid}",nonce_str="{nonce}",signature="{signature}",'
            f'timestamp="{timestamp}",serial_no="{serial}"')


def parse_authorization(header: str) -> dict[str, str] | None:
    """The fields of an Authorization header of this schema, or None."""
    schema, _, rest = header.partition(" ")
    if schema != SCHEMA:
        return None
    return dict(_AUTH_FIELD.findall(rest))


def decrypt(key: bytes, *, nonce: str, ciphertext: str, associated_data: str) -> bytes:
    """A notification's ``resource``; `ValueError` when it does not decrypt (tag, base64)."""
    try:
        raw = base64.b64decode(ciphertext, validate=True)
        return AESGCM(key).decrypt(nonce.encode(), raw, associated_data.encode())
    except (InvalidTag, binascii.Error, ValueError, OverflowError):
        raise ValueError("the resource does not decrypt with the API v3 key") from None


def encrypt(key: bytes, *, nonce: str, plaintext: bytes, associated_data: str) -> str:
    return base64.b64encode(AESGCM(key).encrypt(nonce.encode(), plaintext,
                                                associated_data.encode())).decode()
