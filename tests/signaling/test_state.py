"""Session tokens (`callbot.identity`) and the relay's state directory (`RelayState`).

Two `RelayState` instances on one directory stand for two processes (the relay and a
`callbot token revoke` command).
"""

from __future__ import annotations

import base64
import json
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest

from callbot.identity import AuthError, mint_token, verify_token
from callbot.signaling.state import RelayState

NOW = 1_700_000_000.0


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def state(state_dir: Path) -> Iterator[RelayState]:
    state = RelayState(state_dir)
    yield state
    state.close()


def auth_error(state: RelayState, token: str, now: float | None = None) -> str:
    """The AuthError code `state.verify` raises for `token`."""
    with pytest.raises(AuthError) as caught:
        state.verify(token, now)
    return caught.value.code


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def with_claims(token: str, **changes: object) -> str:
    """`token` with its payload edited and its original signature kept."""
    header, payload, signature = token.split(".")
    claims = {**json.loads(_unb64(payload)), **changes}
    return ".".join([header, _b64(json.dumps(claims).encode()), signature])


# -- identity ---------------------------------------------------------------------------------


def test_mint_verify_round_trip(state: RelayState) -> None:
    before = time.time()
    token = state.mint("alice", ttl=3600)
    claims = state.verify(token)
    assert claims.user == "alice"
    assert claims.generation == 0
    assert before - 1 <= claims.issued_at <= time.time()
    assert claims.expires_at == claims.issued_at + 3600


def test_mint_token_with_explicit_time() -> None:
    secret = b"s" * 32
    token = mint_token(secret, "bob", ttl=60, generation=3, now=NOW)
    claims = verify_token(secret, token, lambda user: 3, now=NOW + 59)
    assert (claims.user, claims.issued_at, claims.expires_at, claims.generation) == (
        "bob",
        NOW,
        NOW + 60,
        3,
    )


@pytest.mark.parametrize("ttl", [0, -5])
def test_mint_token_needs_a_positive_ttl(ttl: float) -> None:
    with pytest.raises(ValueError):
        mint_token(b"s" * 32, "alice", ttl=ttl)


def test_token_signed_with_another_secret_is_refused(state: RelayState) -> None:
    forged = mint_token(b"not the relay's secret" * 2, "alice", ttl=3600)
    assert auth_error(state, forged) == "auth_failed"


def test_tampered_payload_is_refused(state: RelayState) -> None:
    token = state.mint("alice", ttl=3600)
    assert state.verify(token).user == "alice"
    assert auth_error(state, with_claims(token, sub="mallory")) == "auth_failed"
    assert auth_error(state, with_claims(token, exp=int(NOW) * 2)) == "auth_failed"


@pytest.mark.parametrize("garbage", ["", "not-a-token", "a.b.c", "eyJhbGciOiJIUzI1NiJ9.e30."])
def test_garbage_token_is_refused(state: RelayState, garbage: str) -> None:
    assert auth_error(state, garbage) == "auth_failed"


def test_unsigned_token_is_refused(state: RelayState) -> None:
    claims = {"sub": "alice", "iat": int(NOW), "exp": int(NOW) + 60, "iss": "callbot"}
    unsigned = jwt.encode(claims, None, algorithm="none")
    assert auth_error(state, unsigned, NOW) == "auth_failed"


@pytest.mark.parametrize(
    "claims",
    [
        {"iat": int(NOW), "exp": int(NOW) + 60, "iss": "callbot"},  # no sub
        {"sub": "", "iat": int(NOW), "exp": int(NOW) + 60, "iss": "callbot"},
        {"sub": "alice", "iat": int(NOW), "iss": "callbot"},  # no exp
        {"sub": "alice", "exp": int(NOW) + 60, "iss": "callbot"},  # no iat
        {"sub": "alice", "iat": int(NOW), "exp": int(NOW) + 60, "iss": "someone-else"},
        {"sub": "alice", "iat": int(NOW), "exp": int(NOW) + 60},  # no iss
    ],
)
def test_correctly_signed_token_with_bad_claims_is_refused(
    state: RelayState, claims: dict[str, object]
) -> None:
    token = jwt.encode(claims, state.secret, algorithm="HS256")
    assert auth_error(state, token, NOW) == "auth_failed"


def test_expired_token(state: RelayState) -> None:
    token = state.mint("alice", ttl=60)
    expires_at = state.verify(token).expires_at
    assert state.verify(token, now=expires_at - 1).user == "alice"
    assert auth_error(state, token, now=expires_at) == "auth_expired"
    assert auth_error(state, token, now=expires_at + 3600) == "auth_expired"


def test_revoke_invalidates_old_tokens_only(state: RelayState) -> None:
    old = state.mint("alice", ttl=3600)
    bob = state.mint("bob", ttl=3600)
    assert state.revoke("alice") == 1
    assert state.generation("alice") == 1
    assert auth_error(state, old) == "session_revoked"
    assert state.verify(bob).user == "bob"  # other users are untouched

    new = state.mint("alice", ttl=3600)
    assert state.verify(new).generation == 1
    assert state.revoke("alice") == 2
    assert auth_error(state, new) == "session_revoked"


def test_expiry_is_reported_before_revocation(state: RelayState) -> None:
    token = state.mint("alice", ttl=60)
    state.revoke("alice")
    assert auth_error(state, token, now=time.time() + 120) == "auth_expired"


# -- the state directory ----------------------------------------------------------------------


def test_state_db_is_private(state: RelayState, state_dir: Path) -> None:
    assert stat.S_IMODE((state_dir / "state.db").stat().st_mode) == 0o600


def test_secret_is_random_and_survives_reopening(state_dir: Path, tmp_path: Path) -> None:
    first = RelayState(state_dir)
    secret = first.secret
    token = first.mint("alice", ttl=3600)
    first.revoke("bob")
    first.close()

    again = RelayState(state_dir)
    try:
        assert again.secret == secret
        assert len(secret) >= 32
        assert again.verify(token).user == "alice"
        assert again.generation("bob") == 1
    finally:
        again.close()

    other = RelayState(tmp_path / "other")
    try:
        assert other.secret != secret
        with pytest.raises(AuthError):
            other.verify(token)
    finally:
        other.close()


def test_two_instances_share_secret_and_revocations(state_dir: Path) -> None:
    relay, command = RelayState(state_dir), RelayState(state_dir)
    try:
        assert relay.secret == command.secret
        token = command.mint("alice", ttl=3600)
        assert relay.verify(token).user == "alice"
        command.revoke("alice")
        assert auth_error(relay, token) == "session_revoked"
    finally:
        relay.close()
        command.close()


def test_changed_sees_every_revocation_exactly_once(state_dir: Path) -> None:
    relay, command = RelayState(state_dir), RelayState(state_dir)
    try:
        assert relay.changed() is False
        command.revoke("alice")
        assert relay.changed() is True
        assert relay.changed() is False
        assert relay.generation("alice") == 1
        # its own revocations count too: the relay process may revoke through its own state
        relay.revoke("bob")
        assert relay.changed() is True
        assert relay.changed() is False
        # and the command sees the relay's commit
        assert command.changed() is True
        assert command.changed() is False
    finally:
        relay.close()
        command.close()


def test_reads_and_mints_are_not_changes(state_dir: Path) -> None:
    relay, command = RelayState(state_dir), RelayState(state_dir)
    try:
        token = command.mint("alice", ttl=3600)
        command.verify(token)
        command.generation("alice")
        assert relay.changed() is False
    finally:
        relay.close()
        command.close()
