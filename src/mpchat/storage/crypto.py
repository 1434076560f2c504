"""Encryption at rest: AES-256-GCM with key ids, for message contents and titles.

A stored value is ``nonce (12 bytes) || ciphertext+tag``; its key id sits in its own
column so rotation can find old rows with an index. The associated data binds a
ciphertext to the row and owner it was written for, so a value copied into another
user's row fails to decrypt instead of disclosing someone else's text.
"""

from __future__ import annotations

import base64
import os
import re
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = [
    "Ciphertext",
    "DecryptError",
    "Keyring",
    "generate_key_spec",
    "message_aad",
    "parse_key_spec",
    "summary_aad",
    "title_aad",
]

_KEY_ID = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")
_NONCE = 12


class DecryptError(Exception):
    """A stored value could not be decrypted (unknown key, tampered or moved)."""


@dataclass(frozen=True, slots=True)
class Ciphertext:
    key_id: str
    blob: bytes


def parse_key_spec(spec: str) -> list[tuple[str, bytes]]:
    """Parse ``id:base64key,id:base64key`` (newest first) into ``[(id, key)]``."""
    keys: list[tuple[str, bytes]] = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        key_id, sep, encoded = part.partition(":")
        if not sep or not _KEY_ID.match(key_id):
            raise ValueError("each encryption key must look like <id>:<base64 of 32 bytes>")
        try:
            raw = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
        except ValueError:
            raise ValueError(f"encryption key {key_id!r} is not valid base64") from None
        if len(raw) != 32:
            raise ValueError(f"encryption key {key_id!r} must be 32 bytes (AES-256)")
        if any(k == key_id for k, _ in keys):
            raise ValueError(f"encryption key id {key_id!r} appears twice")
        keys.append((key_id, raw))
    if not keys:
        raise ValueError("no encryption key given")
    return keys


def generate_key_spec(key_id: str) -> str:
    return f"{key_id}:{base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip('=')}"


class Keyring:
    """The keys in force: the first encrypts, every one decrypts."""

    def __init__(self, keys: list[tuple[str, bytes]]) -> None:
        if not keys:
            raise ValueError("a keyring needs at least one key")
        self._aead = {key_id: AESGCM(raw) for key_id, raw in keys}
        self.primary = keys[0][0]

    @classmethod
    def from_spec(cls, spec: str) -> Keyring:
        return cls(parse_key_spec(spec))

    def encrypt(self, plaintext: str, aad: bytes) -> Ciphertext:
        nonce = os.urandom(_NONCE)
        blob = nonce + self._aead[self.primary].encrypt(nonce, plaintext.encode(), aad)
        return Ciphertext(self.primary, blob)

    def decrypt(self, value: Ciphertext, aad: bytes) -> str:
        aead = self._aead.get(value.key_id)
        if aead is None:
            raise DecryptError(f"unknown encryption key id {value.key_id!r}")
        try:
            return aead.decrypt(value.blob[:_NONCE], value.blob[_NONCE:], aad).decode()
        except (InvalidTag, ValueError):
            raise DecryptError("ciphertext failed authentication") from None

    def decrypt_or_none(self, value: Ciphertext, aad: bytes) -> str | None:
        """`decrypt`, or None for a value that cannot be (unknown key, tampered or moved)."""
        try:
            return self.decrypt(value, aad)
        except DecryptError:
            return None


def message_aad(*, message_id: str, user_id: str) -> bytes:
    return f"mpchat:message:{message_id}:{user_id}".encode()


def title_aad(*, conversation_id: str, user_id: str) -> bytes:
    return f"mpchat:title:{conversation_id}:{user_id}".encode()


def summary_aad(*, conversation_id: str, user_id: str) -> bytes:
    return f"mpchat:summary:{conversation_id}:{user_id}".encode()
