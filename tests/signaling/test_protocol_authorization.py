"""Who may do what, in the sans-I/O relay core (DESIGN §10, docs/security.md).

Attended-transfer grants, bot-role tokens, revocation ending calls, opt-in presence. Tokens are
faked: "user:NAME" is a user's token, "bot:NAME" one minted for the bot role.
"""

from __future__ import annotations

import json
from typing import Any

from callbot.signaling.messages import ProtocolError
from callbot.signaling.relay_core import Action, Close, Identity, RelayCore, Send

GRANT_TTL = 30.0  # protocol.GRANT_TTL, the documented lifetime of a transfer grant


class Tokens:
    def __init__(self) -> None:
        self.generations: dict[str, int] = {}

    def generation_of(self, user: str) -> int:
        return self.generations.get(user, 0)

    def authenticate(self, token: str, now: float) -> Identity:
        role, _, user = token.partition(":")
        if role not in ("user", "bot") or not user:
            raise ProtocolError("auth_failed", "invalid token")
        return Identity(user, 1e9, self.generation_of(user), role)


def send(core: RelayCore, conn: str, message: dict[str, Any], now: float = 0.0) -> list[Action]:
    return core.received(conn, json.dumps(message), now)


def to(actions: list[Action], conn: str) -> list[dict[str, Any]]:
    return [a.message for a in actions if isinstance(a, Send) and a.conn == conn]


def login(core: RelayCore, conn: str, user: str, role: str = "user", token_role: str = "") -> None:
    core.opened(conn, 0.0)
    token = f"{token_role or role}:{user}"
    [welcome] = to(send(core, conn, {"type": "hello", "token": token, "role": role}), conn)
    assert welcome["type"] == "welcome", welcome


def connect(core: RelayCore, call_id: str, caller: str, callee: str, **extra: Any) -> None:
    """`caller` (a connection) calls the user on connection `callee`, who answers."""
    offer = {"type": "call_offer", "call_id": call_id, "to": core.user_of(callee), "sdp": "o"}
    [delivered] = to(send(core, caller, {**offer, **extra}), callee)
    assert delivered["type"] == "call_offer"
    [answer] = to(
        send(core, callee, {"type": "call_answer", "call_id": call_id, "sdp": "a"}), caller
    )
    assert answer["type"] == "call_answer"


def error_code(actions: list[Action], conn: str) -> str:
    [message] = to(actions, conn)
    assert message["type"] == "error", message
    return str(message["code"])


# -- attended transfer: a relay-issued, single-use grant ------------------------------------


def transfer_setup() -> tuple[RelayCore, str]:
    """alice (a) talks to desk (d); desk consults bob (b) in c2; desk hands alice over to bob.
    Returns the core and the grant alice received; mallory (m) is online too."""
    core = RelayCore(Tokens().authenticate)
    for conn, user in (("a", "alice"), ("d", "desk"), ("b", "bob"), ("m", "mallory")):
        login(core, conn, user)
    connect(core, "c1", "a", "d")
    connect(core, "c2", "d", "b")
    transfer = {"type": "transfer", "call_id": "c1", "target": "bob", "replaces": "c2"}
    [forwarded] = to(send(core, "d", transfer), "a")
    assert forwarded["type"] == "transfer" and forwarded["replaces"] == "c2"
    assert isinstance(forwarded["grant"], str) and len(forwarded["grant"]) >= 32
    return core, forwarded["grant"]


def replacing_offer(call_id: str, grant: str | None, **extra: Any) -> dict[str, Any]:
    offer = {"type": "call_offer", "call_id": call_id, "to": "bob", "sdp": "o", **extra}
    return offer if grant is None else {**offer, "grant": grant}


def test_the_transferee_with_the_grant_replaces_the_consultation() -> None:
    core, grant = transfer_setup()
    [offer] = to(send(core, "a", replacing_offer("c3", grant)), "b")
    assert offer["replaces"] == "c2" and offer["transferred_by"] == "desk"
    assert offer["from"] == "alice" and "grant" not in offer


def test_caller_metadata_never_makes_a_replacing_call() -> None:
    core, _ = transfer_setup()
    claims = {"replaces": "c2", "transferred_by": "desk"}
    [offer] = to(send(core, "m", replacing_offer("c4", None, metadata=claims, **claims)), "b")
    assert "replaces" not in offer and "transferred_by" not in offer  # only in metadata
    assert offer["metadata"] == claims  # passed on as the caller's words, nothing more


def test_a_grant_works_for_its_transferee_and_target_only_and_once() -> None:
    core, grant = transfer_setup()
    assert error_code(send(core, "m", replacing_offer("c4", grant)), "m") == "forbidden"
    to_desk = {"type": "call_offer", "call_id": "c5", "to": "desk", "sdp": "o", "grant": grant}
    assert error_code(send(core, "a", to_desk), "a") == "forbidden"
    assert to(send(core, "a", replacing_offer("c6", grant)), "b")[0]["replaces"] == "c2"
    assert error_code(send(core, "a", replacing_offer("c7", grant)), "a") == "forbidden"
    assert error_code(send(core, "a", replacing_offer("c8", "made-up")), "a") == "forbidden"


def test_a_grant_expires() -> None:
    core, grant = transfer_setup()
    core.tick(GRANT_TTL + 1)
    actions = send(core, "a", replacing_offer("c3", grant), GRANT_TTL + 1)
    assert error_code(actions, "a") == "forbidden"


def test_only_a_party_of_the_consultation_with_the_target_gets_a_grant() -> None:
    core, _ = transfer_setup()
    # alice is not in c2: she cannot hand mallory over to bob in desk's place
    connect(core, "c9", "m", "a")
    steal = {"type": "transfer", "call_id": "c9", "target": "bob", "replaces": "c2"}
    assert error_code(send(core, "a", steal), "a") == "call_not_found"
    # desk is in c2, but with bob, not mallory
    wrong = {"type": "transfer", "call_id": "c1", "target": "mallory", "replaces": "c2"}
    assert error_code(send(core, "d", wrong), "d") == "call_not_found"


def test_the_replacing_call_goes_to_the_pool_member_holding_the_consultation() -> None:
    core = RelayCore(Tokens().authenticate)
    login(core, "a", "alice")
    login(core, "d", "desk")
    for conn in ("b1", "b2"):
        login(core, conn, "bob", role="bot")
    connect(core, "c1", "a", "d")
    offer = {"type": "call_offer", "call_id": "c2", "to": "bob", "sdp": "o"}
    holder = next(a.conn for a in send(core, "d", offer) if isinstance(a, Send))
    send(core, holder, {"type": "call_answer", "call_id": "c2", "sdp": "a"})
    transfer = {"type": "transfer", "call_id": "c1", "target": "bob", "replaces": "c2"}
    [forwarded] = to(send(core, "d", transfer), "a")
    actions = send(core, "a", replacing_offer("c3", forwarded["grant"]))
    assert [a.conn for a in actions] == [holder]  # not the idle member the pool would pick


# -- bot pools need bot tokens --------------------------------------------------------------


def test_a_user_token_cannot_join_a_bot_pool() -> None:
    core = RelayCore(Tokens().authenticate)
    login(core, "b1", "echo", role="bot")
    core.opened("x", 0.0)
    actions = send(core, "x", {"type": "hello", "token": "user:echo", "role": "bot"})
    [refusal] = to(actions, "x")
    assert refusal["code"] == "forbidden" and refusal["fatal"] is True
    assert "--role bot" in refusal["message"]
    assert Close("x", 4005, "forbidden") in actions
    offer = {"type": "call_offer", "call_id": "c1", "to": "echo", "sdp": "o"}
    login(core, "a", "alice")
    assert [a.conn for a in send(core, "a", offer)] == ["b1"]  # the offer never reaches "x"


def test_a_bot_token_may_connect_as_a_user_device() -> None:
    core = RelayCore(Tokens().authenticate)
    login(core, "b1", "echo", role="user", token_role="bot")


# -- revocation ends calls --------------------------------------------------------------------


def test_revoking_a_user_hangs_up_their_calls_with_reason_revoked() -> None:
    tokens = Tokens()
    core = RelayCore(tokens.authenticate)
    for conn, user in (("a", "alice"), ("b", "bob"), ("c", "carol")):
        login(core, conn, user)
    connect(core, "c1", "a", "b")
    send(core, "a", {"type": "call_offer", "call_id": "c2", "to": "carol", "sdp": "o"})
    tokens.generations["alice"] = 1
    actions = core.recheck_tokens(tokens.generation_of)
    [to_bob] = to(actions, "b")
    assert to_bob == {"type": "hangup", "call_id": "c1", "reason": "revoked", "from": "alice"}
    [to_carol] = to(actions, "c")  # a call still ringing ends too
    assert to_carol["call_id"] == "c2" and to_carol["reason"] == "revoked"
    to_alice = to(actions, "a")
    assert [m["type"] for m in to_alice] == ["hangup", "hangup", "error"]
    assert to_alice[-1]["code"] == "session_revoked"
    assert core.call_count == 0


def test_revoking_an_absent_party_ends_the_call_kept_for_its_return() -> None:
    tokens = Tokens()
    core = RelayCore(tokens.authenticate)
    login(core, "a", "alice")
    login(core, "b", "bob")
    connect(core, "c1", "a", "b")
    core.closed("a", 1.0)  # alice's network drops: the call waits for her to come back
    assert core.call_count == 1
    tokens.generations["alice"] = 1
    [to_bob] = to(core.recheck_tokens(tokens.generation_of), "b")
    assert to_bob["reason"] == "revoked"
    assert core.call_count == 0


# -- presence is opt-in -----------------------------------------------------------------------


def subscribe(core: RelayCore, conn: str, users: list[str]) -> dict[str, str]:
    [listing] = to(send(core, conn, {"type": "presence_subscribe", "users": users}), conn)
    return {s["user"]: s["status"] for s in listing["users"]}


def updates(actions: list[Action], conn: str) -> list[tuple[str, str]]:
    return [(m["user"], m["status"]) for m in to(actions, conn) if m["type"] == "presence_update"]


def test_users_are_unknown_unless_they_allow_the_watcher() -> None:
    core = RelayCore(Tokens().authenticate)
    for conn, user in (("w", "watcher"), ("a", "alice"), ("o", "other")):
        login(core, conn, user)
    login(core, "e", "echo", role="bot")
    states = subscribe(core, "w", ["alice", "echo", "nobody", "watcher"])
    assert states == {"alice": "unknown", "echo": "available", "nobody": "unknown",
                      "watcher": "available"}  # fmt: skip
    share = {"type": "presence_set", "status": "away", "visible_to": ["watcher"]}
    assert updates(send(core, "a", share), "w") == [("alice", "away")]
    assert subscribe(core, "o", ["alice"]) == {"alice": "unknown"}
    assert updates(core.closed("a", 1.0), "w") == [("alice", "offline")]
    login(core, "a", "alice")
    hide = {"type": "presence_set", "status": "away", "visible_to": []}
    assert updates(send(core, "a", hide), "w") == [("alice", "unknown")]
    public = {"type": "presence_set", "status": "dnd", "visible_to": "everyone"}
    actions = send(core, "a", public)
    assert updates(actions, "w") == [("alice", "dnd")] and updates(actions, "o") == [
        ("alice", "dnd")
    ]


def test_visible_to_is_validated() -> None:
    core = RelayCore(Tokens().authenticate)
    login(core, "a", "alice")
    for bad in ("all", ["not ok"], ["x"] * 501, 3):
        message = {"type": "presence_set", "status": "away", "visible_to": bad}
        assert error_code(send(core, "a", message), "a") == "invalid_message"
