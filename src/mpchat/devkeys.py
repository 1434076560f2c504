"""Development secrets: generated once and kept in the data directory.

Production must configure ``MPCHAT_SECRET_KEY`` and ``MPCHAT_ENCRYPTION_KEYS``
(`Settings.refuse_unsafe` enforces it); a laptop should not have to.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path

from mpchat.settings import Settings
from mpchat.storage.crypto import generate_key_spec

__all__ = ["resolve_secrets"]


def resolve_secrets(settings: Settings) -> tuple[str, str]:
    """(token secret, encryption key spec): configured values, else the kept dev ones."""
    secret = settings.secret_key.get_secret_value() if settings.secret_key else None
    keys = settings.encryption_keys.get_secret_value() if settings.encryption_keys else None
    if secret is None:
        secret = _kept(settings.data_dir / "secret_key", lambda: secrets.token_urlsafe(48))
    if keys is None:
        keys = _kept(settings.data_dir / "encryption_keys", lambda: generate_key_spec("dev1"))
    return secret, keys


def _kept(path: Path, make: Callable[[], str]) -> str:
    if path.exists():
        return path.read_text().strip()
    if not path.parent.exists():
        path.parent.mkdir(parents=True, mode=0o700, exist_ok=True)
    value = make()
    # Created owner-only and exclusively: two processes starting together keep one value.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    return str(value)
