"""The relay server: WebSocket signalling at /ws plus a few HTTP endpoints on the same port.

All decisions are `RelayCore`'s (relay_core.py); this module only moves bytes, keeps one ordered
outbox per connection, runs the clock (`tick`) and watches the state directory for revocations.
Media never passes through here.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import json
import logging
import re
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from ..identity import AuthError
from ..safe import get_logger
from .backplane import MemoryBackplane, RedisBackplane
from .messages import (
    INTERNAL_ERROR,
    INVALID_MESSAGE,
    RATE_LIMITED,
    TRANSPORT_MAX_SIZE,
    ErrorMessage,
    ProtocolError,
    RelayMessage,
    encode,
    error,
)
from .metrics import MetricsSource, metrics_text
from .relay_core import Action, Close, Identity, Own, Publish, RelayCore, RelayLimits, Send
from .state import RelayState
from .turn import TurnRestAuth, credentials_expiry

logger = get_logger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
WS_PATH = "/ws"
TICK = 0.25  # seconds between timer checks (ring timeouts, expiry, hello deadline)
REVOCATION_POLL = 0.5  # seconds between checks of the state dir for revocations
#: What the relay holds for one connection: frames received but not handled yet (MAX_QUEUE,
#: each at most TRANSPORT_MAX_SIZE), the socket's write buffer (WRITE_LIMIT, plus the frame
#: being written) and the outbox behind it (MAX_OUTBOX messages or MAX_OUTBOX_BYTES). A client
#: whose outbox overflows is not reading: its connection is aborted at once.
MAX_QUEUE = 4
WRITE_LIMIT = 64 * 1024
MAX_OUTBOX = 1000
MAX_OUTBOX_BYTES = 1024 * 1024
#: Seconds a closing connection may take to say goodbye before it is aborted.
CLOSE_TIMEOUT = 2.0

#: The softphone page and its files, served at `/` (flat directory: no subpaths).
WEB_DIR = Path(__file__).resolve().parent.parent / "web"
_WEB_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}
_WEB_NAME = re.compile(r"[a-z0-9_-]+\.[a-z]+")
_WEB_HEADERS = (
    (
        "Content-Security-Policy",
        "default-src 'self'; connect-src 'self'; media-src 'self' blob: mediastream:; "
        "img-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'",
    ),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
)


def _http_response(
    status: http.HTTPStatus,
    body: bytes,
    content_type: str,
    extra_headers: Iterable[tuple[str, str]] = (),
) -> Response:
    headers = Headers(
        [
            ("Content-Type", content_type),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),
            ("Connection", "close"),
            *extra_headers,
        ]
    )
    return Response(status.value, status.phrase, headers, body)


def _json_response(status: http.HTTPStatus, payload: Any) -> Response:
    return _http_response(status, json.dumps(payload).encode(), "application/json")


def _web_response(path: str) -> Response | None:
    """A file of the softphone (`/` is index.html), or None if there is no such file.

    Only plain lower-case names of the known types in WEB_DIR are served: no subpaths, no
    dot-dot, no percent-escapes, so nothing outside WEB_DIR can be named.
    """
    name = path.removeprefix("/") or "index.html"
    content_type = _WEB_TYPES.get(Path(name).suffix)
    if content_type is None or not _WEB_NAME.fullmatch(name):
        return None
    try:
        body = (WEB_DIR / name).read_bytes()
    except OSError:  # missing, or a directory
        return None
    return _http_response(http.HTTPStatus.OK, body, content_type, _WEB_HEADERS)


class _Outbox:
    """Ordered sending to one connection, so the relay never awaits a slow client.

    What waits here is bounded (MAX_OUTBOX messages, MAX_OUTBOX_BYTES): a client that lets
    more pile up is not reading, and its TCP connection is aborted there and then (a close
    frame would only queue behind what it does not read). A decided close gets CLOSE_TIMEOUT
    to go through before the same abort.
    """

    def __init__(self, conn: str, websocket: ServerConnection) -> None:
        self.conn = conn
        self.websocket = websocket
        self.queue: asyncio.Queue[str | Close] = asyncio.Queue()
        self.queued_bytes = 0
        self.closing = False
        self._deadline: asyncio.TimerHandle | None = None
        self.task = asyncio.get_running_loop().create_task(self._run())

    def put(self, action: Send | Close) -> None:
        if self.closing:
            return
        if isinstance(action, Close):
            self._close(action)
            return
        data = encode(action.message)  # ASCII: its length is its size in bytes
        if self.queue.qsize() >= MAX_OUTBOX or self.queued_bytes + len(data) > MAX_OUTBOX_BYTES:
            logger.warning(
                "connection %s is not reading (%d messages, %d bytes waiting); aborting it",
                self.conn, self.queue.qsize(), self.queued_bytes,
            )  # fmt: skip
            self.abort()
            return
        self.queued_bytes += len(data)
        self.queue.put_nowait(data)

    def abort(self) -> None:
        """Drop the TCP connection now; the handler then sees it closed and cleans up."""
        self.closing = True
        self.websocket.transport.abort()

    def stop(self) -> None:
        self.task.cancel()
        if self._deadline is not None:
            self._deadline.cancel()

    def _close(self, close: Close) -> None:
        self.closing = True
        transport = self.websocket.transport
        if transport.get_write_buffer_size() >= transport.get_write_buffer_limits()[1]:
            self.abort()  # writing is paused: the close frame cannot be queued
            return
        self._deadline = asyncio.get_running_loop().call_later(CLOSE_TIMEOUT, self.abort)
        self.queue.put_nowait(close)

    async def _run(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            while True:
                item = await self.queue.get()
                if isinstance(item, Close):
                    await self.websocket.close(item.code, item.reason)
                    return
                self.queued_bytes -= len(item)
                await self.websocket.send(item)


def _level(error_message: ErrorMessage) -> int:
    """How an error sent to a client is logged: a relay bug at ERROR, bad input and fatal
    errors at INFO, the ordinary rest (an offline callee...) at DEBUG."""
    code = error_message["code"]
    if code == INTERNAL_ERROR:
        return logging.ERROR
    if code in (INVALID_MESSAGE, RATE_LIMITED) or error_message["fatal"]:
        return logging.INFO
    return logging.DEBUG


class _Refusals:
    """Logs the frames refused on one connection without flooding the log: the first of each
    error code at once, the counts when the connection ends."""

    def __init__(self, conn: str) -> None:
        self.conn = conn
        self.counts: dict[str, int] = {}

    def note(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Send) and action.conn == self.conn:
                self._count(action.message)

    def _count(self, message: RelayMessage) -> None:
        if message["type"] != "error":
            return
        code = message["code"]
        self.counts[code] = self.counts.get(code, 0) + 1
        if self.counts[code] == 1:
            logger.log(_level(message), "connection %s: %s: %r (repeats are counted)",
                       self.conn, code, message["message"])  # fmt: skip

    def summary(self) -> None:
        if sum(self.counts.values()) > len(self.counts):  # some were counted, not logged
            counts = ", ".join(f"{code} x{n}" for code, n in sorted(self.counts.items()))
            logger.info("connection %s closed; errors sent to it: %s", self.conn, counts)


class Relay:
    """A signalling relay. `async with Relay(...) as relay:` or `await relay.start()`."""

    def __init__(
        self,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        state_dir: str | Path | None = None,
        *,
        limits: RelayLimits | None = None,
        ice_servers: Iterable[dict[str, Any]] = (),
        turn: TurnRestAuth | None = None,
        janus_url: str | None = None,
        backplane: MemoryBackplane | RedisBackplane | None = None,
        metrics: Iterable[MetricsSource] = (),
    ) -> None:
        self.host = host
        #: What this relay shares with the other nodes of its cluster (none by default).
        self.backplane = backplane or MemoryBackplane()
        self.port = port
        self.state = RelayState(state_dir)
        self._ice_servers = list(ice_servers)
        #: TURN servers whose per-user credentials this relay mints (welcome and ice-config).
        self.turn = turn
        #: More /metrics from this process (the embedded relay adds the bots' media clock).
        self.metrics_sources = list(metrics)
        self.core = RelayCore(
            self._authenticate, self._ice_servers_for, limits, janus_url, self.backplane.node
        )
        self._outboxes: dict[str, _Outbox] = {}
        self.loop_lag = 0.0  # seconds the event loop was late at the last timer tick
        self._server: Server | None = None
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def url(self) -> str:
        """The WebSocket URL clients connect to."""
        return f"ws://{self._display_host}:{self.port}{WS_PATH}"

    @property
    def http_url(self) -> str:
        return f"http://{self._display_host}:{self.port}"

    @property
    def _display_host(self) -> str:
        return f"[{self.host}]" if ":" in self.host else self.host

    async def start(self) -> Relay:
        await self.backplane.start(self)
        self.backplane.share_revocations(self.state.generations())
        self._server = await serve(
            self._handle,
            self.host,
            self.port,
            process_request=self._http,
            max_size=TRANSPORT_MAX_SIZE,
            max_queue=MAX_QUEUE,
            write_limit=WRITE_LIMIT,
            compression=None,
            server_header="callbot-relay",
        )
        if self.port == 0:
            self.port = self._server.sockets[0].getsockname()[1]
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._clock()), loop.create_task(self._watch_state())]
        logger.info("relay listening on %s", self.url)
        return self

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        await self.backplane.stop()
        self.state.close()

    async def serve_forever(self) -> None:
        if self._server is None:
            await self.start()
        assert self._server is not None
        await self._server.serve_forever()

    async def __aenter__(self) -> Relay:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def mint(self, user: str, ttl: float = 3600, role: str = "user") -> str:
        """A token for `user` signed with this relay's secret (`role="bot"` for a pool)."""
        return self.state.mint(user, ttl, role)

    # -- WebSocket -----------------------------------------------------------------------------

    async def _handle(self, websocket: ServerConnection) -> None:
        conn = uuid.uuid4().hex
        self._outboxes[conn] = _Outbox(conn, websocket)
        refusals = _Refusals(conn)
        self._apply(self.core.opened(conn, time.time()))
        try:
            async for data in websocket:
                actions = self._received(conn, data)
                refusals.note(actions)
                self._apply(actions, origin=conn)
        except ConnectionClosed:
            pass
        finally:
            self._apply(self.core.closed(conn, time.time()))
            self._outboxes.pop(conn).stop()
            refusals.summary()

    def _received(self, conn: str, data: str | bytes) -> list[Action]:
        """The core's answer to a frame; a relay bug becomes `internal_error` for that frame
        only (its traceback goes to the debug log: input must not write tracebacks)."""
        try:
            return self.core.received(conn, data, time.time())
        except Exception as exc:
            logger.debug("relay: handling a message from %s failed", conn, exc_info=True)
            text = f"the relay failed on that message ({type(exc).__name__})"
            return [Send(conn, error(INTERNAL_ERROR, text))]

    def _apply(self, actions: list[Action], origin: str | None = None) -> None:
        """Perform the core's actions; `origin` (the connection whose message caused them) is
        told when what it sent cannot reach another node (Redis unreachable too long)."""
        refused: list[dict[str, Any]] = []
        for action in actions:
            if isinstance(action, Publish):
                if not self.backplane.publish(action.node, action.payload):
                    refused.append(action.payload)
                continue
            if isinstance(action, Own):
                self.backplane.own(action)
                continue
            outbox = self._outboxes.get(action.conn)
            if outbox is not None:
                outbox.put(action)
        if refused and origin not in self._outboxes:
            logger.warning("cluster: Redis unreachable too long; %d messages dropped", len(refused))
        elif refused and origin is not None:
            text = "the cluster's Redis is unreachable and too much already waits; not sent"
            message = refused[0].get("msg")
            call_id = message.get("call_id") if isinstance(message, dict) else None
            self._outboxes[origin].put(Send(origin, error(RATE_LIMITED, text, call_id)))

    # -- the cluster (backplane.Listener) -------------------------------------------------------

    def from_node(self, node: str, payload: dict[str, Any]) -> None:
        """A message from another relay node of the cluster."""
        self._apply(self.core.remote(node, payload, time.time()))

    def node_gone(self, node: str) -> None:
        self._apply(self.core.node_gone(node, time.time()))

    def reconnected(self) -> None:
        """Redis is back after an outage (maybe restarted, empty): announce our connections
        and our revocations again."""
        self._apply(self.core.announcements())
        self.backplane.share_revocations(self.state.generations())

    def undelivered(self, node: str, payloads: list[dict[str, Any]]) -> None:
        """What was published for node `node` that it never got (it is gone)."""
        self._apply(self.core.undelivered(node, payloads, time.time()))

    def revoked(self, user: str, generation: int) -> None:
        """A revocation made on another node (or by `callbot token revoke --redis`): adopt
        it, and cut the user's sessions here at once."""
        if self.state.raise_generation(user, generation):
            self._apply(self.core.recheck_tokens(self.state.generation))

    def _ice_servers_for(self, user: str) -> list[dict[str, Any]]:
        """The fixed servers, then the TURN servers with credentials minted now for `user`."""
        servers = list(self._ice_servers)
        if self.turn is not None:
            servers.append(self.turn.ice_server(user, time.time()))
        return servers

    def _authenticate(self, token: str, now: float) -> Identity:
        try:
            claims = self.state.verify(token, now)
        except AuthError as exc:
            raise ProtocolError(exc.code, str(exc)) from None
        return Identity(claims.user, claims.expires_at, claims.generation, claims.role)

    async def _clock(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + TICK
            await asyncio.sleep(TICK)
            self.loop_lag = max(0.0, loop.time() - due)  # how late the event loop woke us
            try:
                self._apply(self.core.tick(time.time()))
            except Exception:
                logger.exception("relay: timer step failed")

    async def _watch_state(self) -> None:
        while True:
            await asyncio.sleep(REVOCATION_POLL)
            try:
                if self.state.changed():
                    self.backplane.share_revocations(self.state.generations())
                    self._apply(self.core.recheck_tokens(self.state.generation))
            except Exception:
                logger.exception("relay: could not read the state directory")

    # -- HTTP ----------------------------------------------------------------------------------

    def _http(self, connection: ServerConnection, request: Request) -> Response | None:
        path = request.path.split("?", 1)[0]
        if path == WS_PATH:
            return None  # go on with the WebSocket handshake
        if path == "/healthz":
            return _json_response(
                http.HTTPStatus.OK,
                {"status": "ok", "connections": self.core.connection_count,
                 "calls": self.core.call_count},
            )  # fmt: skip
        if path == "/api/v1/calls/ice-config":
            return self._ice_config(request)
        if path == "/metrics":
            body = metrics_text(self.core, self.loop_lag, self.metrics_sources).encode()
            return _http_response(http.HTTPStatus.OK, body, "text/plain; version=0.0.4")
        web = _web_response(path)
        if web is not None:
            return web
        return _json_response(http.HTTPStatus.NOT_FOUND, {"error": "not_found", "path": path})

    def _ice_config(self, request: Request) -> Response:
        authorization = request.headers.get("Authorization", "")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return _json_response(
                http.HTTPStatus.UNAUTHORIZED,
                {"error": "auth_failed", "message": "send Authorization: Bearer <token>"},
            )
        try:
            user, servers = self.core.ice_servers_for_token(token.strip(), time.time())
        except ProtocolError as exc:
            return _json_response(
                http.HTTPStatus.UNAUTHORIZED, {"error": exc.code, "message": exc.message}
            )
        body: dict[str, Any] = {"user": user, "ice_servers": servers}
        expires_at = credentials_expiry(servers)
        if self.turn is not None and expires_at is not None:
            body.update(ttl=self.turn.ttl, expires_at=expires_at)
        return _json_response(http.HTTPStatus.OK, body)
