"""The message TypedDicts of callbot/signaling/messages.py against the two other descriptions of
the protocol: docs/protocol.md (the reference for client authors) and what the relay core
really sends. `CLIENT_MESSAGES`, the table `validate` checks frames against, is derived from the
TypedDicts: a field added to a TypedDict and not to the docs (or the other way round), or a relay
message that no longer matches its type, fails here."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal, NotRequired, TypedDict, get_args

import pytest

from callbot.signaling.messages import (
    CLIENT_MESSAGES,
    ClientMessage,
    ProtocolError,
    RelayMessage,
    fields_of,
    validate,
)
from callbot.signaling.relay_core import Action, Identity, RelayCore, Send

PROTOCOL_MD = (Path(__file__).resolve().parents[2] / "docs" / "protocol.md").read_text()
_NAME = re.compile(r"`(\w+)`")
_REQUIRED = re.compile(r"\b(req|opt)\b")


def _field(text: str) -> tuple[str, tuple[bool, bool]] | None:
    """`name` ... req|opt ... from one `presence_set`-style field description."""
    name, required = _NAME.search(text), _REQUIRED.search(text)
    if name is None or required is None:
        return None
    return name.group(1), (required.group(1) == "req", "null" in text)


def _documented() -> dict[str, dict[str, tuple[bool, bool]]]:
    """Section 3 of docs/protocol.md: type -> field -> (required, may be null)."""
    section = PROTOCOL_MD.split("## 3 Client → relay messages")[1].split("\n## 4 ")[0]
    out: dict[str, dict[str, tuple[bool, bool]]] = {}
    for block in re.split(r"^### ", section, flags=re.M)[1:]:
        heading, _, body = block.partition("\n")
        rows = [line.split(" | ") for line in body.splitlines() if line.startswith("| `")]
        if "| field | type | req |" in body:  # one table for every type in the heading
            fields = {r[0].strip("| `"): (r[2] == "yes", "null" in r[1]) for r in rows}
            for kind in re.findall(r"\w+", heading.split(" — ")[0]):
                out[kind] = fields
            continue
        shared = re.search(r"\(besides (.*?)\)", body)  # renegotiate: `call_id` req, `to` opt
        common = dict(filter(None, map(_field, shared.group(1).split(",")))) if shared else {}
        for row in rows:
            kind, described = row[0].strip("| `"), row[1]
            out[kind] = {**common, **dict(filter(None, map(_field, described.split(";"))))}
    return out


def test_every_client_message_is_documented_with_the_same_fields() -> None:
    documented = _documented()
    assert sorted(documented) == sorted(CLIENT_MESSAGES)
    for kind, fields in CLIENT_MESSAGES.items():
        typed = {
            name: (required, type(None) in types) for name, (types, required) in fields.items()
        }
        assert typed == documented[kind], kind


class _Probe(TypedDict):
    type: Literal["probe"]
    name: str
    count: NotRequired[int | None]
    audience: NotRequired[Literal["everyone"] | list[str]]
    flag: bool


def test_fields_of_reads_names_types_and_required_from_a_typeddict() -> None:
    assert fields_of(_Probe) == (
        "probe",
        {
            "name": ((str,), True),
            "count": ((int, type(None)), False),
            "audience": ((str, list), False),
            "flag": ((bool,), True),
        },
    )


_SAMPLE: dict[type, Any] = {str: "x", int: 1, bool: True, list: [], dict: {}}


def test_validate_requires_every_required_field_of_every_client_typeddict() -> None:
    for message_type in get_args(ClientMessage):
        kind, fields = fields_of(message_type)
        complete = {
            name: _SAMPLE[types[0]] for name, (types, required) in fields.items() if required
        }
        for name in complete:
            without = {k: v for k, v in complete.items() if k != name}
            with pytest.raises(ProtocolError, match=f"{kind}: missing field '{name}'"):
                validate({"type": kind, **without})


# -- what the relay core sends matches the relay -> client TypedDicts ---------------------------

RELAY_TYPES = dict(fields_of(t) for t in get_args(RelayMessage))


def _authenticate(token: str, now: float) -> Identity:
    role, _, user = token.partition(":")
    if role not in ("user", "bot"):
        raise ProtocolError("auth_failed", "invalid token")
    return Identity(user, 1000.0, 0, role)


def _conforms(message: dict[str, Any]) -> None:
    """`message` has exactly the fields of its TypedDict, required ones present, each of an
    accepted JSON type (an int is a float, as in typing; a bool is never an int)."""
    fields = RELAY_TYPES[message["type"]]
    assert set(message) - {"type"} <= set(fields), message
    for name, (types, required) in fields.items():
        if name not in message:
            assert not required, (name, message)
            continue
        value = message[name]
        accepted = types + ((int,) if float in types else ())
        assert isinstance(value, accepted), (name, message)
        assert bool in types or not isinstance(value, bool), (name, message)


class _Session:
    """Drives one `RelayCore` and keeps every message it sends."""

    def __init__(self) -> None:
        self.core = RelayCore(_authenticate, lambda user: [{"urls": "stun:127.0.0.1:3478"}])
        self.sent: list[dict[str, Any]] = []

    def _keep(self, actions: list[Action]) -> None:
        self.sent += [dict(a.message) for a in actions if isinstance(a, Send)]

    def open(self, conn: str, token: str, **hello: Any) -> None:
        self._keep(self.core.opened(conn, 0.0))
        self.send(conn, {"type": "hello", "token": token, **hello})

    def send(self, conn: str, message: dict[str, Any]) -> None:
        self._keep(self.core.received(conn, json.dumps(message), 0.0))


def test_every_relay_message_matches_its_typeddict() -> None:
    relay = _Session()
    relay.open("bad", "nobody")  # fatal error
    for conn, user in (("a", "alice"), ("b", "bob"), ("b2", "bob"), ("c", "carol")):
        relay.open(conn, f"user:{user}")
    relay.open("p", "bot:pool", role="bot", max_calls=1)
    relay.send("a", {"type": "refresh", "token": "user:alice"})
    relay.send("a", {"type": "presence_subscribe", "users": ["bob", "carol"]})
    shown = {"status": "away", "text": "lunch", "visible_to": "everyone"}
    relay.send("b", {"type": "presence_set", **shown})
    relay.send("a", {"type": "group_invite", "to": "bob", "room": 7, "kind": "videoroom"})
    relay.send("a", {"type": "call_offer", "call_id": "x", "to": "nobody", "sdp": "v=0"})
    # alice calls bob (two devices ring); b answers, b2 hears answered_elsewhere
    relay.send("a", {"type": "call_offer", "call_id": "c1", "to": "bob", "sdp": "v=0",
                     "metadata": {"k": 1}, "sig": {"alg": "ed25519"}})  # fmt: skip
    relay.send("b", {"type": "call_ringing", "call_id": "c1"})
    relay.send("b", {"type": "call_answer", "call_id": "c1", "sdp": "v=0", "sig": None})
    for message in (
        {"type": "ice", "candidate": {"candidate": "candidate:1 1 UDP 1 127.0.0.1 9 typ host"}},
        {"type": "mediastatus", "audio_muted": True, "video_muted": False, "deafened": False},
        {"type": "hold"},
        {"type": "resume"},
        {"type": "renegotiate", "sdp": "v=0", "description_type": "offer"},
    ):
        relay.send("a", {**message, "call_id": "c1"})
    # an attended transfer: bob consults carol, hands alice over to her (with a grant)
    relay.send("b", {"type": "call_offer", "call_id": "c2", "to": "carol", "sdp": "v=0"})
    relay.send("c", {"type": "call_answer", "call_id": "c2", "sdp": "v=0"})
    relay.send("b", {"type": "transfer", "call_id": "c1", "target": "carol", "replaces": "c2"})
    grant = next(m["grant"] for m in relay.sent if m["type"] == "transfer")
    relay.send("a", {"type": "call_offer", "call_id": "c3", "to": "carol", "sdp": "v=0",
                     "grant": grant})  # fmt: skip
    relay.send("b", {"type": "hangup", "call_id": "c1", "reason": "transferred"})
    # the pool: one call fills it, the next is refused busy; a declined call
    relay.send("a", {"type": "call_offer", "call_id": "c4", "to": "pool", "sdp": "v=0"})
    relay.send("a", {"type": "call_offer", "call_id": "c5", "to": "pool", "sdp": "v=0"})
    relay.send("p", {"type": "call_reject", "call_id": "c4", "reason": "decline"})

    for message in relay.sent:
        _conforms(message)
    assert {m["type"] for m in relay.sent} == set(RELAY_TYPES)
    offers = [m for m in relay.sent if m["type"] == "call_offer"]
    assert any("replaces" in m and "transferred_by" in m for m in offers)
    assert all("grant" not in m and "to" not in m for m in offers)
