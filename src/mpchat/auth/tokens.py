"""Session tokens: HS256 JWTs naming a user and a revocable session row."""

from __future__ import annotations

import time
from dataclasses import dataclass

import jwt

from mpchat.errors import Unauthorized

__all__ = ["Claims", "TokenSigner"]

_ALGORITHM = "HS256"
_AUDIENCE = "mpchat"


@dataclass(frozen=True, slots=True)
class Claims:
    user_id: str
    session_id: str


class TokenSigner:
    def __init__(self, secret: str, *, ttl: int) -> None:
        if len(secret) < 32:
            raise ValueError("the token secret must be at least 32 characters")
        self._secret = secret
        self.ttl = ttl

    def __repr__(self) -> str:
        return f"TokenSigner(ttl={self.ttl})"

    def issue(self, *, user_id: str, session_id: str, now: float | None = None) -> str:
        issued = int(now if now is not None else time.time())
        claims = {
            "sub": user_id,
            "sid": session_id,
            "aud": _AUDIENCE,
            "iat": issued,
            "exp": issued + self.ttl,
        }
        return jwt.encode(claims, self._secret, algorithm=_ALGORITHM)

    def verify(self, token: str) -> Claims:
        """The token's claims; `Unauthorized` when forged, altered, expired or malformed."""
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=[_ALGORITHM],
                audience=_AUDIENCE,
                options={"require": ["exp", "sub", "sid"]},
            )
        except jwt.PyJWTError:
            raise Unauthorized() from None
        user_id, session_id = claims.get("sub"), claims.get("sid")
        if not isinstance(user_id, str) or not isinstance(session_id, str):
            raise Unauthorized()
        return Claims(user_id, session_id)
