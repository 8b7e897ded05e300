"""The relay's routing state machine, sans I/O.

Nothing here touches a socket or a clock: `RelayCore` is fed events (`opened`, `received`,
`closed`, `tick`) with the current time and returns the actions to perform (`Send`, `Close`,
`Publish`, `Own`). `relay.py` moves the bytes; the tests drive `RelayCore` directly. Messages are
checked against the schema in messages.py first.
"""

from __future__ import annotations

import secrets
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .messages import (
    AUTH_EXPIRED,
    AUTH_FAILED,
    CALL_FAILED,
    CALL_NOT_FOUND,
    CALLEE_ONLY,
    CLOSE_CODES,
    FORBIDDEN,
    ID_PATTERN,
    IN_CALL,
    INVALID_MESSAGE,
    MAX_MESSAGE_BYTES,
    RATE_LIMITED,
    SESSION_LIMIT,
    SESSION_REVOKED,
    USER_OFFLINE,
    ProtocolError,
    decode,
    encode,
    error,
    presence_lists,
    validate,
)
from .presence import PresenceBoard

#: How long the grant of an attended transfer lets the transferee place the replacing call.
GRANT_TTL = 30.0


def _count(value: Any) -> int:
    """A non-negative integer from another node's message; anything else counts as 0."""
    return value if type(value) is int and value >= 0 else 0


@dataclass(frozen=True)
class Send:
    conn: str
    message: dict[str, Any]


@dataclass(frozen=True)
class Close:
    conn: str
    code: int
    reason: str


@dataclass(frozen=True)
class Publish:
    """Hand `payload` to relay node `node` ("*": every other node) over the backplane.

    Only a clustered relay (`callbot serve --redis`) emits these; docs/howto/cluster.md
    lists the payloads (`t`: up, down, deliver, received)."""

    node: str
    payload: dict[str, Any]


@dataclass(frozen=True)
class Own:
    """This node holds call `call_id` (`owned`), or no longer does: recorded in the backplane
    so the cluster knows which node routes each call (only a clustered relay emits these)."""

    call_id: str
    owned: bool


Action = Send | Close | Publish | Own
#: `Publish.node` for a message to every other node.
ALL_NODES = "*"


@dataclass(frozen=True)
class Identity:
    """Who a valid token says the client is, and until when."""

    user: str
    expires_at: float
    generation: int
    role: str = "user"  # "bot" only for tokens minted for the bot role


@dataclass
class RelayLimits:
    """Tunable limits; docs/protocol.md states the defaults."""

    hello_timeout: float = 10.0
    ring_timeout: float = 60.0
    rate: float = 200.0  # messages per second per connection, sustained (a busy bot: ~4 per call)
    burst: float = 1000.0
    connections_per_user: int = 32
    max_connections: int = 10_000  # open connections on the whole relay
    calls_per_user: int = 1000  # calls a user may have ringing or up at once
    absent_grace: float = 120.0  # how long a call waits for a vanished party to come back
    pending_per_party: int = 64  # messages kept for an absent party
    remembered_ended: int = 10_000  # ended call ids remembered to answer late claims at once


@dataclass
class _Bucket:
    """Token-bucket rate limiter."""

    rate: float
    capacity: float
    tokens: float
    stamp: float

    def take(self, now: float) -> bool:
        elapsed = max(0.0, now - self.stamp)  # a wall clock stepping back refills nothing
        self.tokens = min(self.capacity, self.tokens + elapsed * self.rate)
        self.stamp = max(self.stamp, now)
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


@dataclass
class _Session:
    conn: str
    opened_at: float
    bucket: _Bucket
    user: str | None = None
    role: str = "user"
    max_calls: int | None = None
    expires_at: float = 0.0
    generation: int = 0
    calls: set[str] = field(default_factory=set)
    last_rate_error: float = -1e9
    last_assigned: int = 0  # dispatch sequence number of the last call given to this session
    closing: bool = False  # a fatal error was sent; the close is on its way
    node: str | None = None  # the relay node holding this connection; None: this one
    load: int = 0  # its calls cluster-wide, as last told by its node (or to the other nodes)


@dataclass
class _Party:
    user: str
    conn: str | None  # None while this party's connection is gone
    pending: deque[dict[str, Any]] = field(default_factory=deque)
    absent_since: float | None = None
    generation: int | None = None  # token generation of the session that took part, if known


@dataclass(frozen=True)
class _Grant:
    """Leave for `transferee` to call `target` in place of call `replaces` between
    `transferor` and `target` (an attended transfer): single use, until `expires_at`."""

    replaces: str
    transferor: str
    transferee: str
    target: str
    expires_at: float


@dataclass
class _Call:
    call_id: str
    caller: _Party
    callee: _Party
    ringing: set[str]  # callee connections still ringing (all of a user's, or one pool bot)
    answered: bool
    ring_deadline: float
    ended: bool = False  # over, but holding messages for a party that has not come back yet
    restored: bool = False  # rebuilt from claims after a relay restart: no ringing phase known

    def parties(self) -> tuple[_Party, _Party]:
        return self.caller, self.callee

    def party_of(self, conn: str) -> tuple[_Party, _Party] | None:
        """(sender's party, other party) for a connection taking part in this call."""
        if self.caller.conn == conn:
            return self.caller, self.callee
        if self.callee.conn == conn or conn in self.ringing:
            return self.callee, self.caller
        return None


Authenticate = Callable[[str, float], Identity]
"""Checks a token at a time; raises `ProtocolError` with an auth code when refused."""
IceServersFor = Callable[[str], list[dict[str, Any]]]


class RelayCore:
    """Routing, auth and limits for one relay, driven by events, returning actions."""

    def __init__(
        self,
        authenticate: Authenticate,
        ice_servers_for: IceServersFor = lambda user: [],
        limits: RelayLimits | None = None,
        janus_url: str | None = None,
        node: str | None = None,
    ) -> None:
        self._authenticate = authenticate
        #: This relay's name among the nodes of a cluster (see `remote`); None: a lone relay,
        #: which never emits `Publish`.
        self.node = node
        self._remote_count = 0  # sessions mirrored from other nodes
        #: Calls other nodes own that connections of ours take part in: id -> (owner, our conns).
        self._owners: dict[str, tuple[str, set[str]]] = {}
        self._pool_members: set[str] = set()  # our bot connections, whose load others track
        self._ownership: list[Own] = []  # calls taken or let go since the last `_route`
        self._busy_here: set[str] = set()  # users in an answered call this node owns
        self._busy_elsewhere: dict[str, set[str]] = {}  # user -> nodes saying they are on a call
        #: The Janus (SFU) for group calls that `welcome` announces, if any.
        self.janus_url = janus_url
        self._ice_servers_for = ice_servers_for
        self.limits = limits or RelayLimits()
        self._sessions: dict[str, _Session] = {}
        self._by_user: dict[str, set[str]] = {}
        self._calls: dict[str, _Call] = {}
        self._recently_ended: OrderedDict[str, None] = OrderedDict()
        self._dispatched = 0
        self._grants: dict[str, _Grant] = {}  # attended-transfer grant -> what it allows
        self._bots: set[str] = set()  # users seen with a bot-role session: presence is public
        self._presence = PresenceBoard(
            lambda user: user in self._by_user, self._on_call, self._bots.__contains__,
            self.user_of,
        )  # fmt: skip
        self._touched: set[str] = set()  # users whose presence may have changed
        self.counters: dict[str, int] = {"messages": 0}

    # -- introspection (metrics, tests) --------------------------------------------------------

    @property
    def connection_count(self) -> int:
        """Connections to this relay (not those of other nodes of its cluster)."""
        return len(self._sessions) - self._remote_count

    @property
    def call_count(self) -> int:
        """Calls ringing or established (not ended ones waiting to tell an absent party)."""
        return sum(1 for call in self._calls.values() if not call.ended)

    @property
    def user_count(self) -> int:
        """Users with a connection to this relay (not only to other nodes of its cluster)."""
        if not self._remote_count:
            return len(self._by_user)
        return len({s.user for s in self._sessions.values() if s.node is None and s.user})

    def sessions_of(self, user: str) -> int:
        return len(self._by_user.get(user, ()))

    def user_of(self, conn: str) -> str | None:
        session = self._sessions.get(conn)
        return session.user if session else None

    def ice_servers_for_token(self, token: str, now: float) -> tuple[str, list[dict[str, Any]]]:
        """For the HTTP ice-config endpoint: the token's user and their ICE servers."""
        identity = self._authenticate(token, now)
        return identity.user, self._ice_servers_for(identity.user)

    # -- events --------------------------------------------------------------------------------

    def opened(self, conn: str, now: float) -> list[Action]:
        limits = self.limits
        session = _Session(conn, now, _Bucket(limits.rate, limits.burst, limits.burst, now))
        self._sessions[conn] = session
        if self.connection_count > limits.max_connections:
            self._count_error(SESSION_LIMIT)
            return self._fatal(session, SESSION_LIMIT, "the relay is at its connection limit")
        return []

    def received(self, conn: str, data: str | bytes, now: float) -> list[Action]:
        return self._route(self._receive(conn, data, now) + self._presence_updates())

    def _receive(self, conn: str, data: str | bytes, now: float) -> list[Action]:
        session = self._sessions.get(conn)
        if session is None or session.closing:
            return []
        self.counters["messages"] += 1
        try:
            if not session.bucket.take(now):
                return self._rate_limited(session, now)
            message = validate(decode(data))
            if session.user is None:
                if message["type"] != "hello":
                    raise ProtocolError(AUTH_FAILED, "the first message must be hello")
                return self._hello(session, message, now)
            return self._dispatch(session, message, now)
        except ProtocolError as exc:
            self._count_error(exc.code)
            if session.user is None or exc.fatal:
                code = exc.code if exc.fatal else AUTH_FAILED
                return self._fatal(session, code, exc.message)
            return [Send(conn, error(exc.code, exc.message, exc.call_id, fatal=False))]

    def closed(self, conn: str, now: float) -> list[Action]:
        return self._route(self._close(conn, now) + self._presence_updates())

    def _close(self, conn: str, now: float) -> list[Action]:
        session = self._sessions.pop(conn, None)
        if session is None:
            return []
        actions: list[Action] = []
        self._pool_members.discard(conn)
        if session.node is not None:
            self._remote_count -= 1
        elif session.user is not None:
            actions.append(Publish(ALL_NODES, {"t": "down", "conn": conn}))
        self._presence.forget_connection(conn)
        if session.user is not None:
            self._touched.add(session.user)
            self._by_user.get(session.user, set()).discard(conn)
            if not self._by_user.get(session.user):
                self._by_user.pop(session.user, None)
        for call_id in list(session.calls):
            call = self._calls.get(call_id)
            if call is None:
                self._disown(call_id, conn)
                continue
            if conn in call.ringing:
                call.ringing.discard(conn)
                if not call.ringing and not call.answered:
                    actions += self._end_call(call, "unavailable")
                continue
            for party in call.parties():
                if party.conn == conn:
                    party.conn, party.absent_since = None, now
        return actions

    def tick(self, now: float) -> list[Action]:
        """Apply time: hello deadline, token expiry, ring timeout, absent parties."""
        actions: list[Action] = []
        for session in list(self._sessions.values()):
            if session.closing or session.node is not None:
                continue
            if session.user is None and now - session.opened_at > self.limits.hello_timeout:
                actions += self._fatal(session, AUTH_FAILED, "no hello within the time limit")
            elif session.user is not None and now >= session.expires_at:
                actions += self._fatal(session, AUTH_EXPIRED, "session token expired")
        for call in list(self._calls.values()):
            absent_too_long = any(
                p.absent_since is not None and now - p.absent_since > self.limits.absent_grace
                for p in call.parties()
            )
            if call.ended:
                if absent_too_long:
                    self._forget(call)
            elif not call.answered and now >= call.ring_deadline:
                actions += self._end_call(call, "no_answer")
            elif absent_too_long:
                actions += self._end_call(call, "unavailable")
                self._forget(call)  # the absent party's grace is over: nothing is kept for it
        self._grants = {k: g for k, g in self._grants.items() if g.expires_at > now}
        return self._route(actions + self._presence_updates())

    def recheck_tokens(self, generation_of: Callable[[str], int]) -> list[Action]:
        """After a revocation: end every call a revoked user takes part in (media is peer to
        peer: the other parties must hang up, `hangup{reason: "revoked"}`), then cut every
        session whose token generation is now stale."""
        current: dict[str, int] = {}

        def stale(user: str, generation: int | None) -> bool:
            if generation is None:
                return False
            if user not in current:
                current[user] = generation_of(user)
            return generation != current[user]

        revoked = [s for s in self._sessions.values()
                   if s.user is not None and stale(s.user, s.generation)]  # fmt: skip
        cut = {s.conn for s in revoked}
        actions: list[Action] = []
        for call in list(self._calls.values()):
            if not call.ended and (
                call.ringing & cut or any(stale(p.user, p.generation) for p in call.parties())
            ):
                actions += self._end_call(call, "revoked")
        for session in revoked:
            if session.node is None:  # another node's sessions are cut by that node
                actions += self._fatal(session, SESSION_REVOKED, "tokens of this user were revoked")
        return self._route(actions + self._presence_updates())

    # -- the cluster (DESIGN §8, docs/howto/cluster.md) -----------------------------------------

    def remote(self, sender: str, payload: dict[str, Any], now: float) -> list[Action]:
        """A message from relay node `sender` (over the backplane): a connection there came
        (`up`) or went (`down`), a message for one of ours (`deliver`), or a message one of
        its connections sent in a call this node owns (`received`)."""
        kind = payload.get("t")
        if kind == "up":
            actions = self._mirror(sender, payload, now)
        elif kind == "down":
            session = self._sessions.get(str(payload.get("conn")))
            held = session is not None and session.node == sender  # only its node closes it
            actions = self._close(session.conn, now) if held and session else []
        elif kind == "calls":
            self._busy_elsewhere_from(sender, payload)
            actions = []
        elif kind == "deliver":
            actions = self._delivered(payload)
        elif kind == "received":
            actions = self._received_remotely(sender, payload, now)
        else:
            actions = []
        return self._route(actions + self._presence_updates())

    def node_gone(self, node: str, now: float) -> list[Action]:
        """Relay node `node` stopped (its liveness key expired): forget its connections."""
        actions: list[Action] = []
        for session in [s for s in self._sessions.values() if s.node == node]:
            actions += self._close(session.conn, now)
        for user, nodes in list(self._busy_elsewhere.items()):
            if node in nodes:
                self._busy_from(node, user, False)
        return self._route(actions + self._presence_updates())

    def announcements(self) -> list[Action]:
        """Every connection of ours, announced again (after the backplane lost its state,
        e.g. Redis restarted)."""
        local = [s for s in self._sessions.values() if s.node is None and s.user is not None]
        return self._route([Publish(ALL_NODES, self._announcement(s)) for s in local])

    def _announcement(self, session: _Session) -> dict[str, Any]:
        """What the other nodes keep of a connection of ours (`remote` payload `up`)."""
        assert session.user is not None
        return {"t": "up", "conn": session.conn, "user": session.user, "role": session.role,
                "max_calls": session.max_calls, "expires_at": session.expires_at,
                "generation": session.generation, "calls": len(session.calls),
                "presence": self._presence.setting(session.user)}  # fmt: skip

    def _busy_elsewhere_from(self, node: str, payload: dict[str, Any]) -> None:
        """Another node says a user is (or no longer is) on a call it owns."""
        user, busy = payload.get("user"), payload.get("on_call")
        if isinstance(user, str) and ID_PATTERN.fullmatch(user) and isinstance(busy, bool):
            self._busy_from(node, user, busy)

    def _busy_from(self, node: str, user: str, busy: bool) -> None:
        nodes = self._busy_elsewhere.setdefault(user, set())
        (nodes.add if busy else nodes.discard)(node)
        if not nodes:
            del self._busy_elsewhere[user]
        self._touched.add(user)

    def _adopt_presence(self, user: str, setting: Any) -> None:
        """The presence a user set on another node (checked as a `presence_set` would be)."""
        if not isinstance(setting, dict):
            return
        try:
            message = validate({**setting, "type": "presence_set"})
        except ProtocolError:
            return
        self._presence.choose(user, message["status"], message.get("text"))
        if "visible_to" in message:
            self._presence.share(user, message["visible_to"])

    def _mirror(self, node: str, payload: dict[str, Any], now: float) -> list[Action]:
        """Add (or update) a connection held by `node`, so calls can be routed to it."""
        conn, user = payload.get("conn"), payload.get("user")
        if not (isinstance(conn, str) and isinstance(user, str) and ID_PATTERN.fullmatch(user)):
            return []
        session = self._sessions.get(conn)
        if session is None:
            bucket = _Bucket(0.0, 0.0, 0.0, now)  # never used: its node rate-limits it
            session = self._sessions[conn] = _Session(conn, now, bucket, node=node)
            self._remote_count += 1
            self._by_user.setdefault(user, set()).add(conn)
        elif session.node != node or session.user != user:
            return []  # a conn id is one node's, for one user: ignore contradictions
        session.user, session.role = user, "bot" if payload.get("role") == "bot" else "user"
        max_calls = payload.get("max_calls")
        session.max_calls = max_calls if isinstance(max_calls, int) else None
        session.generation, session.load = (
            _count(payload.get("generation")),
            _count(payload.get("calls")),
        )
        self._adopt_presence(user, payload.get("presence"))
        if session.role == "bot":
            self._bots.add(user)
        self._touched.add(user)
        return []

    def _delivered(self, payload: dict[str, Any]) -> list[Action]:
        """A message from the node owning a call, for one of our connections: pass it on and
        remember that node, to send it what this connection says in that call."""
        session = self._sessions.get(str(payload.get("conn")))
        message, owner = payload.get("msg"), payload.get("owner")
        if session is None or session.node is not None or not isinstance(message, dict):
            return []
        call_id = message.get("call_id")
        if isinstance(call_id, str) and isinstance(owner, str):
            if message.get("type") == "call_offer":
                self._owners.setdefault(call_id, (owner, set()))[1].add(session.conn)
                session.calls.add(call_id)
            elif message.get("type") in ("hangup", "call_reject"):
                session.calls.discard(call_id)
                self._disown(call_id, session.conn)
        return [Send(session.conn, message)]

    def _to_owner(self, session: _Session, owner: str, message: dict[str, Any]) -> list[Action]:
        """A message of ours in a call another node owns: that node routes it."""
        if message["type"] in ("hangup", "call_reject"):
            session.calls.discard(message["call_id"])
            self._disown(message["call_id"], session.conn)
        return [Publish(owner, {"t": "received", "conn": session.conn, "msg": message})]

    def _received_remotely(self, node: str, payload: dict[str, Any], now: float) -> list[Action]:
        """What a connection of node `node` said in a call this node owns (its node checked
        rate and token; the message is validated again all the same)."""
        session = self._sessions.get(str(payload.get("conn")))
        message = payload.get("msg")
        if session is None or session.node != node or not isinstance(message, dict):
            return []
        if message.get("type") not in IN_CALL | CALLEE_ONLY | {"hangup"}:
            return []  # nothing else is ever forwarded to the owner of a call
        try:
            return self._dispatch(session, validate(message), now)
        except ProtocolError as exc:
            self._count_error(exc.code)
            return [Send(session.conn, error(exc.code, exc.message, exc.call_id, fatal=False))]

    @staticmethod
    def _load(session: _Session) -> int:
        """Calls a pool member has: those this node knows of, or more if its node said so."""
        return max(len(session.calls), session.load)

    def _load_changes(self) -> list[Action]:
        """Tell the other nodes how many calls each of our pool members now has, so that
        every node dispatches to the least loaded member wherever it is connected."""
        actions: list[Action] = []
        for conn in self._pool_members:
            session = self._sessions[conn]
            if session.load != len(session.calls):
                session.load = len(session.calls)
                actions.append(Publish(ALL_NODES, self._announcement(session)))
        return actions

    def _disown(self, call_id: str, conn: str) -> None:
        """Connection `conn` left another node's call; forget that call's owner once no
        connection of ours is in it."""
        entry = self._owners.get(call_id)
        if entry is not None:
            entry[1].discard(conn)
            if not entry[1]:
                del self._owners[call_id]

    def _route(self, actions: list[Action]) -> list[Action]:
        """Turn what goes to another node's connection into a `Publish` to that node; a lone
        relay drops every `Publish`."""
        ownership, self._ownership = self._ownership, []
        if self.node is None:
            return [a for a in actions if not isinstance(a, Publish)]
        out: list[Action] = [*ownership, *self._load_changes()]
        for action in actions:
            session = None if isinstance(action, Publish | Own) else self._sessions.get(action.conn)
            if session is None or session.node is None:
                out.append(action)
            elif isinstance(action, Send):
                payload = {"t": "deliver", "conn": action.conn, "owner": self.node,
                           "msg": action.message}  # fmt: skip
                out.append(Publish(session.node, payload))
        return out

    # -- handlers ------------------------------------------------------------------------------

    def _hello(self, session: _Session, message: dict[str, Any], now: float) -> list[Action]:
        identity = self._authenticate(message["token"], now)
        user = identity.user
        if not ID_PATTERN.fullmatch(user):
            raise ProtocolError(AUTH_FAILED, f"token subject {user!r} is not a valid user id")
        if message.get("role") == "bot" and identity.role != "bot":
            raise ProtocolError(
                FORBIDDEN,
                f"a bot pool needs a token minted for the bot role (callbot token create {user}"
                " --role bot); this one is a user's",
                fatal=True,
            )
        if self.sessions_of(user) >= self.limits.connections_per_user:
            raise ProtocolError(
                SESSION_LIMIT,
                f"{user} already has the maximum of {self.limits.connections_per_user} connections",
            )
        session.user = user
        session.role = message.get("role", "user")
        session.max_calls = message.get("max_calls")
        session.expires_at = identity.expires_at
        session.generation = identity.generation
        if session.role == "bot":
            self._bots.add(user)
            self._pool_members.add(session.conn)
        self._by_user.setdefault(user, set()).add(session.conn)
        self._touched.add(user)
        actions: list[Action] = [
            Publish(ALL_NODES, self._announcement(session)),
            Send(session.conn, {
                "type": "welcome", "user": user, "role": session.role,
                "session_id": uuid.uuid4().hex, "expires_at": identity.expires_at,
                "ice_servers": self._ice_servers_for(user), "janus": self.janus_url,
            })
        ]  # fmt: skip
        for claim in message.get("calls", []):
            actions += self._claim(session, claim["call_id"], claim["peer"], now)
        return actions

    def _claim(self, session: _Session, call_id: str, peer: str, now: float) -> list[Action]:
        """A reconnecting client says it is still in a call: route it there again."""
        assert session.user is not None
        if call_id in self._recently_ended:  # it ended while this client was away
            return [
                Send(
                    session.conn,
                    {"type": "hangup", "call_id": call_id, "reason": "ended", "from": peer},
                )
            ]
        call = self._calls.get(call_id)
        if call is None:  # the relay restarted: rebuild the call from the claims
            me, other = _Party(session.user, None), _Party(peer, None, absent_since=now)
            me.generation = session.generation
            call = _Call(call_id, me, other, set(), True, now, restored=True)
            self._calls[call_id] = call
            self._ownership.append(Own(call_id, True))
            self._touched.add(session.user)
        if not call.answered and call.callee.user == session.user:
            call.ringing.add(session.conn)  # a callee device back while the call still rings
            session.calls.add(call_id)
            return []
        for party in call.parties():
            if party.user == session.user:
                # The newest connection of that user takes the call over, even if the relay
                # has not noticed yet that the old one is gone (a half-open TCP connection).
                if party.conn is not None and party.conn != session.conn:
                    self._release(party.conn, call_id)
                party.conn, party.absent_since = session.conn, None
                party.generation = session.generation
                session.calls.add(call_id)
                pending, party.pending = list(party.pending), deque()
                if call.ended and not any(p.pending for p in call.parties()):
                    self._forget(call)
                return [Send(session.conn, m) for m in pending]
        return []

    def _dispatch(self, session: _Session, message: dict[str, Any], now: float) -> list[Action]:
        kind = message["type"]
        if kind == "hello":
            raise ProtocolError(INVALID_MESSAGE, "already authenticated")
        if kind == "refresh":
            return self._refresh(session, message, now)
        if kind.startswith("presence_"):
            return self._presence_message(session, message)
        if kind == "group_invite":
            return self._group_invite(session, message)
        if kind == "call_offer":
            return self._offer(session, message, now)
        owned = self._owners.get(message["call_id"])
        if owned is not None and session.conn in owned[1]:
            return self._to_owner(session, owned[0], message)
        call = self._calls.get(message["call_id"])
        if call is None or call.ended:
            return self._unknown_call(session, message, now)
        sides = call.party_of(session.conn)
        if sides is None:
            raise ProtocolError(CALL_NOT_FOUND, "not a party of this call", message["call_id"])
        me, other = sides
        outgoing = self._forwarded(message, me.user)
        if kind in CALLEE_ONLY and me is not call.callee and not call.restored:
            raise ProtocolError(INVALID_MESSAGE, f"only the called side sends {kind}", call.call_id)
        if kind == "call_answer" and not call.restored:
            return self._answer(call, session, outgoing)
        if kind == "call_reject" and not call.restored:
            return self._reject(call, session, outgoing)
        if kind == "hangup":
            return self._end_call(call, "cancelled", message=outgoing, sender=session.conn)
        if kind == "transfer" and message.get("replaces") is not None:
            outgoing["grant"] = self._grant(session, other, message, now)
        self._check_room_for(call, other)
        return self._to_party(call, other, outgoing)

    def _check_room_for(self, call: _Call, party: _Party) -> None:
        """A party that is away (reconnecting) gets what was sent meanwhile when it is back, up
        to `pending_per_party` messages: past that, the sender is told its message was dropped."""
        away = party.conn is None and not (party is call.callee and not call.answered)
        if away and len(party.pending) >= self.limits.pending_per_party:
            raise ProtocolError(
                RATE_LIMITED,
                f"{party.user} is reconnecting and {len(party.pending)} messages already wait "
                "for it; this one was dropped",
                call.call_id,
            )

    def _presence_message(self, session: _Session, message: dict[str, Any]) -> list[Action]:
        assert session.user is not None
        kind = message["type"]
        if kind == "presence_set":
            self._presence.choose(session.user, message["status"], message.get("text"))
            if "visible_to" in message:
                self._presence.share(session.user, message["visible_to"])
            self._touched.add(session.user)
            local = [self._sessions[c] for c in self._by_user[session.user]]
            return [Publish(ALL_NODES, self._announcement(s)) for s in local if s.node is None]
        if kind == "presence_unsubscribe":
            self._presence.unsubscribe(session.conn, message["users"])
            return []
        states = self._presence.subscribe(session.conn, message["users"])
        return [Send(session.conn, m) for m in presence_lists(states)]

    def _group_invite(self, session: _Session, message: dict[str, Any]) -> list[Action]:
        """To every connection of the invited user but the sender's own; no state is kept."""
        assert session.user is not None
        target = message["to"]
        conns = [c for c in self._by_user.get(target, ()) if c != session.conn]
        if not conns:
            raise ProtocolError(USER_OFFLINE, f"{target} is not connected")
        outgoing = self._forwarded(message, session.user)
        return [Send(conn, outgoing) for conn in sorted(conns)]

    def _calls_of(self, user: str) -> int:
        return len({c for conn in self._by_user.get(user, ()) for c in self._sessions[conn].calls})

    def _on_call(self, user: str) -> bool:
        return self._on_call_here(user) or bool(self._busy_elsewhere.get(user))

    def _on_call_here(self, user: str) -> bool:
        """Whether `user` is in an answered call this node knows of (owns)."""
        for conn in self._by_user.get(user, ()):
            for call_id in self._sessions[conn].calls:
                call = self._calls.get(call_id)
                if call is not None and call.answered and not call.ended:
                    return True
        return False

    def _presence_updates(self) -> list[Action]:
        touched, self._touched = self._touched, set()
        actions: list[Action] = self._busy_changes(touched) if self.node is not None else []
        return actions + [Send(c, message) for c, message in self._presence.updates(touched)]

    def _busy_changes(self, users: set[str]) -> list[Action]:
        """Tell the other nodes who started or stopped being on a call this node owns (their
        watchers see `on_call` too)."""
        actions: list[Action] = []
        for user in users:
            busy = self._on_call_here(user)
            if busy != (user in self._busy_here):
                (self._busy_here.add if busy else self._busy_here.discard)(user)
                payload = {"t": "calls", "user": user, "on_call": busy}
                actions.append(Publish(ALL_NODES, payload))
        return actions

    def _refresh(self, session: _Session, message: dict[str, Any], now: float) -> list[Action]:
        identity = self._authenticate(message["token"], now)
        if identity.user != session.user:
            raise ProtocolError(AUTH_FAILED, "refresh token is for another user")
        session.expires_at, session.generation = identity.expires_at, identity.generation
        return [
            Publish(ALL_NODES, self._announcement(session)),
            Send(session.conn, {"type": "refreshed", "expires_at": identity.expires_at}),
        ]

    def _offer(self, session: _Session, message: dict[str, Any], now: float) -> list[Action]:
        assert session.user is not None
        call_id, target = message["call_id"], message["to"]
        if call_id in self._calls or call_id in self._recently_ended:
            raise ProtocolError(CALL_FAILED, "call_id already used; pick a fresh one", call_id)
        if self._calls_of(session.user) >= self.limits.calls_per_user:
            raise ProtocolError(
                SESSION_LIMIT, f"{session.user} already has {self.limits.calls_per_user} calls",
                call_id, fatal=False,
            )  # fmt: skip
        candidates = [self._sessions[c] for c in self._by_user.get(target, ()) if c != session.conn]
        if not candidates:
            where = " (other than this connection)" if target == session.user else ""
            raise ProtocolError(USER_OFFLINE, f"{target} is not connected{where}", call_id)
        outgoing = self._forwarded(message, session.user)
        bots = [s for s in candidates if s.role == "bot"]
        if "grant" in message:
            ringing = [self._redeem(session, message, outgoing, now)]
        elif bots:
            free = [s for s in bots if s.max_calls is None or self._load(s) < s.max_calls]
            if not free:
                busy = {"type": "call_reject", "call_id": call_id, "reason": "busy",
                        "from": target}  # fmt: skip
                return [Send(session.conn, busy)]
            # least loaded first; among equals, the one that waited longest (round robin)
            chosen = min(
                free,
                key=lambda s: (
                    self._load(s) / (s.max_calls or 1_000_000),
                    self._load(s),
                    s.last_assigned,
                ),
            )
            self._dispatched += 1
            chosen.last_assigned = self._dispatched
            ringing = [chosen]
        else:
            ringing = candidates
        call = _Call(
            call_id, _Party(session.user, session.conn, generation=session.generation),
            _Party(target, None),
            {s.conn for s in ringing}, False, now + self.limits.ring_timeout,
        )  # fmt: skip
        self._calls[call_id] = call
        self._ownership.append(Own(call_id, True))
        session.calls.add(call_id)
        for target_session in ringing:
            target_session.calls.add(call_id)
        return [Send(s.conn, outgoing) for s in ringing]

    def _grant(
        self, session: _Session, transferee: _Party, message: dict[str, Any], now: float
    ) -> str:
        """An attended transfer: the sender hands `transferee` its answered call `replaces`
        with `target`. Mint the single-use grant that lets the transferee alone place the
        replacing call (DESIGN §10); the relay forwards it in the `transfer`."""
        consultation = self._calls.get(message["replaces"])
        sides = consultation.party_of(session.conn) if consultation is not None else None
        if (
            consultation is None
            or sides is None
            or consultation.ended
            or not consultation.answered
            or sides[1].user != message["target"]
        ):
            raise ProtocolError(
                CALL_NOT_FOUND,
                "transfer: replaces must be your answered call with target",
                message["call_id"],
            )
        grant = secrets.token_urlsafe(24)
        self._grants[grant] = _Grant(
            consultation.call_id, sides[0].user, transferee.user, message["target"],
            now + GRANT_TTL,
        )  # fmt: skip
        return grant

    def _redeem(
        self, session: _Session, message: dict[str, Any], outgoing: dict[str, Any], now: float
    ) -> _Session:
        """Use up the grant a replacing call carries: stamp the offer with the call it
        replaces (peers trust only this) and return the target's connection in that call."""
        call_id, token = message["call_id"], outgoing.pop("grant")
        grant = self._grants.get(token)
        if (
            grant is None
            or grant.expires_at <= now
            or grant.transferee != session.user
            or grant.target != message["to"]
        ):
            raise ProtocolError(
                FORBIDDEN, "transfer grant unknown, used, expired or not for this call", call_id
            )
        del self._grants[token]
        replaced = self._calls.get(grant.replaces)
        held = None
        if replaced is not None and not replaced.ended:
            held = next((p for p in replaced.parties() if p.user == grant.target), None)
        if held is None or held.conn is None:
            raise ProtocolError(CALL_FAILED, "the call this transfer replaces is over", call_id)
        outgoing.update(replaces=grant.replaces, transferred_by=grant.transferor)
        return self._sessions[held.conn]

    def _answer(self, call: _Call, session: _Session, outgoing: dict[str, Any]) -> list[Action]:
        if call.answered or session.conn not in call.ringing:
            raise ProtocolError(INVALID_MESSAGE, "call is not ringing here", call.call_id)
        call.answered = True
        call.callee.conn, call.callee.generation = session.conn, session.generation
        self._touched.update((call.caller.user, call.callee.user))
        others = call.ringing - {session.conn}
        call.ringing = set()
        actions = self._deliver(call.caller, outgoing)
        for conn in others:
            self._release(conn, call.call_id)
            actions.append(
                Send(
                    conn,
                    {
                        "type": "hangup",
                        "call_id": call.call_id,
                        "reason": "answered_elsewhere",
                        "from": call.caller.user,
                    },
                )
            )
        return actions  # fmt: skip

    def _reject(self, call: _Call, session: _Session, outgoing: dict[str, Any]) -> list[Action]:
        if call.answered:
            raise ProtocolError(INVALID_MESSAGE, "call was already answered", call.call_id)
        if outgoing["reason"] == "busy" and len(call.ringing) > 1:
            call.ringing.discard(session.conn)
            self._release(session.conn, call.call_id)
            return []  # another of the user's devices may still answer
        return self._end_call(call, "declined_elsewhere", message=outgoing, sender=session.conn)

    def _unknown_call(self, session: _Session, message: dict[str, Any], now: float) -> list[Action]:
        """A message for a call the relay does not know: after a relay restart, rebuild it
        from the `to` the client names, and hold the message until that party reconnects."""
        call_id, peer = message["call_id"], message.get("to")
        if peer is None or message["type"] not in IN_CALL | {"hangup"}:
            raise ProtocolError(CALL_NOT_FOUND, "no such call", call_id)
        if call_id in self._calls or call_id in self._recently_ended:
            raise ProtocolError(CALL_NOT_FOUND, "call has ended", call_id)
        self._claim(session, call_id, peer, now)
        return self._dispatch(session, message, now)

    # -- helpers -------------------------------------------------------------------------------

    @staticmethod
    def _forwarded(message: dict[str, Any], sender: str) -> dict[str, Any]:
        """The copy the other side gets; refused if it would not fit MAX_MESSAGE_BYTES (it
        gains `from` and `v`, and non-ASCII text is re-escaped as \\uXXXX: up to 3x longer)."""
        out = {k: v for k, v in message.items() if k != "to"}
        out["from"] = sender
        size = len(encode(out))  # ASCII only (json escapes the rest): characters are bytes
        if size > MAX_MESSAGE_BYTES:
            raise ProtocolError(
                INVALID_MESSAGE,
                f"{out['type']}: forwarded it would be {size} bytes, over {MAX_MESSAGE_BYTES}",
                message.get("call_id"),
            )
        return out

    def _to_party(self, call: _Call, party: _Party, message: dict[str, Any]) -> list[Action]:
        """To the callee while it rings: every ringing device (each holds the offer)."""
        if party is call.callee and not call.answered:
            return [Send(conn, message) for conn in call.ringing]
        return self._deliver(party, message)

    def _deliver(self, party: _Party, message: dict[str, Any]) -> list[Action]:
        if party.conn is not None:
            return [Send(party.conn, message)]
        if len(party.pending) < self.limits.pending_per_party:
            party.pending.append(message)
        return []

    def _release(self, conn: str, call_id: str) -> None:
        session = self._sessions.get(conn)
        if session is not None:
            session.calls.discard(call_id)

    def _end_call(
        self,
        call: _Call,
        reason: str,
        *,
        message: dict[str, Any] | None = None,
        sender: str | None = None,
    ) -> list[Action]:
        """End a call and tell everyone else in it.

        `message` (forwarded from connection `sender`) goes to the other party; without one the
        relay itself sends `hangup` with `reason`. Devices of the sender's side that were
        still ringing get a relay `hangup` with `reason` too.
        """
        actions: list[Action] = []
        self._touched.update(p.user for p in call.parties())
        sides = call.party_of(sender) if sender is not None else None
        for party in call.parties():
            other = call.callee if party is call.caller else call.caller
            relay_hangup = {"type": "hangup", "call_id": call.call_id, "reason": reason,
                            "from": other.user}  # fmt: skip
            ringing = party is call.callee and not call.answered
            if sides is not None and party is sides[0]:
                if ringing:
                    actions += [Send(c, relay_hangup) for c in call.ringing - {sender}]
                continue
            outgoing = message if message is not None else relay_hangup
            if ringing:
                actions += [Send(c, outgoing) for c in call.ringing]
            else:
                actions += self._deliver(party, outgoing)
        for conn in call.ringing | {p.conn for p in call.parties() if p.conn is not None}:
            self._release(conn, call.call_id)
        call.ended, call.answered, call.ringing = True, True, set()
        if not any(p.absent_since is not None and p.pending for p in call.parties()):
            self._forget(call)
        return actions

    def _forget(self, call: _Call) -> None:
        if self._calls.pop(call.call_id, None) is not None:
            self._ownership.append(Own(call.call_id, False))
        self._recently_ended[call.call_id] = None
        while len(self._recently_ended) > self.limits.remembered_ended:
            self._recently_ended.popitem(last=False)
        for party in call.parties():
            if party.conn is not None:
                self._release(party.conn, call.call_id)

    def _fatal(self, session: _Session, code: str, text: str) -> list[Action]:
        session.closing = True
        return [Send(session.conn, error(code, text, fatal=True)),
                Close(session.conn, CLOSE_CODES.get(code, 4000), code)]  # fmt: skip

    def _rate_limited(self, session: _Session, now: float) -> list[Action]:
        self._count_error(RATE_LIMITED)
        if now - session.last_rate_error < 1.0:
            return []  # one error per second is enough to tell a flooding client
        session.last_rate_error = now
        return [Send(session.conn, error(RATE_LIMITED, "too many messages; this one was dropped"))]

    def _count_error(self, code: str) -> None:
        key = f"error:{code}"
        self.counters[key] = self.counters.get(key, 0) + 1
