"""Who is who: relay session tokens, and identity keys that sign offers and answers.

Session tokens are signed JWTs (HS256) carrying `sub`, `iat`, `exp`, a revocation `gen` and,
for tokens minted for a bot pool, `role: "bot"` (without it a token is a user's). A
token is valid while it has not expired and its `gen` equals the user's current generation in
the relay's state; `callbot token revoke USER` bumps the generation, which invalidates every
token issued before, at once.

Identity keys (Ed25519, `callbot keygen`) sign each offer and answer over the call id, both
parties and the SDP's DTLS fingerprints; peers check them against pinned keys, so a relay that
swaps certificates to intercept media is caught. A peer whose key is pinned must sign: a relay
that strips the signature (and terminates DTLS itself) is refused as `unsigned`.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard

import jwt
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from .errors import CallbotError
from .safe import get_logger, printable

logger = get_logger(__name__)

ALGORITHM = "HS256"
ISSUER = "callbot"
ROLES = ("user", "bot")


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
    role: str = "user"  # "bot": may join the user's bot pool (hello role "bot")


def mint_token(
    secret: bytes,
    user: str,
    ttl: float,
    generation: int = 0,
    now: float | None = None,
    role: str = "user",
) -> str:
    """A signed token for `user`, valid for `ttl` seconds; `role="bot"` lets it join the
    user's bot pool (a user token cannot: DESIGN §10)."""
    if ttl <= 0:
        raise ValueError("ttl must be positive")
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    issued = int(now if now is not None else time.time())
    claims = {
        "sub": user,
        "iat": issued,
        "exp": issued + int(ttl),
        "gen": generation,
        "iss": ISSUER,
        "jti": uuid.uuid4().hex,
    }
    if role != "user":
        claims["role"] = role
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
    role = claims.get("role", "user")
    if role not in ROLES:
        raise AuthError("auth_failed", "token has an unknown role")
    return TokenClaims(user, float(claims["iat"]), expires, generation, role)


# -- identity keys: signed offers and answers ---------------------------------------------------

SIGNATURE_VERSION = "callbot-call-signature/1"
#: Signed descriptions remembered per signer to refuse a replayed offer or answer.
REPLAY_WINDOW = 4096
_PINNABLE_USER = re.compile(r"[A-Za-z0-9_.@:+-]{1,128}")  # the relay's user ids


class IdentityError(CallbotError):
    """A peer's signature is missing, unknown or does not match: the call is refused."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__(f"{code}: {message}")


def fingerprints(sdp: str) -> list[str]:
    """The DTLS certificate fingerprints an SDP announces (`sha-256 AB:CD:...`), sorted."""
    found = set()
    for line in sdp.splitlines():
        if line.startswith("a=fingerprint:"):
            algorithm, _, value = line[len("a=fingerprint:") :].strip().partition(" ")
            found.add(f"{algorithm.lower()} {value.strip().upper()}")
    return sorted(found)


def signed_text(call_id: str, caller: str, callee: str, sdp: str) -> bytes:
    """What a signature covers: the call, both parties and the DTLS fingerprints, so a relay
    that swaps the certificate (to sit in the middle of the media) breaks the signature."""
    return "\n".join([SIGNATURE_VERSION, call_id, caller, callee, *fingerprints(sdp)]).encode()


class IdentityKey:
    """An Ed25519 key pair that signs this side's offers and answers."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._private = private_key

    @classmethod
    def generate(cls) -> IdentityKey:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def load(cls, path: str | Path) -> IdentityKey:
        try:
            key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
        except (OSError, ValueError) as exc:
            raise IdentityError("bad_key", f"cannot read identity key {path}: {exc}") from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise IdentityError("bad_key", f"{path} is not an Ed25519 private key")
        return cls(key)

    def save(self, path: str | Path) -> None:
        """Write the private key (PEM, readable by the owner only)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        pem = self._private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "wb") as file:
            file.write(pem)
        os.chmod(path, 0o600)

    @property
    def public_key(self) -> str:
        """The public key as base64 of its 32 raw bytes (what `known_peers` files hold)."""
        raw = self._private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return base64.b64encode(raw).decode()

    def sign(self, call_id: str, caller: str, callee: str, sdp: str) -> dict[str, str]:
        signature = self._private.sign(signed_text(call_id, caller, callee, sdp))
        return {"alg": "ed25519", "key": self.public_key,
                "sig": base64.b64encode(signature).decode()}  # fmt: skip


class KnownPeers:
    """Pinned public keys, one `user base64-key` per line of a text file (`#` comments).

    A user with a pinned key must sign every offer and answer. With `trust_on_first_use`, the
    key of a user without one is pinned (and logged) once its first signature verifies;
    otherwise unknown users are not trusted. What each signer signed last is remembered
    (`REPLAY_WINDOW` per signer): a signed description seen again is refused as `replayed`
    (so each bot needs its own `KnownPeers`, as `Bot(known_peers=PATH)` makes).
    """

    def __init__(self, path: str | Path | None = None, trust_on_first_use: bool = False) -> None:
        self.path = Path(path) if path is not None else None
        self.trust_on_first_use = trust_on_first_use
        self.keys: dict[str, str] = {}
        self._used: dict[str, OrderedDict[bytes, None]] = {}
        if self.path is not None and self.path.exists():
            for number, line in enumerate(self.path.read_text().splitlines(), 1):
                line = line.split("#", 1)[0].strip()
                if not line:
                    continue
                user, _, key = line.partition(" ")
                if not key.strip():
                    raise IdentityError("bad_key", f"{self.path}:{number}: expected 'user key'")
                self.keys[user] = key.strip()

    def pin(self, user: str, key: str) -> None:
        self.keys[user] = key
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a") as file:
                file.write(f"{user} {key}\n")

    def check(self, user: str, sig: Any, call_id: str, caller: str, callee: str, sdp: str,
              require: bool) -> bool:  # fmt: skip
        """Verify `user`'s signature; True if verified, False if acceptable unverified.

        Raises `IdentityError`: `unsigned` (no signature from a pinned user, or at all when
        `require`), `unknown_peer`, `identity_mismatch` or `replayed`."""
        pinned = self.keys.get(user)
        if not isinstance(sig, dict) or not isinstance(sig.get("sig"), str):
            if pinned is not None or require:
                raise IdentityError("unsigned", f"{printable(user)} sent an unsigned description")
            return False
        offered = sig.get("key")
        if pinned is not None:
            key = pinned
        elif self.trust_on_first_use and _pinnable(offered, user):
            key = offered
        elif require:
            raise IdentityError("unknown_peer", f"no pinned key for {printable(user)}")
        else:
            return False
        first_use = pinned is None
        if offered not in (None, key):
            raise IdentityError("identity_mismatch", f"{printable(user)} signed with another key")
        text = signed_text(call_id, caller, callee, sdp)
        _verify(user, key, sig["sig"], text)
        self._use(user, call_id, text)
        if first_use:  # only now: a forged first signature must not pin the forger's key
            logger.warning("trusting %s's key on first use: %s", printable(user), printable(key))
            self.pin(user, key)
        return True

    def _use(self, user: str, call_id: str, text: bytes) -> None:
        """Remember what `user` signed (call, parties, fingerprints: an offer and its answer
        differ); refuse the same a second time (a replay)."""
        used = self._used.setdefault(user, OrderedDict())
        digest = hashlib.sha256(text).digest()
        if digest in used:
            raise IdentityError(
                "replayed", f"{printable(user)}'s signature for call {printable(call_id)} was "
                "already used (a replayed offer or answer)"
            )  # fmt: skip
        used[digest] = None
        if len(used) > REPLAY_WINDOW:
            used.popitem(last=False)


def _pinnable(key: Any, user: str) -> TypeGuard[str]:
    """Whether `user key` can be one line of a known_peers file: a plain user id and a key in
    canonical base64 of 32 bytes (so a hostile id or key cannot add lines to the file)."""
    if not isinstance(key, str) or not _PINNABLE_USER.fullmatch(user):
        return False
    try:
        raw = base64.b64decode(key, validate=True)
    except ValueError:
        return False
    return len(raw) == 32 and base64.b64encode(raw).decode() == key


def _verify(user: str, key: str, signature: str, text: bytes) -> None:
    """Check an Ed25519 `signature` (base64) of `text` by `key` (base64 raw public key)."""
    try:
        public = Ed25519PublicKey.from_public_bytes(base64.b64decode(key))
        public.verify(base64.b64decode(signature), text)
    except (InvalidSignature, ValueError) as exc:
        raise IdentityError(
            "identity_mismatch",
            f"{printable(user)}'s signature does not match this call (tampered SDP or key): "
            f"{exc!r}",
        ) from None


@dataclass(frozen=True)
class Trust:
    """How calls prove and check who is at the other end (see docs/security.md)."""

    key: IdentityKey | None = None
    peers: KnownPeers | None = None
    require_signatures: bool = False
