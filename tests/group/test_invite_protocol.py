"""The relay's side of group calls, sans I/O: `group_invite` routing and `welcome.janus`."""

from __future__ import annotations

import json
from typing import Any

import pytest

from callbot.signaling.relay_core import Identity, RelayCore, Send

JANUS = "ws://127.0.0.1:8188"


def _authenticate(token: str, now: float) -> Identity:
    return Identity(token, now + 3600, 0)  # the token is the user id


def _core(janus_url: str | None = JANUS) -> RelayCore:
    return RelayCore(_authenticate, janus_url=janus_url)


def _login(core: RelayCore, conn: str, user: str) -> dict[str, Any]:
    core.opened(conn, 0.0)
    [welcome] = core.received(conn, json.dumps({"type": "hello", "token": user}), 0.0)
    assert isinstance(welcome, Send) and welcome.message["type"] == "welcome"
    return welcome.message


def _invite(**fields: Any) -> str:
    return json.dumps(
        {"type": "group_invite", "to": "bob", "room": 1234, "kind": "videoroom", "janus": JANUS}
        | fields
    )


@pytest.mark.parametrize("janus_url", [JANUS, None])
def test_welcome_says_where_janus_is(janus_url: str | None) -> None:
    assert _login(_core(janus_url), "a", "alice")["janus"] == janus_url


def test_invite_reaches_every_connection_of_the_user_but_the_senders() -> None:
    core = _core()
    for conn, user in (("a", "alice"), ("a2", "alice"), ("b1", "bob"), ("b2", "bob")):
        _login(core, conn, user)
    actions = core.received("a", _invite(), 1.0)
    expected = {"type": "group_invite", "room": 1234, "kind": "videoroom", "janus": JANUS,
                "from": "alice"}  # fmt: skip
    assert actions == [Send("b1", expected), Send("b2", expected)]
    to_self = core.received("a", _invite(to="alice", room="standup", kind="audiobridge"), 1.0)
    assert [a.conn for a in to_self] == ["a2"]  # own other devices, never the sender itself
    assert core.call_count == 0  # an invitation is not a call: nothing is kept


def test_invite_to_an_offline_user() -> None:
    core = _core()
    _login(core, "a", "alice")
    [error] = core.received("a", _invite(to="carol"), 1.0)
    assert isinstance(error, Send) and error.conn == "a"
    assert error.message["code"] == "user_offline" and error.message["fatal"] is False


@pytest.mark.parametrize(
    "fields",
    [
        {"kind": "sip"},
        {"room": 0},
        {"room": True},
        {"room": "no spaces"},
        {"room": 2**63},
        {"janus": "http://127.0.0.1:8088/janus"},
        {"janus": "ws://" + "x" * 1100},
        {"to": "bad id"},
        {"room": None},
    ],
)
def test_invalid_invites_are_refused(fields: dict[str, Any]) -> None:
    core = _core()
    _login(core, "a", "alice")
    _login(core, "b", "bob")
    [error] = core.received("a", _invite(**fields), 1.0)
    assert isinstance(error, Send) and error.conn == "a"
    assert error.message["code"] == "invalid_message" and "group_invite" in error.message["message"]
