"""The relay server: WebSocket signalling at /ws plus a few HTTP endpoints on the same port.

All decisions are `RelayCore`'s (protocol.py); this module only moves bytes, keeps one ordered
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
from .metrics import metrics_text
from .protocol import (
    INTERNAL_ERROR,
    Action,
    Close,
    Identity,
    ProtocolError,
    RelayCore,
    RelayLimits,
    Send,
    encode,
    error,
)
from .state import RelayState
from .turn import TurnRestAuth, credentials_expiry

logger = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
WS_PATH = "/ws"
TICK = 0.25  # seconds between timer checks (ring timeouts, expiry, hello deadline)
REVOCATION_POLL = 0.5  # seconds between checks of the state dir for revocations
#: WebSocket frames above this are cut by the transport; up to it the relay answers with a
#: typed error (protocol.MAX_MESSAGE_BYTES is the real limit).
TRANSPORT_MAX_SIZE = 1024 * 1024
MAX_OUTBOX = 1000  # messages queued for a client that does not read: beyond, it is dropped

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

    A client that lets `MAX_OUTBOX` messages pile up is not reading: what is queued is dropped
    and the connection is closed (1008), so its backlog cannot grow the relay's memory.
    """

    def __init__(self, websocket: ServerConnection) -> None:
        self.websocket = websocket
        self.queue: asyncio.Queue[Send | Close] = asyncio.Queue()
        self.closing = False
        self.task = asyncio.get_running_loop().create_task(self._run())

    def put(self, action: Send | Close) -> None:
        if self.closing:
            return
        if self.queue.qsize() >= MAX_OUTBOX:
            logger.warning("client %s is not reading; disconnecting it", self.websocket.id)
            while not self.queue.empty():
                self.queue.get_nowait()
            action = Close("", 1008, "not reading")
        if isinstance(action, Close):
            self.closing = True
        self.queue.put_nowait(action)

    async def _run(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            while True:
                action = await self.queue.get()
                if isinstance(action, Close):
                    await self.websocket.close(action.code, action.reason)
                    return
                await self.websocket.send(encode(action.message))


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
    ) -> None:
        self.host = host
        self.port = port
        self.state = RelayState(state_dir)
        self._ice_servers = list(ice_servers)
        #: TURN servers whose per-user credentials this relay mints (welcome and ice-config).
        self.turn = turn
        self.core = RelayCore(self._authenticate, self._ice_servers_for, limits, janus_url)
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
        self._server = await serve(
            self._handle,
            self.host,
            self.port,
            process_request=self._http,
            max_size=TRANSPORT_MAX_SIZE,
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
        self._outboxes[conn] = _Outbox(websocket)
        self._apply(self.core.opened(conn, time.time()))
        try:
            async for data in websocket:
                try:
                    actions = self.core.received(conn, data, time.time())
                except Exception:  # a relay bug must not take the connection (or relay) down
                    logger.exception("relay: handling a message from %s failed", conn)
                    actions = [
                        Send(conn, error(INTERNAL_ERROR, "the relay failed on that message"))
                    ]
                self._apply(actions)
        except ConnectionClosed:
            pass
        finally:
            self._apply(self.core.closed(conn, time.time()))
            outbox = self._outboxes.pop(conn)
            outbox.task.cancel()

    def _apply(self, actions: list[Action]) -> None:
        for action in actions:
            outbox = self._outboxes.get(action.conn)
            if outbox is not None:
                outbox.put(action)

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
            body = metrics_text(self.core, self.loop_lag).encode()
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
