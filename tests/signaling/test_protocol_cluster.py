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
        #: Killed nodes, and what was published to each of them since, by sender.
        self.lost: dict[str, dict[str, list[dict[str, Any]]]] = {}
        self.now = 0.0

    def kill(self, node: str) -> None:
        """The node dies without a word: what is published to it goes nowhere."""
        del self.cores[node]
        self.lost[node] = {}

    def forget(self, node: str) -> None:
        """Every other node notices that `node` is gone (its liveness key expired) and gets
        back what it published to it in vain, as the Redis backplane does."""
        for name, core in list(self.cores.items()):
            self.run(name, core.node_gone(node, self.now))
            self.run(name, core.undelivered(node, self.lost[node].pop(name, []), self.now))

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
                    if target in self.lost:
                        self.lost[target].setdefault(sender, []).append(action.payload)
                        continue
                    out = self.cores[target].remote(
                        sender, json.loads(json.dumps(action.payload)), self.now
                    )
                    queue.extend((target, a) for a in out)

    def login(self, node: str, conn: str, user: str, **hello: Any) -> None:
        core = self.cores[node]
        core.opened(conn, self.now)
        kind = "bot" if hello.get("role") == "bot" else "good"
        message = {"type": "hello", "token": f"{kind}:{user}", **hello}
        self.run(node, send(core, conn, message, self.now))

    def send(self, node: str, conn: str, message: dict[str, Any]) -> None:
        self.run(node, send(self.cores[node], conn, message, self.now))

    def close(self, node: str, conn: str) -> None:
        self.run(node, self.cores[node].closed(conn, self.now))

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
        {"t": "received", "conn": "b1", "msg": {**OFFER, "to": "alice"}},  # no grant: not routed
        {"t": "owner", "call_id": 5, "stamp": [1, "B"]}, {"t": "owner", "call_id": "c9"},
        {"t": "owner", "call_id": "c9", "stamp": [True, "B"]},
        {"t": "claim", "conn": "b1", "call_id": "c9", "peer": 5},
        {"t": "claim", "conn": "a1", "call_id": "c9", "peer": "bob"},
        {"t": "ended", "call_id": ["c9"]}, {"t": "ended"},
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


# -- failover: a call's owner dies, or its party moves to another node --------------------------


def _answered(bus: Bus, caller: tuple[str, str], callee: tuple[str, str]) -> None:
    """alice (caller) calls bob (callee) and bob answers."""
    bus.send(*caller, OFFER)
    bus.send(*callee, {"type": "call_answer", "call_id": "c1", "sdp": "v=0"})
    bus.take(caller[1]), bus.take(callee[1])
    bus.now = 10.0


CLAIM = {"calls": [{"call_id": "c1", "peer": "bob"}]}


def test_the_callers_node_dies_its_call_moves_where_the_caller_comes_back() -> None:
    bus = Bus("A", "B", "C")
    bus.login("A", "a1", "alice")
    bus.login("B", "b1", "bob")
    _answered(bus, ("A", "a1"), ("B", "b1"))
    bus.kill("A")
    bus.send("B", "b1", {"type": "ice", "call_id": "c1", "candidate": {"n": 1}, "to": "alice"})
    bus.login("C", "c2", "alice", **CLAIM)  # alice reconnects to node C: C owns the call now
    assert bus.cores["C"].call_count == 1 and bus.cores["B"]._owners["c1"].owner == "C"
    bus.send("B", "b1", {"type": "ice", "call_id": "c1", "candidate": {"n": 2}, "to": "alice"})
    assert [m["candidate"] for m in bus.take("c2")] == [{"n": 2}]
    bus.forget("A")  # what bob said while A was dead and unknown as such goes to C now
    assert [m["candidate"] for m in bus.take("c2")] == [{"n": 1}]
    bus.send("C", "c2", {"type": "hangup", "call_id": "c1"})
    assert [m["type"] for m in bus.take("b1")] == ["hangup"]
    assert bus.cores["C"].call_count == 0 and bus.cores["B"]._owners == {}


def test_the_callees_node_dies_the_owner_hands_the_call_over() -> None:
    bus = Bus("A", "B", "C")
    bus.login("A", "a1", "alice")
    bus.login("B", "b1", "bob")
    _answered(bus, ("A", "a1"), ("B", "b1"))
    bus.kill("B")
    bus.send("A", "a1", {"type": "hold", "call_id": "c1", "to": "bob"})  # lost with B...
    bus.login("C", "c2", "bob", calls=[{"call_id": "c1", "peer": "alice"}])
    assert (bus.cores["A"].call_count, bus.cores["C"].call_count) == (0, 1)
    assert bus.cores["A"]._owners["c1"].owner == "C"
    bus.send("A", "a1", {"type": "resume", "call_id": "c1", "to": "bob"})
    bus.send("C", "c2", {"type": "hangup", "call_id": "c1", "to": "alice"})
    assert [m["type"] for m in bus.take("c2")] == ["resume"]
    assert [m["type"] for m in bus.take("a1")] == ["hangup"]
    bus.forget("B")  # ...and the call is over: nothing comes back to life
    assert bus.cores["C"].call_count == bus.cores["A"].call_count == 0


def test_a_party_moving_off_a_live_owner_takes_what_waits_for_it() -> None:
    bus = Bus("A", "B")
    bus.login("A", "a1", "alice")
    bus.login("A", "a2", "bob")
    _answered(bus, ("A", "a1"), ("A", "a2"))
    bus.close("A", "a2")  # bob's connection drops (a load balancer sends him to B)
    bus.send("A", "a1", {"type": "ice", "call_id": "c1", "candidate": {"n": 1}})
    bus.login("B", "b1", "bob", calls=[{"call_id": "c1", "peer": "alice"}])
    assert (bus.cores["A"].call_count, bus.cores["B"].call_count) == (0, 1)
    assert [m["candidate"] for m in bus.take("b1")] == [{"n": 1}]
    bus.send("A", "a1", {"type": "hangup", "call_id": "c1"})
    assert [m["type"] for m in bus.take("b1")] == ["hangup"]


def test_two_nodes_taking_the_same_call_agree_on_the_later() -> None:
    bus = Bus("A", "B", "C", "D")
    bus.login("A", "a1", "alice")
    bus.login("B", "b1", "bob")
    _answered(bus, ("A", "a1"), ("B", "b1"))
    bus.kill("A")
    bus.kill("B")
    bus.now = 11.0
    bus.login("C", "c1", "alice", **CLAIM)
    bus.now = 12.0
    bus.login("D", "d1", "bob", calls=[{"call_id": "c1", "peer": "alice"}])
    assert (bus.cores["C"].call_count, bus.cores["D"].call_count) == (0, 1)
    bus.send("C", "c1", {"type": "hangup", "call_id": "c1", "to": "bob"})
    assert [m["type"] for m in bus.take("d1")] == ["hangup"]


def test_a_dead_owners_call_is_taken_over_by_the_node_of_the_party_left() -> None:
    bus = Bus("A", "B")
    bus.login("A", "a1", "alice")
    bus.login("B", "b1", "bob")
    _answered(bus, ("A", "a1"), ("B", "b1"))
    bus.kill("A")
    bus.forget("A")  # alice did not come back (yet): B holds the call for her
    assert bus.cores["B"].call_count == 1 and bus.cores["B"]._owners == {}
    bus.send("B", "b1", {"type": "hangup", "call_id": "c1"})
    bus.login("B", "b2", "alice", **CLAIM)
    assert [m["type"] for m in bus.take("b2")] == ["hangup"]


def test_claiming_a_call_that_ended_meanwhile_ends_it() -> None:
    bus = Bus("A", "B")
    bus.login("A", "a1", "alice")
    bus.login("A", "a2", "bob")
    _answered(bus, ("A", "a1"), ("A", "a2"))
    bus.close("A", "a2")
    bus.send("A", "a1", {"type": "hangup", "call_id": "c1"})
    bus.login("B", "b1", "bob", calls=[{"call_id": "c1", "peer": "alice"}])
    assert [(m["type"], m["reason"]) for m in bus.take("b1")] == [("hangup", "ended")]
    assert bus.cores["B"].call_count == 0


def test_a_party_coming_back_to_the_other_partys_node_is_joined_there_at_once() -> None:
    bus = Bus("A", "B")
    bus.login("A", "a1", "alice")
    bus.login("B", "b1", "bob")
    _answered(bus, ("A", "a1"), ("B", "b1"))
    bus.kill("A")
    bus.login("B", "b2", "alice", **CLAIM)  # before B knows that A is gone
    assert bus.cores["B"].call_count == 1 and bus.cores["B"]._owners == {}
    bus.send("B", "b2", {"type": "hangup", "call_id": "c1"})
    assert [m["type"] for m in bus.take("b1")] == ["hangup"]
