"""The sans-I/O relay protocol: validation and the `RelayCore` state machine.

`RelayCore` is driven directly with explicit times; no sockets, no clocks. Tokens are handled
by a fake authenticator: "good:USER" is valid until `EXPIRES` (or "good:USER:EXP" until EXP),
"bot:USER" is the same minted for the bot role, "expired:USER" is expired, anything else is
refused.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from callbot.signaling.messages import (
    MAX_MESSAGE_BYTES,
    ProtocolError,
    decode,
    encode,
    error,
    validate,
)
from callbot.signaling.relay_core import Action, Close, Identity, RelayCore, RelayLimits, Send

EXPIRES = 1000.0

# -- fakes and helpers ------------------------------------------------------------------------


class FakeTokens:
    """Stands in for the relay's token check; `generations` simulates revocations."""

    def __init__(self) -> None:
        self.generations: dict[str, int] = {}

    def generation_of(self, user: str) -> int:
        return self.generations.get(user, 0)

    def authenticate(self, token: str, now: float) -> Identity:
        kind, _, rest = token.partition(":")
        user, _, expires = rest.partition(":")
        if kind in ("good", "bot") and user:
            expires_at = float(expires) if expires else EXPIRES
            role = "bot" if kind == "bot" else "user"
            return Identity(user, expires_at, self.generation_of(user), role)
        if kind == "expired" and user:
            raise ProtocolError("auth_expired", f"token for {user} expired")
        raise ProtocolError("auth_failed", "invalid token")


def make_core(tokens: FakeTokens | None = None, **limits: Any) -> RelayCore:
    tokens = tokens or FakeTokens()
    return RelayCore(tokens.authenticate, limits=RelayLimits(**limits))


def send(core: RelayCore, conn: str, message: dict[str, Any], now: float = 0.0) -> list[Action]:
    return core.received(conn, json.dumps(message), now)


def sent_to(actions: list[Action], conn: str) -> list[dict[str, Any]]:
    """The messages sent to `conn`, in order."""
    return [a.message for a in actions if isinstance(a, Send) and a.conn == conn]


def only_to(actions: list[Action], conn: str) -> dict[str, Any]:
    """The single action of `actions`, which must be a message to `conn`."""
    assert len(actions) == 1, actions
    [action] = actions
    assert isinstance(action, Send), action
    assert action.conn == conn, action
    return action.message


def closes(actions: list[Action]) -> list[Close]:
    return [a for a in actions if isinstance(a, Close)]


def recipients(actions: list[Action]) -> set[str]:
    return {a.conn for a in actions if isinstance(a, Send)}


def login(
    core: RelayCore,
    conn: str,
    user: str,
    now: float = 0.0,
    *,
    token: str | None = None,
    **hello: Any,
) -> None:
    """Open `conn` and authenticate it as `user`; asserts the welcome and nothing else."""
    assert core.opened(conn, now) == []
    kind = "bot" if hello.get("role") == "bot" else "good"  # a pool member needs a bot token
    actions = send(core, conn, {"type": "hello", "token": token or f"{kind}:{user}", **hello}, now)
    assert closes(actions) == []
    welcome = sent_to(actions, conn)[0]
    assert welcome["type"] == "welcome"
    assert welcome["user"] == user


def assert_fatal(actions: list[Action], conn: str, code: str, close_code: int) -> None:
    """`conn` got exactly one fatal error `code` followed by a Close with `close_code`."""
    assert len(actions) == 2, actions
    first, second = actions
    assert isinstance(first, Send) and first.conn == conn, actions
    assert second == Close(conn, close_code, code), actions
    message = first.message
    assert message["type"] == "error"
    assert message["code"] == code
    assert message["fatal"] is True


def assert_error(actions: list[Action], conn: str, code: str, call_id: str | None = None) -> None:
    """`conn` got exactly one non-fatal error `code` and was not closed."""
    message = only_to(actions, conn)
    assert message["type"] == "error"
    assert message["code"] == code
    assert message["fatal"] is False
    assert message.get("call_id") == call_id


def offer(call_id: str, to: str, **extra: Any) -> dict[str, Any]:
    return {"type": "call_offer", "call_id": call_id, "to": to, "sdp": "v=0 offer", **extra}


def answer(call_id: str) -> dict[str, Any]:
    return {"type": "call_answer", "call_id": call_id, "sdp": "v=0 answer"}


def reject(call_id: str, reason: str) -> dict[str, Any]:
    return {"type": "call_reject", "call_id": call_id, "reason": reason}


def hangup(call_id: str, **extra: Any) -> dict[str, Any]:
    return {"type": "hangup", "call_id": call_id, **extra}


def ice(call_id: str, **extra: Any) -> dict[str, Any]:
    return {"type": "ice", "call_id": call_id, "candidate": {"candidate": "c"}, **extra}


def established(core: RelayCore, call_id: str = "c1", now: float = 0.0) -> None:
    """alice on "a" calls bob on "b", who answers: an established call."""
    only_to(send(core, "a", offer(call_id, "bob"), now), "b")
    only_to(send(core, "b", answer(call_id), now), "a")


@pytest.fixture
def tokens() -> FakeTokens:
    return FakeTokens()


@pytest.fixture
def core(tokens: FakeTokens) -> RelayCore:
    """alice on connection "a" and bob on "b", both authenticated as plain users."""
    core = make_core(tokens)
    login(core, "a", "alice")
    login(core, "b", "bob")
    return core


# -- decode / validate / encode ---------------------------------------------------------------


def invalid(data: str | bytes) -> ProtocolError:
    with pytest.raises(ProtocolError) as caught:
        validate(decode(data))
    assert caught.value.code == "invalid_message"
    return caught.value


def invalid_obj(message: dict[str, Any]) -> ProtocolError:
    return invalid(json.dumps(message))


@pytest.mark.parametrize(
    "data",
    [
        "{not json",
        "",
        "[1, 2]",
        '"hello"',
        "42",
        "null",
        "{}",
        '{"type": 7}',
        '{"type": null}',
        '{"type": ["hello"]}',
    ],
)
def test_decode_rejects_non_objects_and_missing_or_non_string_type(data: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        decode(data)
    assert caught.value.code == "invalid_message"


def test_decode_rejects_binary_frames() -> None:
    with pytest.raises(ProtocolError) as caught:
        decode(json.dumps({"type": "hello", "token": "good:alice"}).encode())
    assert caught.value.code == "invalid_message"
    assert "binary" in caught.value.message


def _frame_of_size(size: int, pad_char: str = "a") -> str:
    head, tail = '{"type":"hello","token":"good:alice","client":"', '"}'
    room = size - len((head + tail).encode())
    char_bytes = len(pad_char.encode())
    frame = head + pad_char * (room // char_bytes) + "a" * (room % char_bytes) + tail
    assert len(frame.encode()) == size
    return frame


def test_decode_accepts_exactly_max_bytes_and_rejects_one_more() -> None:
    assert decode(_frame_of_size(MAX_MESSAGE_BYTES))["type"] == "hello"
    with pytest.raises(ProtocolError) as caught:
        decode(_frame_of_size(MAX_MESSAGE_BYTES + 1))
    assert caught.value.code == "invalid_message"


def test_decode_counts_bytes_not_characters() -> None:
    frame = _frame_of_size(MAX_MESSAGE_BYTES + 2, pad_char="é")
    assert len(frame) < MAX_MESSAGE_BYTES  # fewer characters than the limit, more bytes
    with pytest.raises(ProtocolError):
        decode(frame)


def test_validate_unknown_type_keeps_call_id() -> None:
    err = invalid_obj({"type": "call_transfer", "call_id": "c1"})
    assert err.call_id == "c1"
    assert "call_transfer" in err.message


def test_validate_reports_call_id_of_an_invalid_message() -> None:
    err = invalid_obj({"type": "call_offer", "call_id": "c9", "to": "bob"})
    assert err.call_id == "c9"
    assert "sdp" in err.message


@pytest.mark.parametrize(
    "message",
    [
        {"type": "hello"},
        {"type": "refresh"},
        {"type": "call_offer", "to": "bob", "sdp": "x"},
        {"type": "call_offer", "call_id": "c1", "sdp": "x"},
        {"type": "call_answer", "call_id": "c1"},
        {"type": "call_reject", "call_id": "c1"},
        {"type": "ice"},
        {"type": "hangup"},
        {"type": "renegotiate", "call_id": "c1"},
        {"type": "mediastatus", "call_id": "c1", "audio_muted": True},
        {"type": "hold"},
    ],
)
def test_validate_rejects_missing_required_fields(message: dict[str, Any]) -> None:
    assert "missing field" in invalid_obj(message).message


@pytest.mark.parametrize(
    "message",
    [
        {"type": "hello", "token": 12},
        {"type": "hello", "token": None},
        {"type": "hello", "token": "good:alice", "max_calls": True},  # bool is not an int
        {"type": "hello", "token": "good:alice", "max_calls": "3"},
        {"type": "hello", "token": "good:alice", "max_calls": 2.5},
        {"type": "hello", "token": "good:alice", "calls": {"call_id": "c1", "peer": "bob"}},
        {"type": "hello", "token": "good:alice", "role": 1},
        {"type": "call_offer", "call_id": 5, "to": "bob", "sdp": "x"},
        {"type": "call_offer", "call_id": "c1", "to": "bob", "sdp": {"sdp": "x"}},
        {"type": "call_offer", "call_id": "c1", "to": "bob", "sdp": "x", "metadata": []},
        {"type": "call_offer", "call_id": "c1", "to": "bob", "sdp": "x", "sig": 3},
        {"type": "mediastatus", "call_id": "c1", "audio_muted": 1, "video_muted": False},
        {"type": "mediastatus", "call_id": "c1", "audio_muted": False, "video_muted": 0},
        {"type": "mediastatus", "call_id": "c1", "audio_muted": "yes", "video_muted": False},
        {"type": "ice", "call_id": "c1", "candidate": "candidate:1"},
        {"type": "hangup", "call_id": "c1", "reason": 3},
        {"type": "hangup", "call_id": "c1", "to": None},
    ],
)
def test_validate_rejects_wrong_field_types(message: dict[str, Any]) -> None:
    assert "must be" in invalid_obj(message).message


@pytest.mark.parametrize(
    "message",
    [
        {"type": "hangup", "call_id": ""},
        {"type": "hangup", "call_id": "has space"},
        {"type": "hangup", "call_id": "semi;colon"},
        {"type": "hangup", "call_id": "c" * 129},
        {"type": "hangup", "call_id": "c1", "to": "bob/evil"},
        {"type": "hangup", "call_id": "c1", "to": ""},
        {"type": "call_offer", "call_id": "c1", "to": "bob\tx", "sdp": "x"},
    ],
)
def test_validate_rejects_bad_ids(message: dict[str, Any]) -> None:
    assert "not a valid id" in invalid_obj(message).message


@pytest.mark.parametrize(
    "message",
    [
        {"type": "hangup", "call_id": "c1\n"},
        {"type": "call_offer", "call_id": "c1", "to": "bob\n", "sdp": "x"},
        {"type": "hello", "token": "t", "calls": [{"call_id": "c1\n", "peer": "bob"}]},
        {"type": "hello", "token": "t", "calls": [{"call_id": "c1", "peer": "bob\n"}]},
    ],
)
def test_validate_rejects_ids_with_a_trailing_newline(message: dict[str, Any]) -> None:
    invalid_obj(message)


def test_validate_accepts_ids_with_every_allowed_character() -> None:
    call_id = "Az09_.@:+-" + "c" * 118  # 128 characters
    clean = validate({"type": "hangup", "call_id": call_id, "to": "bob@example.org"})
    assert clean["call_id"] == call_id


@pytest.mark.parametrize("reason", ["declined", "BUSY", "", "timeout"])
def test_validate_reject_reason_must_be_busy_or_decline(reason: str) -> None:
    invalid_obj(reject("c1", reason))


@pytest.mark.parametrize("reason", ["busy", "decline"])
def test_validate_accepts_busy_and_decline(reason: str) -> None:
    assert validate(reject("c1", reason))["reason"] == reason


@pytest.mark.parametrize("role", ["admin", "", "Bot"])
def test_validate_hello_role_must_be_bot_or_user(role: str) -> None:
    assert "role" in invalid_obj({"type": "hello", "token": "t", "role": role}).message


@pytest.mark.parametrize("max_calls", [0, -1])
def test_validate_hello_max_calls_at_least_one(max_calls: int) -> None:
    invalid_obj({"type": "hello", "token": "t", "max_calls": max_calls})


def test_validate_hello_max_calls_one_or_null_is_fine() -> None:
    assert validate({"type": "hello", "token": "t", "max_calls": 1})["max_calls"] == 1
    assert validate({"type": "hello", "token": "t", "max_calls": None})["max_calls"] is None


@pytest.mark.parametrize(
    "calls",
    [
        ["c1"],
        [None],
        [{"call_id": "c1"}],
        [{"peer": "bob"}],
        [{"call_id": 1, "peer": "bob"}],
        [{"call_id": "c1", "peer": ["bob"]}],
        [{"call_id": "bad id", "peer": "bob"}],
        [{"call_id": "c1", "peer": "bad peer"}],
        [{"call_id": "c1", "peer": "bob"}, {"call_id": "c2"}],
    ],
)
def test_validate_hello_rejects_malformed_call_claims(calls: list[Any]) -> None:
    assert "calls" in invalid_obj({"type": "hello", "token": "t", "calls": calls}).message


@pytest.mark.parametrize("version", [2, 0, "1", None])
def test_validate_rejects_other_protocol_versions(version: Any) -> None:
    assert "version" in invalid_obj({"type": "hangup", "call_id": "c1", "v": version}).message


def test_validate_rejects_bool_version() -> None:
    invalid_obj({"type": "hangup", "call_id": "c1", "v": True})


def test_validate_accepts_version_one_or_none_given() -> None:
    assert validate({"type": "hangup", "call_id": "c1", "v": 1}) == {
        "type": "hangup",
        "call_id": "c1",
    }
    assert validate({"type": "hangup", "call_id": "c1"})["call_id"] == "c1"


def test_validate_drops_unknown_fields() -> None:
    clean = validate(
        {
            "type": "call_offer",
            "call_id": "c1",
            "to": "bob",
            "sdp": "x",
            "from": "mallory",
            "admin": True,
            "v": 1,
        }
    )
    assert clean == {"type": "call_offer", "call_id": "c1", "to": "bob", "sdp": "x"}


def test_validate_keeps_optional_nulls() -> None:
    clean = validate(offer("c1", "bob", metadata=None, sig=None))
    assert clean["metadata"] is None
    assert clean["sig"] is None


def test_encode_adds_version_and_round_trips() -> None:
    text = encode({"type": "welcome", "user": "alice"})
    assert json.loads(text) == {"type": "welcome", "user": "alice", "v": 1}


def test_error_fatal_flag_and_call_id() -> None:
    assert error("auth_failed", "no") == {
        "type": "error",
        "code": "auth_failed",
        "message": "no",
        "fatal": True,
    }
    assert error("user_offline", "gone", "c1") == {
        "type": "error",
        "code": "user_offline",
        "message": "gone",
        "fatal": False,
        "call_id": "c1",
    }


# -- authentication ---------------------------------------------------------------------------


def test_hello_gets_welcome_with_session_details() -> None:
    core = RelayCore(
        FakeTokens().authenticate, ice_servers_for=lambda user: [{"urls": f"stun:{user}"}]
    )
    core.opened("a", 0.0)
    actions = send(core, "a", {"type": "hello", "token": "bot:alice", "role": "bot"})
    welcome = only_to(actions, "a")
    assert welcome["type"] == "welcome"
    assert welcome["user"] == "alice"
    assert welcome["role"] == "bot"
    assert welcome["expires_at"] == EXPIRES
    assert welcome["ice_servers"] == [{"urls": "stun:alice"}]
    assert isinstance(welcome["session_id"], str) and welcome["session_id"]
    assert core.user_of("a") == "alice"
    assert core.sessions_of("alice") == 1


def test_first_message_must_be_hello() -> None:
    core = make_core()
    core.opened("a", 0.0)
    actions = send(core, "a", offer("c1", "bob"))
    assert_fatal(actions, "a", "auth_failed", 4001)
    assert core.user_of("a") is None


def test_malformed_first_message_is_fatal_auth_failed() -> None:
    core = make_core()
    core.opened("a", 0.0)
    assert_fatal(core.received("a", "{nope", 0.0), "a", "auth_failed", 4001)


def test_bad_token_is_fatal_auth_failed() -> None:
    core = make_core()
    core.opened("a", 0.0)
    actions = send(core, "a", {"type": "hello", "token": "forged:alice"})
    assert_fatal(actions, "a", "auth_failed", 4001)
    assert core.sessions_of("alice") == 0


def test_expired_token_is_fatal_auth_expired() -> None:
    core = make_core()
    core.opened("a", 0.0)
    actions = send(core, "a", {"type": "hello", "token": "expired:bob"})
    assert_fatal(actions, "a", "auth_expired", 4002)
    assert core.user_of("a") is None


def test_no_hello_within_hello_timeout_is_fatal_on_tick() -> None:
    core = make_core(hello_timeout=5.0)
    core.opened("a", 100.0)
    core.opened("late", 103.0)
    assert core.tick(105.0) == []  # exactly at the limit: still allowed
    actions = core.tick(105.5)
    assert_fatal(actions, "a", "auth_failed", 4001)  # "late" still has time


def test_authenticated_connection_is_not_hit_by_hello_timeout() -> None:
    core = make_core(hello_timeout=5.0)
    login(core, "a", "alice", now=100.0)
    assert core.tick(200.0) == []


def test_malformed_message_after_auth_is_not_fatal(core: RelayCore) -> None:
    assert_error(core.received("a", "{broken", 1.0), "a", "invalid_message")
    assert_error(core.received("a", b'{"type":"ice"}', 1.0), "a", "invalid_message")
    assert_error(
        send(core, "a", {"type": "mediastatus", "call_id": "c0"}), "a", "invalid_message", "c0"
    )
    # the connection still works: it can place a call
    delivered = only_to(send(core, "a", offer("c1", "bob"), 2.0), "b")
    assert delivered["type"] == "call_offer"


def test_second_hello_is_invalid_message(core: RelayCore) -> None:
    actions = send(core, "a", {"type": "hello", "token": "good:carol"})
    assert_error(actions, "a", "invalid_message")
    assert core.user_of("a") == "alice"


def test_session_expires_at_token_expiry_on_tick() -> None:
    core = make_core()
    login(core, "a", "alice", token="good:alice:500")
    login(core, "b", "bob", token="good:bob:900")
    assert core.tick(499.9) == []
    assert_fatal(core.tick(500.0), "a", "auth_expired", 4002)


def test_refresh_with_same_user_extends_expiry() -> None:
    core = make_core()
    login(core, "a", "alice", token="good:alice:500")
    refreshed = only_to(send(core, "a", {"type": "refresh", "token": "good:alice:2000"}, 400), "a")
    assert refreshed == {"type": "refreshed", "expires_at": 2000.0}
    assert core.tick(1500.0) == []
    assert_fatal(core.tick(2000.0), "a", "auth_expired", 4002)


def test_refresh_with_token_of_another_user_is_fatal() -> None:
    core = make_core()
    login(core, "a", "alice", token="good:alice:500")
    actions = send(core, "a", {"type": "refresh", "token": "good:mallory:5000"}, 400)
    assert_fatal(actions, "a", "auth_failed", 4001)
    assert core.user_of("a") == "alice"


def test_refresh_with_invalid_token_is_fatal(core: RelayCore) -> None:
    assert_fatal(send(core, "a", {"type": "refresh", "token": "junk"}), "a", "auth_failed", 4001)


def test_recheck_tokens_closes_only_the_revoked_users_sessions(tokens: FakeTokens) -> None:
    core = make_core(tokens)
    login(core, "a1", "alice")
    login(core, "a2", "alice")
    login(core, "b", "bob")
    core.opened("anon", 0.0)  # not authenticated yet: no generation to compare
    assert core.recheck_tokens(tokens.generation_of) == []

    tokens.generations["alice"] = 1
    actions = core.recheck_tokens(tokens.generation_of)
    assert set(closes(actions)) == {
        Close("a1", 4003, "session_revoked"),
        Close("a2", 4003, "session_revoked"),
    }
    assert recipients(actions) == {"a1", "a2"}
    for message in sent_to(actions, "a1") + sent_to(actions, "a2"):
        assert message["code"] == "session_revoked"
        assert message["fatal"] is True


def test_session_started_after_revocation_survives_recheck(tokens: FakeTokens) -> None:
    core = make_core(tokens)
    login(core, "old", "alice")
    tokens.generations["alice"] = 1
    login(core, "new", "alice")  # a token of the new generation
    actions = core.recheck_tokens(tokens.generation_of)
    assert closes(actions) == [Close("old", 4003, "session_revoked")]


def test_connections_per_user_limit() -> None:
    core = make_core(connections_per_user=2)
    login(core, "a1", "alice")
    login(core, "a2", "alice")
    core.opened("a3", 0.0)
    actions = send(core, "a3", {"type": "hello", "token": "good:alice"})
    assert_fatal(actions, "a3", "session_limit", 4004)
    assert core.sessions_of("alice") == 2
    login(core, "b", "bob")  # other users are not affected
    core.closed("a1", 1.0)
    login(core, "a4", "alice", now=1.0)  # a slot was freed


# -- routing ----------------------------------------------------------------------------------


def test_offer_to_offline_user(core: RelayCore) -> None:
    assert_error(send(core, "a", offer("c1", "carol")), "a", "user_offline", "c1")
    assert core.call_count == 0


def test_offer_to_self_on_the_same_connection_is_offline(core: RelayCore) -> None:
    assert_error(send(core, "a", offer("c1", "alice")), "a", "user_offline", "c1")


def test_offer_is_delivered_with_from_and_without_to(core: RelayCore) -> None:
    actions = send(core, "a", offer("c1", "bob", metadata={"x": 1}, sig="s", extra="dropped"))
    delivered = only_to(actions, "b")
    assert delivered == {
        "type": "call_offer",
        "call_id": "c1",
        "sdp": "v=0 offer",
        "metadata": {"x": 1},
        "sig": "s",
        "from": "alice",
    }
    assert core.call_count == 1


def test_offer_cannot_spoof_from(core: RelayCore) -> None:
    delivered = only_to(send(core, "a", offer("c1", "bob", **{"from": "mallory"})), "b")
    assert delivered["from"] == "alice"


def test_call_ringing_and_answer_reach_the_caller(core: RelayCore) -> None:
    send(core, "a", offer("c1", "bob"))
    ringing = only_to(send(core, "b", {"type": "call_ringing", "call_id": "c1"}), "a")
    assert ringing == {"type": "call_ringing", "call_id": "c1", "from": "bob"}
    answered = only_to(send(core, "b", {**answer("c1"), "to": "alice"}), "a")
    assert answered == {"type": "call_answer", "call_id": "c1", "sdp": "v=0 answer", "from": "bob"}


@pytest.mark.parametrize(
    "message",
    [
        {"type": "ice", "call_id": "c1", "candidate": {"candidate": "x", "sdpMid": "0"}},
        {"type": "ice", "call_id": "c1", "candidate": None},
        {"type": "mediastatus", "call_id": "c1", "audio_muted": True, "video_muted": False},
        {"type": "hold", "call_id": "c1"},
        {"type": "resume", "call_id": "c1"},
        {"type": "renegotiate", "call_id": "c1", "sdp": "v=0 re", "description_type": "offer"},
    ],
)
def test_in_call_messages_are_forwarded_to_the_other_party_only(
    core: RelayCore, message: dict[str, Any]
) -> None:
    login(core, "c", "carol")
    established(core)
    expected_at_b = {**message, "from": "alice"}
    assert only_to(send(core, "a", {**message, "to": "bob"}), "b") == expected_at_b
    assert only_to(send(core, "b", message), "a") == {**message, "from": "bob"}


def test_third_party_gets_call_not_found(core: RelayCore) -> None:
    login(core, "c", "carol")
    established(core)
    for message in [
        ice("c1"),
        {"type": "hold", "call_id": "c1"},
        hangup("c1"),
        answer("c1"),
        reject("c1", "decline"),
        {"type": "call_ringing", "call_id": "c1"},
    ]:
        assert_error(send(core, "c", message), "c", "call_not_found", "c1")
    assert core.call_count == 1
    # the call is untouched
    assert only_to(send(core, "a", ice("c1")), "b")["from"] == "alice"


def test_third_party_cannot_answer_a_ringing_call(core: RelayCore) -> None:
    login(core, "c", "carol")
    send(core, "a", offer("c1", "bob"))
    assert_error(send(core, "c", answer("c1")), "c", "call_not_found", "c1")
    assert only_to(send(core, "b", answer("c1")), "a")["type"] == "call_answer"


def test_message_for_unknown_call_without_to(core: RelayCore) -> None:
    assert_error(send(core, "a", ice("nope")), "a", "call_not_found", "nope")
    assert_error(send(core, "a", answer("nope")), "a", "call_not_found", "nope")


def test_caller_cannot_answer_its_own_call(core: RelayCore) -> None:
    send(core, "a", offer("c1", "bob"))
    assert_error(send(core, "a", answer("c1")), "a", "invalid_message", "c1")


def test_hangup_is_forwarded_and_the_call_forgotten(core: RelayCore) -> None:
    established(core)
    assert core.call_count == 1
    actions = send(core, "b", hangup("c1", reason="bye", to="alice"))
    assert only_to(actions, "a") == {
        "type": "hangup",
        "call_id": "c1",
        "reason": "bye",
        "from": "bob",
    }
    assert core.call_count == 0
    assert_error(send(core, "a", ice("c1")), "a", "call_not_found", "c1")


def test_caller_cancels_a_ringing_call(core: RelayCore) -> None:
    send(core, "a", offer("c1", "bob"))
    cancelled = only_to(send(core, "a", hangup("c1")), "b")
    assert cancelled == {"type": "hangup", "call_id": "c1", "from": "alice"}
    assert core.call_count == 0


def test_call_ids_are_single_use(core: RelayCore) -> None:
    established(core)
    send(core, "a", hangup("c1"))
    assert_error(send(core, "a", offer("c1", "bob")), "a", "call_failed", "c1")
    assert only_to(send(core, "a", offer("c2", "bob")), "b")["type"] == "call_offer"


def test_duplicate_call_id_is_rejected(core: RelayCore) -> None:
    login(core, "c", "carol")
    send(core, "a", offer("c1", "bob"))
    assert_error(send(core, "a", offer("c1", "bob")), "a", "call_failed", "c1")
    assert_error(send(core, "c", offer("c1", "bob")), "c", "call_failed", "c1")
    assert core.call_count == 1


# -- bot pools --------------------------------------------------------------------------------


def login_bots(core: RelayCore, n: int, max_calls: int | None = None) -> list[str]:
    conns = [f"bot{i}" for i in range(n)]
    for conn in conns:
        login(core, conn, "pool", role="bot", max_calls=max_calls)
    return conns


def offer_to_pool(core: RelayCore, call_id: str, caller: str = "a") -> str:
    """Place a call to the pool and return the one bot connection that got the offer."""
    actions = send(core, caller, offer(call_id, "pool"))
    assert len(actions) == 1, actions
    [action] = actions
    assert isinstance(action, Send) and action.message["type"] == "call_offer"
    return action.conn


@pytest.mark.parametrize("n_bots", [2, 3])
def test_bot_pool_spreads_offers_least_loaded_first(n_bots: int) -> None:
    core = make_core()
    login(core, "a", "alice")
    bots = login_bots(core, n_bots)
    chosen = [offer_to_pool(core, f"c{i}") for i in range(3 * n_bots)]
    # every round of n offers hits every bot once
    for start in range(0, len(chosen), n_bots):
        assert sorted(chosen[start : start + n_bots]) == bots
    assert core.call_count == 3 * n_bots


def test_bot_pool_respects_max_calls_and_answers_busy_when_full() -> None:
    core = make_core()
    login(core, "a", "alice")
    login_bots(core, 2, max_calls=2)
    chosen = [offer_to_pool(core, f"c{i}") for i in range(4)]
    assert sorted(chosen) == ["bot0", "bot0", "bot1", "bot1"]
    busy = only_to(send(core, "a", offer("c5", "pool")), "a")
    assert busy == {"type": "call_reject", "call_id": "c5", "reason": "busy", "from": "pool"}
    assert core.call_count == 4  # no call created for c5
    assert_error(send(core, "a", ice("c5")), "a", "call_not_found", "c5")


def test_bot_pool_prefers_the_bot_with_most_room_relative_to_max_calls() -> None:
    core = make_core()
    login(core, "a", "alice")
    login(core, "small", "pool", role="bot", max_calls=1)
    login(core, "big", "pool", role="bot", max_calls=10)
    chosen = [offer_to_pool(core, f"c{i}") for i in range(5)]
    assert chosen.count("small") == 1
    assert chosen.count("big") == 4


def test_bot_pool_load_drops_when_calls_end() -> None:
    core = make_core()
    login(core, "a", "alice")
    login_bots(core, 2, max_calls=1)
    first, second = offer_to_pool(core, "c1"), offer_to_pool(core, "c2")
    assert {first, second} == {"bot0", "bot1"}
    only_to(send(core, first, answer("c1")), "a")
    only_to(send(core, "a", offer("c3", "pool")), "a")  # busy
    # an answered call ends: its bot is free again
    only_to(send(core, "a", hangup("c1")), first)
    assert offer_to_pool(core, "c3") == first
    # a call still ringing is cancelled: that bot is free again too
    only_to(send(core, "a", hangup("c2")), second)
    assert offer_to_pool(core, "c4") == second
    only_to(send(core, "a", offer("c5", "pool")), "a")  # both busy again


def test_bot_pool_busy_reject_from_the_bot_reaches_the_caller() -> None:
    core = make_core()
    login(core, "a", "alice")
    login_bots(core, 2)
    bot = offer_to_pool(core, "c1")
    busy = only_to(send(core, bot, reject("c1", "busy")), "a")
    assert busy == {"type": "call_reject", "call_id": "c1", "reason": "busy", "from": "pool"}
    assert core.call_count == 0


def test_pool_bot_closing_while_ringing_frees_it() -> None:
    core = make_core()
    login(core, "a", "alice")
    login_bots(core, 2, max_calls=1)
    bot = offer_to_pool(core, "c1")
    unavailable = only_to(core.closed(bot, 1.0), "a")
    assert unavailable == {
        "type": "hangup",
        "call_id": "c1",
        "reason": "unavailable",
        "from": "pool",
    }
    assert core.call_count == 0


# -- role "user": ring all devices ------------------------------------------------------------


@pytest.fixture
def devices(tokens: FakeTokens) -> RelayCore:
    """alice on "a"; bob on three devices "b1", "b2", "b3"; alice has offered call c1."""
    core = make_core(tokens, ring_timeout=30.0)
    login(core, "a", "alice")
    for conn in ("b1", "b2", "b3"):
        login(core, conn, "bob")
    actions = send(core, "a", offer("c1", "bob"))
    assert recipients(actions) == {"b1", "b2", "b3"}
    assert all(a.message["type"] == "call_offer" for a in actions)  # type: ignore[union-attr]
    return core


def test_first_answer_wins_and_other_devices_are_told(devices: RelayCore) -> None:
    actions = send(devices, "b2", answer("c1"))
    assert sent_to(actions, "a") == [
        {"type": "call_answer", "call_id": "c1", "sdp": "v=0 answer", "from": "bob"}
    ]
    elsewhere = {"type": "hangup", "call_id": "c1", "reason": "answered_elsewhere", "from": "alice"}
    assert sent_to(actions, "b1") == [elsewhere]
    assert sent_to(actions, "b3") == [elsewhere]
    assert recipients(actions) == {"a", "b1", "b3"}
    # the call now runs between a and b2 only
    assert only_to(send(devices, "a", ice("c1")), "b2")["from"] == "alice"
    assert_error(send(devices, "b1", answer("c1")), "b1", "call_not_found", "c1")
    assert_error(send(devices, "b3", ice("c1")), "b3", "call_not_found", "c1")


def test_decline_from_one_device_rejects_the_call(devices: RelayCore) -> None:
    actions = send(devices, "b1", reject("c1", "decline"))
    assert sent_to(actions, "a") == [
        {"type": "call_reject", "call_id": "c1", "reason": "decline", "from": "bob"}
    ]
    assert "b1" not in recipients(actions)
    assert devices.call_count == 0


def test_decline_from_one_device_tells_the_others_declined_elsewhere(devices: RelayCore) -> None:
    actions = send(devices, "b1", reject("c1", "decline"))
    elsewhere = {"type": "hangup", "call_id": "c1", "reason": "declined_elsewhere", "from": "alice"}
    assert sent_to(actions, "b2") == [elsewhere]
    assert sent_to(actions, "b3") == [elsewhere]


def test_busy_from_one_device_while_others_ring_does_not_reject(devices: RelayCore) -> None:
    assert send(devices, "b1", reject("c1", "busy")) == []
    assert devices.call_count == 1
    assert devices.tick(20.0) == []  # still ringing on b2 and b3
    assert recipients(send(devices, "b3", answer("c1"), 21.0)) == {"a", "b2"}


def test_busy_device_is_out_of_the_call(devices: RelayCore) -> None:
    send(devices, "b1", reject("c1", "busy"))
    assert_error(send(devices, "b1", answer("c1")), "b1", "call_not_found", "c1")


def test_busy_from_the_last_ringing_device_forwards_busy(devices: RelayCore) -> None:
    assert send(devices, "b1", reject("c1", "busy")) == []
    assert send(devices, "b2", reject("c1", "busy")) == []
    actions = send(devices, "b3", reject("c1", "busy"))
    assert only_to(actions, "a") == {
        "type": "call_reject",
        "call_id": "c1",
        "reason": "busy",
        "from": "bob",
    }
    assert devices.call_count == 0


def test_caller_cancel_reaches_every_ringing_device(devices: RelayCore) -> None:
    actions = send(devices, "a", hangup("c1", reason="cancel"))
    cancel = {"type": "hangup", "call_id": "c1", "reason": "cancel", "from": "alice"}
    assert {a.conn: a.message for a in actions} == {  # type: ignore[union-attr]
        "b1": cancel,
        "b2": cancel,
        "b3": cancel,
    }
    assert devices.call_count == 0


def test_answer_after_answer_is_refused(devices: RelayCore) -> None:
    send(devices, "b1", answer("c1"))
    assert_error(send(devices, "b1", answer("c1")), "b1", "invalid_message", "c1")


# -- ring timeout and unavailable callee ------------------------------------------------------


def test_ring_timeout_ends_the_call_with_no_answer(devices: RelayCore) -> None:
    assert devices.tick(29.9) == []  # offered at 0 with a 30 s ring timeout
    actions = devices.tick(30.0)
    assert sent_to(actions, "a") == [
        {"type": "hangup", "call_id": "c1", "reason": "no_answer", "from": "bob"}
    ]
    for conn in ("b1", "b2", "b3"):
        assert sent_to(actions, conn) == [
            {"type": "hangup", "call_id": "c1", "reason": "no_answer", "from": "alice"}
        ]
    assert closes(actions) == []
    assert devices.call_count == 0


def test_answered_call_has_no_ring_timeout(devices: RelayCore) -> None:
    send(devices, "b1", answer("c1"))
    assert devices.tick(1000.0 - 1) == []
    assert devices.call_count == 1


def test_last_ringing_device_closing_makes_the_callee_unavailable(devices: RelayCore) -> None:
    assert devices.closed("b1", 11.0) == []
    assert devices.closed("b2", 12.0) == []
    actions = devices.closed("b3", 13.0)
    assert only_to(actions, "a") == {
        "type": "hangup",
        "call_id": "c1",
        "reason": "unavailable",
        "from": "bob",
    }
    assert devices.call_count == 0


def test_busy_then_close_of_the_last_device_makes_the_callee_unavailable(
    devices: RelayCore,
) -> None:
    send(devices, "b1", reject("c1", "busy"))
    send(devices, "b2", reject("c1", "busy"))
    assert only_to(devices.closed("b3", 11.0), "a")["reason"] == "unavailable"


# -- rate limit -------------------------------------------------------------------------------


def test_rate_limit_burst_then_one_error_then_recovery() -> None:
    core = make_core(rate=1.0, burst=5.0)
    login(core, "a", "alice", now=100.0)  # the hello takes one token
    login(core, "b", "bob", now=100.0)
    for _ in range(4):
        assert_error(send(core, "a", ice("x"), 100.0), "a", "call_not_found", "x")
    # the burst is spent
    assert_error(send(core, "a", ice("x"), 100.0), "a", "rate_limited")
    for t in (100.0, 100.2, 100.5, 100.9):
        assert send(core, "a", offer("c1", "bob"), t) == []  # dropped silently
    assert core.call_count == 0
    # the other connection is unaffected
    only_to(send(core, "b", offer("c2", "alice"), 100.9), "a")
    # a second later there is room for one message again
    assert only_to(send(core, "a", offer("c3", "bob"), 101.9), "b")["type"] == "call_offer"


def test_rate_limited_error_is_repeated_at_most_once_a_second() -> None:
    core = make_core(rate=1.0, burst=1.0)
    login(core, "a", "alice", now=0.0)
    assert_error(send(core, "a", ice("x"), 0.1), "a", "rate_limited")
    assert send(core, "a", ice("x"), 0.5) == []
    # at 1.1 a token is back and is spent on this message
    assert_error(send(core, "a", ice("x"), 1.1), "a", "call_not_found", "x")
    assert_error(send(core, "a", ice("x"), 1.2), "a", "rate_limited")


def test_clock_stepping_back_does_not_drain_the_rate_bucket() -> None:
    core = make_core(rate=1.0, burst=5.0)
    login(core, "a", "alice", now=100.0)
    assert_error(send(core, "a", ice("x"), 90.0), "a", "call_not_found", "x")


# -- restart recovery and absent parties ------------------------------------------------------


def claim(call_id: str, peer: str) -> list[dict[str, str]]:
    return [{"call_id": call_id, "peer": peer}]


def test_restart_hangup_is_held_for_the_peer_until_it_claims() -> None:
    core = make_core()  # a relay that just restarted: it knows no calls
    login(core, "a", "alice", now=5.0, calls=claim("c1", "bob"))
    assert core.call_count == 1
    assert send(core, "a", hangup("c1", to="bob", reason="done"), 6.0) == []

    core.opened("b", 7.0)
    actions = send(
        core, "b", {"type": "hello", "token": "good:bob", "calls": claim("c1", "alice")}, 7.0
    )
    messages = sent_to(actions, "b")
    assert [m["type"] for m in messages] == ["welcome", "hangup"]
    assert messages[1] == {"type": "hangup", "call_id": "c1", "reason": "done", "from": "alice"}
    assert recipients(actions) == {"b"}
    assert core.call_count == 0


def test_restart_hangup_for_unknown_call_without_claim_is_held_too() -> None:
    core = make_core()
    login(core, "a", "alice", now=5.0)
    assert send(core, "a", hangup("c1", to="bob"), 6.0) == []
    core.opened("b", 7.0)
    actions = send(
        core, "b", {"type": "hello", "token": "good:bob", "calls": claim("c1", "alice")}, 7.0
    )
    assert sent_to(actions, "b")[1] == {"type": "hangup", "call_id": "c1", "from": "alice"}
    assert core.call_count == 0


def test_restart_both_claim_then_messages_flow_directly() -> None:
    core = make_core()
    login(core, "a", "alice", now=5.0, calls=claim("c1", "bob"))
    login(core, "b", "bob", now=6.0, calls=claim("c1", "alice"))
    assert core.call_count == 1
    assert only_to(send(core, "a", ice("c1", to="bob"), 7.0), "b") == {
        "type": "ice",
        "call_id": "c1",
        "candidate": {"candidate": "c"},
        "from": "alice",
    }
    assert only_to(send(core, "b", ice("c1"), 7.0), "a")["from"] == "bob"
    only_to(send(core, "b", hangup("c1"), 8.0), "a")
    assert core.call_count == 0


def test_restart_claim_by_a_third_user_does_not_join_the_call() -> None:
    core = make_core()
    login(core, "a", "alice", calls=claim("c1", "bob"))
    login(core, "m", "mallory", calls=claim("c1", "alice"))
    assert_error(send(core, "m", ice("c1")), "m", "call_not_found", "c1")
    login(core, "b", "bob", calls=claim("c1", "alice"))
    assert only_to(send(core, "a", ice("c1")), "b")["from"] == "alice"


def test_reconnect_within_absent_grace_receives_what_was_sent_meanwhile() -> None:
    core = make_core(absent_grace=60.0)
    login(core, "a", "alice")
    login(core, "b", "bob")
    established(core)
    assert core.closed("b", 10.0) == []
    held = [
        ice("c1"),
        {"type": "mediastatus", "call_id": "c1", "audio_muted": True, "video_muted": True},
    ]
    for message in held:
        assert send(core, "a", message, 20.0) == []
    assert core.tick(70.0) == []  # exactly at the grace limit: still waiting

    core.opened("b2", 70.0)
    actions = send(
        core, "b2", {"type": "hello", "token": "good:bob", "calls": claim("c1", "alice")}, 70.0
    )
    assert sent_to(actions, "b2")[1:] == [{**m, "from": "alice"} for m in held]
    # and the call continues on the new connection
    assert only_to(send(core, "a", ice("c1"), 71.0), "b2")["from"] == "alice"
    assert only_to(send(core, "b2", ice("c1"), 71.0), "a")["from"] == "bob"
    assert core.tick(500.0) == []
    assert core.call_count == 1


def test_absent_beyond_grace_ends_the_call_as_unavailable() -> None:
    core = make_core(absent_grace=60.0)
    login(core, "a", "alice")
    login(core, "b", "bob")
    established(core)
    core.closed("b", 10.0)
    actions = core.tick(70.1)
    assert only_to(actions, "a") == {
        "type": "hangup",
        "call_id": "c1",
        "reason": "unavailable",
        "from": "bob",
    }
    assert_error(send(core, "a", ice("c1"), 71.0), "a", "call_not_found", "c1")
    # what is left for bob is dropped on a later tick; nothing more for alice
    assert core.tick(200.0) == []
    assert core.call_count == 0


def test_caller_absent_beyond_grace_ends_the_call_for_the_callee() -> None:
    core = make_core(absent_grace=30.0)
    login(core, "a", "alice")
    login(core, "b", "bob")
    established(core)
    core.closed("a", 0.0)
    assert core.tick(30.0) == []
    actions = core.tick(31.0)
    assert only_to(actions, "b")["reason"] == "unavailable"


def test_messages_held_for_an_absent_party_are_capped() -> None:
    core = make_core(pending_per_party=2)
    login(core, "a", "alice")
    login(core, "b", "bob")
    established(core)
    core.closed("b", 1.0)
    assert send(core, "a", ice("c1"), 2.0) == []
    assert send(core, "a", {"type": "hold", "call_id": "c1"}, 2.0) == []
    for _ in range(3):  # no room left: each further message is refused to its sender, not lost
        assert_error(send(core, "a", ice("c1"), 2.0), "a", "rate_limited", "c1")
    core.opened("b2", 3.0)
    actions = send(
        core, "b2", {"type": "hello", "token": "good:bob", "calls": claim("c1", "alice")}, 3.0
    )
    assert [m["type"] for m in sent_to(actions, "b2")] == ["welcome", "ice", "hold"]


def test_reconnect_before_the_old_connection_is_noticed_closed() -> None:
    core = make_core(absent_grace=60.0)
    login(core, "a", "alice")
    login(core, "b", "bob")
    established(core)
    login(core, "b2", "bob", now=1.0, calls=claim("c1", "alice"))  # b is half-open
    core.closed("b", 5.0)  # the relay notices only now
    assert only_to(send(core, "a", ice("c1"), 6.0), "b2")["from"] == "alice"
    assert core.tick(100.0) == []


def test_ice_servers_for_token() -> None:
    core = RelayCore(FakeTokens().authenticate, ice_servers_for=lambda user: [{"urls": user}])
    assert core.ice_servers_for_token("good:alice", 0.0) == ("alice", [{"urls": "alice"}])
    with pytest.raises(ProtocolError) as caught:
        core.ice_servers_for_token("expired:alice", 0.0)
    assert caught.value.code == "auth_expired"


# -- fixes found by review ----------------------------------------------------------------------


def test_early_trickle_from_the_caller_reaches_every_ringing_device(devices: RelayCore) -> None:
    ice = {
        "type": "ice",
        "call_id": "c1",
        "candidate": {"candidate": "candidate:1 1 udp 1 x 9 typ host"},
    }
    actions = send(devices, "a", ice)
    assert recipients(actions) == {"b1", "b2", "b3"}
    assert all(m["from"] == "alice" for c in ("b1", "b2", "b3") for m in sent_to(actions, c))


def test_a_declined_call_with_early_messages_is_forgotten(core: RelayCore) -> None:
    send(core, "a", offer("c1", "bob"))
    send(core, "a", {"type": "ice", "call_id": "c1", "candidate": None})
    send(core, "b", reject("c1", "decline"))
    core.tick(1000.0)
    assert core.call_count == 0


def test_only_the_called_side_rings_answers_or_rejects(core: RelayCore) -> None:
    send(core, "a", offer("c1", "bob"))
    for message in (answer("c1"), reject("c1", "busy"), {"type": "call_ringing", "call_id": "c1"}):
        assert_error(send(core, "a", message), "a", "invalid_message", "c1")
    assert core.call_count == 1
    assert only_to(send(core, "b", answer("c1")), "a")["type"] == "call_answer"


def test_callee_device_reconnecting_while_ringing_can_still_answer(core: RelayCore) -> None:
    send(core, "a", offer("c1", "bob"))
    # bob's device reconnects (its old connection "b" is not noticed as dead yet)
    login(core, "b2", "bob", calls=[{"call_id": "c1", "peer": "alice"}])
    actions = send(core, "b2", answer("c1"))
    assert sent_to(actions, "a")[0]["type"] == "call_answer"
    assert sent_to(actions, "b")[0]["reason"] == "answered_elsewhere"


def test_restored_call_passes_answers_through(tokens: FakeTokens) -> None:
    core = make_core(tokens)
    login(core, "a", "alice", calls=[{"call_id": "c9", "peer": "bob"}])
    login(core, "b", "bob", calls=[{"call_id": "c9", "peer": "alice"}])
    assert only_to(send(core, "b", answer("c9")), "a")["from"] == "bob"


def test_late_claim_of_an_ended_call_is_told_at_once(core: RelayCore) -> None:
    established(core)
    core.closed("b", 1.0)
    send(core, "a", hangup("c1"), 2.0)
    core.tick(500.0)  # bob stayed away past the grace period: the call is forgotten
    assert core.call_count == 0
    assert core.opened("b2", 600.0) == []
    actions = send(core, "b2", {"type": "hello", "token": "good:bob",
                                "calls": [{"call_id": "c1", "peer": "alice"}]}, 600.0)  # fmt: skip
    hangups = [m for m in sent_to(actions, "b2") if m["type"] == "hangup"]
    assert hangups == [{"type": "hangup", "call_id": "c1", "reason": "ended", "from": "alice"}]
    assert core.call_count == 0


def test_token_subject_must_be_a_valid_id(core: RelayCore) -> None:
    core.opened("x", 0.0)
    actions = send(core, "x", {"type": "hello", "token": "good:bad user"})
    assert_fatal(actions, "x", "auth_failed", 4001)


def test_after_a_fatal_error_nothing_more_happens(core: RelayCore) -> None:
    core.opened("x", 0.0)
    assert_fatal(send(core, "x", offer("c1", "bob")), "x", "auth_failed", 4001)
    assert send(core, "x", {"type": "hello", "token": "good:x"}) == []
    assert core.tick(100.0) == []  # no repeated error while the close completes


# -- presence and transfer --------------------------------------------------------------------


def presence_of(actions: list[Action], conn: str) -> list[tuple[str, str, str | None]]:
    return [
        (m["user"], m["status"], m["text"])
        for m in sent_to(actions, conn)
        if m["type"] == "presence_update"
    ]


def test_presence_follows_connections_choices_and_calls(tokens: FakeTokens) -> None:
    core = make_core(tokens)
    login(core, "a", "alice")
    login(core, "b", "bob")
    send(core, "b", {"type": "presence_set", "status": "available", "visible_to": ["alice"]})
    listing = only_to(send(core, "a", {"type": "presence_subscribe", "users": ["bob"]}), "a")
    assert listing == {"type": "presence_list",
                       "users": [{"user": "bob", "status": "available", "text": None}]}  # fmt: skip
    assert presence_of(core.closed("b", 0.0), "a") == [("bob", "offline", None)]
    core.opened("b", 0.0)
    actions = send(core, "b", {"type": "hello", "token": "good:bob"})
    assert presence_of(actions, "a") == [("bob", "available", None)]  # the choice outlives it
    actions = send(core, "b", {"type": "presence_set", "status": "dnd", "text": "focus"})
    assert presence_of(actions, "a") == [("bob", "dnd", "focus")]
    assert presence_of(send(core, "a", offer("c1", "bob")), "a") == []  # ringing is not on_call
    assert presence_of(send(core, "b", answer("c1")), "a") == [("bob", "on_call", "focus")]
    assert presence_of(send(core, "b", hangup("c1")), "a") == [("bob", "dnd", "focus")]


def test_presence_on_call_and_offline(tokens: FakeTokens) -> None:
    core = make_core(tokens)
    login(core, "w", "watcher")
    login(core, "a", "alice")
    login(core, "b", "bob")
    for conn in ("a", "b"):
        send(core, conn, {"type": "presence_set", "status": "available", "visible_to": "everyone"})
    send(core, "w", {"type": "presence_subscribe", "users": ["alice", "bob"]})
    send(core, "a", offer("c1", "bob"))
    actions = send(core, "b", answer("c1"))
    assert sorted(presence_of(actions, "w")) == [
        ("alice", "on_call", None),
        ("bob", "on_call", None),
    ]
    actions = send(core, "a", hangup("c1"))
    assert sorted(presence_of(actions, "w")) == [("alice", "available", None),
                                                 ("bob", "available", None)]  # fmt: skip
    assert presence_of(core.closed("b", 1.0), "w") == [("bob", "offline", None)]
    send(core, "w", {"type": "presence_unsubscribe", "users": ["alice"]})
    assert presence_of(core.closed("a", 2.0), "w") == []


def test_presence_validation(core: RelayCore) -> None:
    assert_error(
        send(core, "a", {"type": "presence_set", "status": "busy"}), "a", "invalid_message"
    )
    too_long = {"type": "presence_set", "status": "away", "text": "x" * 300}
    assert_error(send(core, "a", too_long), "a", "invalid_message")
    bad_users = {"type": "presence_subscribe", "users": ["ok", "not ok"]}
    assert_error(send(core, "a", bad_users), "a", "invalid_message")


def test_transfer_is_forwarded_in_an_answered_call(core: RelayCore) -> None:
    established(core)
    message = {"type": "transfer", "call_id": "c1", "target": "carol", "replaces": None}
    assert only_to(send(core, "b", message), "a") == {**message, "from": "bob"}
    bad = {"type": "transfer", "call_id": "c1", "target": "no one"}
    assert_error(send(core, "b", bad), "b", "invalid_message")
    not_ours = {"type": "transfer", "call_id": "c1", "target": "carol", "replaces": "c9"}
    assert_error(send(core, "b", not_ours), "b", "call_not_found", "c1")


def test_connection_limit_is_a_fatal_session_limit(tokens: FakeTokens) -> None:
    core = make_core(tokens, max_connections=2)
    login(core, "a", "alice")
    login(core, "b", "bob")
    assert_fatal(core.opened("c", 0.0), "c", "session_limit", 4004)


def test_calls_per_user_limit_is_not_fatal(tokens: FakeTokens) -> None:
    core = make_core(tokens, calls_per_user=2)
    login(core, "a", "alice")
    login(core, "b", "bob")
    send(core, "a", offer("c1", "bob"))
    send(core, "a", offer("c2", "bob"))
    actions = send(core, "a", offer("c3", "bob"))
    assert_error(actions, "a", "session_limit", "c3")
    send(core, "a", hangup("c1"))
    assert only_to(send(core, "a", offer("c4", "bob")), "b")["type"] == "call_offer"


# -- hostile input and size limits --------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    ["[" * 60000, '{"a":' * 12000, '{"type":"hello","token":' + "[" * 60000],
    ids=["arrays", "objects", "inside-a-field"],
)
def test_decode_refuses_json_nested_past_the_parser(data: str) -> None:
    error = invalid(data)
    assert "nested" in error.message


def test_validate_refuses_free_form_fields_nested_too_deeply() -> None:
    deep: Any = {}
    for _ in range(100):  # parses, but its copies would strain every JSON library on the way
        deep = {"k": deep}
    error = invalid_obj(offer("c1", "bob", metadata=deep))
    assert (error.message, error.call_id) == ("call_offer: field 'metadata' nests deeper than 32",
                                              "c1")  # fmt: skip
    assert validate(decode(json.dumps(offer("c1", "bob", metadata={"a": {"b": [1, [2]]}}))))


def test_deep_nesting_is_fatal_auth_failed_before_hello_and_invalid_after() -> None:
    core = make_core()
    core.opened("x", 0.0)
    assert_fatal(core.received("x", "[" * 60000, 0.0), "x", "auth_failed", 4001)
    login(core, "a", "alice")
    assert_error(core.received("a", "[" * 60000, 0.0), "a", "invalid_message")


def test_error_texts_quote_client_values_briefly() -> None:
    nested: Any = []
    for _ in range(900):
        nested = [nested]
    for message in (
        {"type": "x" * 50_000},
        {"type": "hold", "call_id": "c1", "v": nested},
        {"type": "hold", "call_id": "é" * 20_000},
    ):
        text = invalid_obj(message).message
        assert len(encode(error("invalid_message", text))) < 200, text


def test_offer_whose_forwarded_copy_would_be_too_big_is_refused_to_the_caller(
    core: RelayCore,
) -> None:
    # 30 000 "é" in UTF-8: a 60 kB frame, but its forwarded copy writes each as \u00e9
    # (6 bytes): 180 kB, which no client has to accept.
    big = json.dumps(offer("c1", "bob", sdp="v=0 " + "é" * 30_000), ensure_ascii=False)
    assert len(big.encode()) < MAX_MESSAGE_BYTES
    assert_error(core.received("a", big, 0.0), "a", "invalid_message", "c1")
    assert core.call_count == 0
    # What it adds (`from`, `v`) counts too: a frame of exactly the limit comes out over it.
    exact = offer("c1", "bob", sdp="")
    exact["sdp"] = "x" * (MAX_MESSAGE_BYTES - len(json.dumps(exact, separators=(",", ":"))))
    frame = json.dumps(exact, separators=(",", ":"))
    assert len(frame) == MAX_MESSAGE_BYTES and "invalid_message" not in frame
    assert_error(core.received("a", frame, 0.0), "a", "invalid_message", "c1")
    # The same call id is still free, and what fits is delivered.
    exact["sdp"] = exact["sdp"][:-64]
    delivered = only_to(send(core, "a", exact), "b")
    assert len(encode(delivered)) <= MAX_MESSAGE_BYTES


def test_in_call_message_too_big_once_forwarded_is_refused(core: RelayCore) -> None:
    established(core)
    big = {"type": "renegotiate", "call_id": "c1", "sdp": "😀" * 15_000}  # 60 kB, 180 kB escaped
    frame = json.dumps(big, ensure_ascii=False)
    assert_error(core.received("b", frame, 0.0), "b", "invalid_message", "c1")


def test_presence_list_is_split_to_fit_the_message_limit() -> None:
    core = make_core()
    users = [f"user{n:03d}" for n in range(500)]
    for n, user in enumerate(users):
        login(core, f"c{n}", user)
        send(
            core,
            f"c{n}",
            {
                "type": "presence_set",
                "status": "away",
                "text": "😀" * 256,
                "visible_to": "everyone",
            },
        )
    login(core, "w", "watcher", role="bot")
    actions = send(core, "w", {"type": "presence_subscribe", "users": users})
    lists = sent_to(actions, "w")
    assert len(lists) > 1 and {m["type"] for m in lists} == {"presence_list"}
    assert all(len(encode(m)) <= MAX_MESSAGE_BYTES for m in lists)
    shown = [state for m in lists for state in m["users"]]
    assert [s["user"] for s in shown] == users and shown[0]["text"] == "😀" * 256
