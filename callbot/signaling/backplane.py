"""What relay nodes share: the in-memory backplane of a lone relay, and Redis for a cluster.

`RelayCore` (relay_core.py) decides; it names other nodes' connections and emits `Publish`
actions. A backplane carries those payloads between nodes, tells the relay when a node is gone,
and spreads revocations. docs/howto/cluster.md describes the keys and channels (DESIGN §8).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import uuid
from collections import deque
from typing import Any, Protocol

from ..errors import CallbotError
from ..safe import get_logger
from .relay_core import ALL_NODES, Own

logger = get_logger(__name__)

PREFIX = "callbot:"
#: Seconds a node's liveness key lives without a refresh, and between refreshes.
LIVENESS_TTL = 5.0
HEARTBEAT = 1.0
#: Seconds to reach Redis at start before giving up with `BackplaneError`.
CONNECT_TIMEOUT = 3.0
#: Messages a node keeps for Redis while it is unreachable (sent when it is back), and for
#: one other node while nobody listens on its channel (until it is back or known gone).
MAX_BACKLOG = 10_000
#: Seconds between two tries to send what is kept for an unreachable Redis.
RETRY = 0.25
ALL_CHANNEL = PREFIX + "all"
REVOKED_CHANNEL = PREFIX + "revoked"
REVOCATIONS = PREFIX + "revocations"  # hash: user -> token generation
BYE = {"t": "bye"}  # on `callbot:all` from a node that stops: forget it at once

#: Raise a user's generation in the revocations hash if `ARGV[2]` is higher, and announce it;
#: one script so two nodes revoking at once cannot lower it. Returns the generation kept.
_RAISE = """
local current = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
local wanted = tonumber(ARGV[2])
if wanted > current then
  redis.call('HSET', KEYS[1], ARGV[1], wanted)
  redis.call('PUBLISH', KEYS[2], cjson.encode({user = ARGV[1], generation = wanted}))
  return wanted
end
return current
"""
#: Drop a call's owner key only if this node still holds it (compare-and-delete).
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class BackplaneError(CallbotError):
    """The backplane (Redis) cannot be reached or used; the message names it."""


class Listener(Protocol):
    """What a relay does with what the backplane brings (called on the event loop)."""

    def from_node(self, node: str, payload: dict[str, Any]) -> None: ...

    def node_gone(self, node: str) -> None: ...

    def reconnected(self) -> None: ...

    def revoked(self, user: str, generation: int) -> None: ...

    def undelivered(self, node: str, payloads: list[dict[str, Any]]) -> None: ...


class MemoryBackplane:
    """A lone relay: its core holds all routing, presence and calls; nothing to share."""

    node: str | None = None

    async def start(self, listener: Listener) -> None:
        """Nothing to connect to."""

    def publish(self, node: str, payload: dict[str, Any]) -> bool:
        """Never called: a core without a node name emits no `Publish`."""
        return True

    def share_revocations(self, generations: dict[str, int]) -> None:
        """Revocations live in the state dir alone."""

    def own(self, ownership: Own) -> None:
        """Never called: a core without a node name emits no `Own`."""

    async def stop(self) -> None:
        """Nothing to close."""


def redacted(url: str) -> str:
    """`url` without its password, for messages and logs."""
    return re.sub(r"(//[^:/@]*:)[^@/]*@", r"\1***@", url)


async def connect(url: str) -> Any:
    """A `redis.asyncio` client for `url` that answered PING, or `BackplaneError` within
    about CONNECT_TIMEOUT seconds (never a hang)."""
    import redis.asyncio as aioredis
    from redis.exceptions import RedisError

    try:
        client = aioredis.from_url(url, socket_connect_timeout=CONNECT_TIMEOUT)
    except ValueError as exc:
        raise BackplaneError(f"bad Redis URL {redacted(url)!r}: {exc}") from None
    try:
        await asyncio.wait_for(client.ping(), CONNECT_TIMEOUT + 1)
    except (RedisError, OSError, TimeoutError) as exc:
        await client.aclose()
        reason = str(exc) or type(exc).__name__
        raise BackplaneError(f"cannot reach Redis at {redacted(url)}: {reason}") from None
    return client


async def revoke_in_cluster(url: str, user: str, generation: int) -> int:
    """Raise `user`'s generation in the cluster to at least `generation`, telling every node
    (they cut the user's sessions); returns the cluster's generation for `user`."""
    client = await connect(url)
    try:
        kept = await client.eval(_RAISE, 2, REVOCATIONS, REVOKED_CHANNEL, user, generation)
        return int(kept)
    finally:
        await client.aclose()


async def cluster_generation(url: str, user: str) -> int:
    """`user`'s token generation as the cluster knows it (0: never revoked)."""
    client = await connect(url)
    try:
        return int(await client.hget(REVOCATIONS, user) or 0)
    finally:
        await client.aclose()


class RedisBackplane:
    """Relay nodes sharing routing through Redis: pub/sub for messages, keys with TTL for
    liveness and for which node holds which connections, a hash of revocations.

    Keys: `callbot:node:<node>` (liveness, LIVENESS_TTL), `callbot:conns:<node>` (hash conn ->
    who is connected, same TTL), `callbot:call:<call id>` (its owner node, set only if absent,
    same TTL), `callbot:revocations`. Channels: `callbot:to:<node>`,
    `callbot:all`, `callbot:revoked`. Messages leave in the order published (one writer).
    """

    def __init__(self, url: str, node: str | None = None) -> None:
        self.url = url
        self.node: str | None = node or uuid.uuid4().hex[:12]
        self._client: Any = None
        self._pubsub: Any = None
        self._listener: Listener | None = None
        self._outbox: asyncio.Queue[tuple[str, dict[str, Any]] | Own] = asyncio.Queue()
        self._stuck = 0  # messages taken from the outbox that wait for Redis to come back
        self._owned: set[str] = set()  # call ids whose owner key this node keeps alive
        self._sharing: set[asyncio.Task[None]] = set()
        self._peers: set[str] = set()
        self._missing: dict[str, int] = {}  # peer -> checks in a row its liveness key was absent
        #: Messages for a node nobody listened for when they were published, in order: sent
        #: again at each heartbeat, or handed back to the relay once the node is known gone.
        self._unsent: dict[str, deque[dict[str, Any]]] = {}
        self._tasks: list[asyncio.Task[None]] = []

    def _key(self, kind: str, node: str | None = None) -> str:
        return f"{PREFIX}{kind}:{node or self.node}"

    async def start(self, listener: Listener) -> None:
        """Connect (or `BackplaneError`), subscribe, then learn the other nodes' connections
        and the cluster's revocations."""
        self._listener = listener
        self._client = await connect(self.url)
        self._pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        await self._pubsub.subscribe(self._key("to"), ALL_CHANNEL, REVOKED_CHANNEL)
        await self._beat()
        await self._learn()
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(job()) for job in (self._read, self._write, self._watch)]
        logger.info("relay node %s joined the cluster at %s", self.node, redacted(self.url))

    async def _learn(self) -> None:
        """Read what the cluster holds: revocations, and the connections of the live nodes
        (at start, and after missing pub/sub messages while Redis was away)."""
        assert self._listener is not None
        for user, generation in (await self._client.hgetall(REVOCATIONS)).items():
            self._listener.revoked(user.decode(), int(generation))
        for node in await self._alive():
            self._peers.add(node)
            for raw in (await self._client.hgetall(self._key("conns", node))).values():
                self._listener.from_node(node, json.loads(raw))

    async def stop(self) -> None:
        """Leave: drop this node's keys so the others forget its connections at once."""
        for task in [*self._tasks, *self._sharing]:
            task.cancel()
        if self._client is None:
            return
        with contextlib.suppress(Exception):
            await self._client.publish(ALL_CHANNEL, json.dumps({"from": self.node, "p": BYE}))
            await self._client.delete(self._key("node"), self._key("conns"))
            await self._pubsub.aclose()
        await self._client.aclose()
        self._client = None

    def publish(self, node: str, payload: dict[str, Any]) -> bool:
        """Queue `payload` for node `node` (ALL_NODES: every other node); False if it was
        refused because MAX_BACKLOG messages already wait for an unreachable Redis."""
        if self._outbox.qsize() + self._stuck >= MAX_BACKLOG:
            return False
        self._outbox.put_nowait((node, payload))
        return True

    def own(self, ownership: Own) -> None:
        """Record (or drop) this node as the owner of a call, in order with its messages."""
        self._outbox.put_nowait(ownership)

    def share_revocations(self, generations: dict[str, int]) -> None:
        """Make this node's revocations (its state dir) the cluster's, now."""
        task = asyncio.get_running_loop().create_task(self._share(generations))
        self._sharing.add(task)
        task.add_done_callback(self._sharing.discard)

    async def _share(self, generations: dict[str, int]) -> None:
        try:
            for user, generation in generations.items():
                await self._client.eval(_RAISE, 2, REVOCATIONS, REVOKED_CHANNEL, user, generation)
        except Exception as exc:
            logger.warning("cluster: could not share revocations: %s", exc)

    # -- tasks -------------------------------------------------------------------------------

    async def _write(self) -> None:
        """The one writer: takes everything queued, sends it in order in one round trip.
        While Redis is away the batch is kept and tried again (nothing is dropped)."""
        while True:
            batch = [await self._outbox.get()]
            while not self._outbox.empty():
                batch.append(self._outbox.get_nowait())
            failures = 0
            while not await self._send(batch):
                failures += 1
                if failures == 1:
                    logger.warning("cluster: Redis unreachable; %d messages wait", len(batch))
                self._stuck = len(batch)
                await asyncio.sleep(RETRY)
                while not self._outbox.empty():  # what came meanwhile goes after, in order
                    batch.append(self._outbox.get_nowait())
                    self._stuck += 1
            self._stuck = 0
            if failures:
                logger.info("cluster: Redis is back; %d waiting messages sent", len(batch))

    async def _send(self, batch: list[tuple[str, dict[str, Any]] | Own]) -> bool:
        """One round trip for `batch`; False (nothing sent for sure) if Redis failed."""
        pipe = self._client.pipeline(transaction=False)
        claims: dict[int, str] = {}  # result index of an owner key's SET NX -> call id
        direct: dict[int, tuple[str, dict[str, Any]]] = {}  # index of a PUBLISH to one node
        behind: list[tuple[str, dict[str, Any]]] = []  # for nodes others already wait for
        for item in batch:
            if isinstance(item, Own):
                if item.owned and not item.takeover:
                    claims[len(pipe)] = item.call_id
                self._stage_ownership(pipe, item)
            elif item[0] != ALL_NODES and item[0] in self._unsent:
                behind.append(item)
            else:
                self._stage(pipe, *item)
                if item[0] != ALL_NODES:
                    direct[len(pipe) - 1] = item
        try:
            results = await pipe.execute()
        except Exception:
            return False
        for index, call_id in claims.items():
            if results[index] is None:  # compare-and-set lost: ids must be unique
                logger.warning("cluster: call %s is owned by another node too", call_id)
        for index, (node, payload) in direct.items():
            if results[index] == 0:  # nobody listens there now
                self._keep(node, payload)
        for node, payload in behind:
            self._keep(node, payload)
        return True

    def _keep(self, node: str, payload: dict[str, Any]) -> None:
        kept = self._unsent.setdefault(node, deque())
        if len(kept) >= MAX_BACKLOG:
            logger.warning("cluster: node %s unreachable too long; dropped a message", node)
            kept.popleft()
        kept.append(payload)

    async def _resend(self) -> None:
        """Try again what waits for nodes nobody listened for (resubscribing after a Redis
        restart, or dead and not yet known gone); in order, stopping at the first refusal."""
        for node in list(self._unsent):
            kept = self._unsent[node]
            pipe = self._client.pipeline(transaction=False)
            for payload in kept:
                data = json.dumps({"from": self.node, "p": payload}, separators=(",", ":"))
                pipe.publish(self._key("to", node), data)
            results = await pipe.execute()
            sent = next((i for i, count in enumerate(results) if count == 0), len(results))
            for _ in range(sent):
                kept.popleft()
            if not kept:
                del self._unsent[node]

    def _stage_ownership(self, pipe: Any, ownership: Own) -> None:
        key = self._key("call", ownership.call_id)
        if ownership.owned:
            self._owned.add(ownership.call_id)
            pipe.set(key, self.node, nx=not ownership.takeover, px=int(LIVENESS_TTL * 1000))
        else:
            self._owned.discard(ownership.call_id)
            pipe.eval(_RELEASE, 1, key, self.node)

    def _stage(self, pipe: Any, node: str, payload: dict[str, Any]) -> None:
        data = json.dumps({"from": self.node, "p": payload}, separators=(",", ":"))
        if payload.get("t") == "up":
            pipe.hset(self._key("conns"), payload["conn"], json.dumps(payload))
        elif payload.get("t") == "down":
            pipe.hdel(self._key("conns"), payload["conn"])
        pipe.publish(ALL_CHANNEL if node == ALL_NODES else self._key("to", node), data)

    async def _read(self) -> None:
        assert self._listener is not None
        missed = False
        while True:
            try:
                message = await self._pubsub.get_message(timeout=1.0)
                if missed:  # subscribed again: learn what was announced meanwhile
                    await self._learn()
                    missed = False
            except Exception as exc:
                if not missed:
                    logger.warning("cluster: reading from Redis failed: %s", exc)
                missed = True
                await asyncio.sleep(HEARTBEAT)
                continue
            if message is not None:
                self._dispatch(message["channel"].decode(), message["data"])

    def _dispatch(self, channel: str, data: bytes) -> None:
        """Hand one pub/sub message to the relay; garbage on Redis is logged and dropped."""
        assert self._listener is not None
        try:
            envelope = json.loads(data)
            if channel == REVOKED_CHANNEL:
                self._listener.revoked(str(envelope["user"]), int(envelope["generation"]))
                return
            sender, payload = str(envelope["from"]), envelope["p"]
            if sender == self.node or not isinstance(payload, dict):
                return
            if payload == BYE:
                self._peers.discard(sender)
                self._gone(sender)
                return
            self._peers.add(sender)
            self._listener.from_node(sender, payload)
        except (ValueError, KeyError, TypeError) as exc:
            logger.info("cluster: dropped a malformed message on %s: %r", channel, exc)
        except Exception:
            logger.exception("cluster: handling a message on %s failed", channel)

    async def _watch(self) -> None:
        """Keep this node alive, and notice nodes that died: liveness key absent at two
        checks in a row (one miss may be a Redis that just restarted, empty)."""
        assert self._listener is not None
        healthy = True
        while True:
            await asyncio.sleep(HEARTBEAT)
            try:
                forgotten = await self._beat()
                alive = await self._alive()
                await self._resend()
            except Exception as exc:
                if healthy:
                    logger.warning("cluster: Redis unavailable: %s", exc)
                healthy = False
                continue
            healthy = True
            if forgotten:  # Redis restarted (or this node stalled): tell it all again
                logger.info("cluster: Redis lost this node's keys; announcing its connections")
                self._missing.clear()
                self._listener.reconnected()
                continue
            self._forget_missing(alive)

    def _forget_missing(self, alive: set[str]) -> None:
        assert self._listener is not None
        for node in alive:
            self._missing.pop(node, None)
        for node in self._peers - alive:
            self._missing[node] = self._missing.get(node, 0) + 1
            if self._missing[node] >= 2:
                logger.info("cluster: node %r is gone; forgetting its connections", node)
                self._peers.discard(node)
                del self._missing[node]
                self._gone(node)

    def _gone(self, node: str) -> None:
        """Node `node` is gone: the relay forgets it, then gets back what it never received."""
        assert self._listener is not None
        self._listener.node_gone(node)
        kept = self._unsent.pop(node, None)
        if kept:
            self._listener.undelivered(node, list(kept))

    async def _beat(self) -> bool:
        """Refresh this node's keys; whether its liveness key was gone (Redis forgot us)."""
        ttl = int(LIVENESS_TTL * 1000)
        pipe = self._client.pipeline(transaction=False)
        pipe.set(self._key("node"), "1", px=ttl, get=True)
        pipe.pexpire(self._key("conns"), ttl)
        for call_id in self._owned:  # (set again if Redis restarted without it)
            pipe.set(self._key("call", call_id), self.node, nx=True, px=ttl)
            pipe.pexpire(self._key("call", call_id), ttl)
        return (await pipe.execute())[0] is None

    async def _alive(self) -> set[str]:
        """The other nodes whose liveness key is there."""
        prefix = PREFIX + "node:"
        keys = [k.decode() async for k in self._client.scan_iter(match=prefix + "*", count=1000)]
        return {k.removeprefix(prefix) for k in keys} - {self.node}
