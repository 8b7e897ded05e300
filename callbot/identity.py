"""Session tokens: signed JWTs (HS256) carrying `sub`, `iat`, `exp` and a revocation `gen`.

A token is valid while it has not expired and its `gen` equals the user's current generation
in the relay's state; `callbot token revoke USER` bumps the generation, which invalidates every
token issued before, at once.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import jwt

from .errors import CallbotError

ALGORITHM = "HS256"
ISSUER = "callbot"


class AuthError(CallbotError):
    """A token was refused; `code` is `auth_failed`, `auth_expired` or `session_revoked`."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__(f"{code}: {message}")


@dataclass(frozen=True)
class TokenClaims:
    user: str
    issued_at: float
    expires_at: float
    generation: int


def mint_token(
    secret: bytes, user: str, ttl: float, generation: int = 0, now: float | None = None
) -> str:
    """A signed token for `user`, valid for `ttl` seconds."""
    if ttl <= 0:
        raise ValueError("ttl must be positive")
    issued = int(now if now is not None else time.time())
    claims = {
        "sub": user,
        "iat": issued,
        "exp": issued + int(ttl),
        "gen": generation,
        "iss": ISSUER,
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def verify_token(
    secret: bytes,
    token: str,
    generation_of: Callable[[str], int],
    now: float | None = None,
) -> TokenClaims:
    """Check signature, expiry and revocation; raise `AuthError` with the precise code."""
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            issuer=ISSUER,
            options={"require": ["sub", "exp", "iat"], "verify_exp": False},
        )
    except jwt.PyJWTError as exc:
        raise AuthError("auth_failed", f"invalid token ({exc})") from exc
    user = claims["sub"]
    if not isinstance(user, str) or not user:
        raise AuthError("auth_failed", "token has no subject")
    expires = float(claims["exp"])
    if expires <= (now if now is not None else time.time()):
        raise AuthError("auth_expired", f"token for {user} expired")
    generation = claims.get("gen", 0)
    if generation != generation_of(user):
        raise AuthError("session_revoked", f"tokens of {user} were revoked")
    return TokenClaims(user, float(claims["iat"]), expires, generation)
