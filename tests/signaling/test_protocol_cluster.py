"""RelayCore as a node of a cluster, sans I/O: cores exchange their `Publish` payloads through an
in-test queue (what the Redis backplane carries), and clients on different nodes call each
other. tests/cluster runs the same over a real Redis with real peers."""

from __future__ import annotations

import json
from collections import deque
from typing import Any

from test_protocol import FakeTokens, login, make_core, send

from callbot.signaling.relay_core import (
    ALL_NODES,
    Action,
    Own,
    Publish,
    RelayCore,
    RelayLimits,
    Send,
)


class Bus:
    """Cores named by node; `run` hands each `Publish` to its node(s) in order, FIFO, and
    keeps every message sent to a client connection."""

    def __init__(self, *names: str) -> None:
        tokens = FakeTokens()
        self.cores = {
            n: RelayCore(tokens.authenticate, limits=RelayLimits(), node=n) for n in names
        }
        self.inbox: dict[str, list[dict[str, Any]]] = {}
        self.ownership: list[tuple[str, Own]] = []

    def run(self, node: str, actions: list[Action]) -> None:
        queue = deque((node, a) for a in actions)
        while queue:
            sender, action = queue.popleft()
            if isinstance(action, Send):
                self.inbox.setdefault(action.conn, []).append(action.message)
            elif isinstance(action, Own):
                self.ownership.append((sender, action))
            elif isinstance(action, Publish):
                targets = (
                    [n for n in self.cores if n != sender]
                    if action.node == ALL_NODES
                    else [action.node]
                )
                for target in targets:
                    out = self.cores[target].remote(
                        sender, json.loads(json.dumps(action.payload)), 0.0
                    )
                    queue.extend((target, a) for a in out)

    def login(self, node: str, conn: str, user: str, **hello: Any) -> None:
        core = self.cores[node]
        core.opened(conn, 0.0)
        kind = "bot" if hello.get("role") == "bot" else "good"
        self.run(node, send(core, conn, {"type": "hello", "token": f"{kind}:{user}", **hello}))

    def send(self, node: str, conn: str, message: dict[str, Any]) -> None:
        self.run(node, send(self.cores[node], conn, message))

    def take(self, conn: str) -> list[dict[str, Any]]:
        """The messages `conn` got since the last take (welcome excluded)."""
        return [m for m in self.inbox.pop(conn, []) if m["type"] != "welcome"]


OFFER = {"type": "call_offer", "call_id": "c1", "to": "bob", "sdp": "v=0 offer"}


def test_a_lone_relay_publishes_nothing() -> None:
    core = make_core()
    login(core, "a", "alice")
    login(core, "b", "bob")
    actions = send(core, "a", OFFER) + core.closed("b", 1.0) + core.closed("a", 1.0)
    assert not [a for a in actions if isinstance(a, Publish)]
    assert core.connection_count == 0


def test_a_call_across_nodes_rings_every_device_and_keeps_its_order() -> None:
    bus = Bus("A", "B", "C")
    bus.login("A", "a1", "alice")
    bus.login("B", "b1", "bob")
    bus.login("C", "c1", "bob")  # bob twice, on two nodes
    core_a = bus.cores["A"]
    assert (core_a.sessions_of("bob"), core_a.connection_count, core_a.user_count) == (2, 1, 1)

    bus.send("A", "a1", OFFER)
    assert (
        [m["type"] for m in bus.take("b1")] == [m["type"] for m in bus.take("c1")] == ["call_offer"]
    )
    bus.send("C", "c1", {"type": "call_ringing", "call_id": "c1"})
    bus.send("B", "b1", {"type": "call_answer", "call_id": "c1", "sdp": "v=0 answer"})
    assert [m["type"] for m in bus.take("a1")] == ["call_ringing", "call_answer"]
    assert bus.take("c1") == [
        {"type": "hangup", "call_id": "c1", "reason": "answered_elsewhere", "from": "alice"}
    ]

    for n in range(3):
        bus.send("A", "a1", {"type": "ice", "call_id": "c1", "candidate": {"n": n}})
    for kind in ("renegotiate", "hold", "resume"):
        extra = {"sdp": "v=0 again"} if kind == "renegotiate" else {}
        bus.send("B", "b1", {"type": kind, "call_id": "c1", **extra})
    assert [m["candidate"] for m in bus.take("b1")] == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert [m["type"] for m in bus.take("a1")] == ["renegotiate", "hold", "resume"]
    assert (bus.cores["A"].call_count, bus.cores["B"].call_count) == (1, 0)  # A owns it

    bus.send("B", "b1", {"type": "hangup", "call_id": "c1", "reason": "bye"})
    assert bus.take("a1") == [{"type": "hangup", "call_id": "c1", "reason": "bye", "from": "bob"}]
    assert bus.cores["A"].call_count == 0
    assert bus.cores["B"]._owners == {} and bus.cores["C"]._owners == {}
    assert bus.ownership == [("A", Own("c1", True)), ("A", Own("c1", False))]


def test_a_node_gone_ends_the_calls_ringing_there() -> None:
    bus = Bus("A", "B")
    bus.login("A", "a1", "alice")
    bus.login("B", "b1", "bob")
    bus.send("A", "a1", OFFER)
    bus.run("A", bus.cores["A"].node_gone("B", 1.0))
    assert bus.take("a1") == [
        {"type": "hangup", "call_id": "c1", "reason": "unavailable", "from": "bob"}
    ]
    assert bus.cores["A"].sessions_of("bob") == 0


def test_group_invites_and_refusals_cross_nodes() -> None:
    bus = Bus("A", "B")
    bus.login("A", "a1", "alice")
    bus.login("B", "b1", "bob")
    bus.send("A", "a1", {"type": "group_invite", "to": "bob", "room": 7, "kind": "videoroom"})
    assert [m["room"] for m in bus.take("b1")] == [7]
    bus.send("A", "a1", OFFER)
    bus.take("b1")
    bus.send("B", "b1", {"type": "call_answer", "call_id": "c1", "sdp": "v=0"})
    bus.send("B", "b1", {"type": "call_answer", "call_id": "c1", "sdp": "v=0"})  # again
    (refusal,) = bus.take("b1")  # the owner's error comes back to bob's node
    assert refusal["type"] == "error" and refusal["call_id"] == "c1"


def test_malformed_messages_from_other_nodes_are_dropped() -> None:
    bus = Bus("A", "B")
    bus.login("A", "a1", "alice")
    bus.login("B", "b1", "bob")
    core = bus.cores["A"]
    for payload in [
        {}, {"t": "nope"}, {"t": "up", "conn": 5, "user": "x"},
        {"t": "up", "conn": "z", "user": "a b"},
        {"t": "up", "conn": "a1", "user": "mallory"},  # our own connection: not another node's
        {"t": "up", "conn": "b2", "user": "bob", "generation": "x", "calls": -3},
        {"t": "down", "conn": "a1"}, {"t": "deliver", "conn": "a1", "msg": "text"},
        {"t": "received", "conn": "b1", "msg": {"type": "presence_subscribe", "users": ["x"]}},
        {"t": "received", "conn": "b1", "msg": {"type": "hangup"}},
    ]:  # fmt: skip
        actions = core.remote("B", payload, 0.0)
        assert all(isinstance(a, Publish) for a in actions), (payload, actions)
    # a node speaks only for its own connections
    assert core.remote("C", {"t": "down", "conn": "b1"}, 0.0) == []
    hangup = {"type": "hangup", "call_id": "x"}
    assert core.remote("C", {"t": "received", "conn": "b1", "msg": hangup}, 0.0) == []
    assert core.connection_count == 1 and core.user_of("a1") == "alice"
    assert core.sessions_of("bob") == 2  # b1, and b2 with its bad numbers taken as 0


def test_presence_and_on_call_are_seen_from_every_node() -> None:
    bus = Bus("A", "B", "C")
    bus.login("A", "a1", "alice")
    bus.login("B", "b1", "bob")
    bus.login("C", "c1", "carol")
    bus.send("B", "b1", {"type": "presence_set", "status": "away", "text": "lunch",
                         "visible_to": ["alice"]})  # fmt: skip
    bus.send("A", "a1", {"type": "presence_subscribe", "users": ["bob"]})
    bus.send("C", "c1", {"type": "presence_subscribe", "users": ["bob"]})
    assert bus.take("a1") == [
        {"type": "presence_list", "users": [{"user": "bob", "status": "away", "text": "lunch"}]}
    ]
    assert bus.take("c1")[0]["users"][0]["status"] == "unknown"  # not in bob's audience

    bus.send("C", "c1", {**OFFER, "call_id": "c2"})  # carol (node C) calls bob (node B)
    bus.send("B", "b1", {"type": "call_answer", "call_id": "c2", "sdp": "v=0"})
    assert [m["status"] for m in bus.take("a1") if m["type"] == "presence_update"] == ["on_call"]
    bus.send("C", "c1", {"type": "hangup", "call_id": "c2"})
    assert [m["status"] for m in bus.take("a1") if m["type"] == "presence_update"] == ["away"]

    bus.run("B", bus.cores["B"].closed("b1", 1.0))
    assert bus.take("a1")[-1]["status"] == "offline"
