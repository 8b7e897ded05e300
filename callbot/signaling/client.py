"""The relay client: connect, authenticate, reconnect with backoff, refresh the token.

Messages sent while the relay is away are kept (bounded) and sent after reconnecting; on each
reconnect the client re-claims its calls in progress (`hello.calls`), so the relay can route
them again even after a restart. Given several relay URLs (the nodes of a cluster), it moves
to the next one each time a connection fails or drops. A fatal error (bad, expired or revoked
token, session limit) stops it for good: no reconnect loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
import urllib.parse
import urllib.request
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, cast

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from ..errors import CallbotError
from ..identity import AuthError
from ..safe import get_logger, printable
from .messages import (
    TRANSPORT_MAX_SIZE,
    AppMessage,
    CallClaim,
    ClientMessage,
    Hello,
    ProtocolError,
    RelayMessage,
    Welcome,
    decode,
    encode,
)
from .turn import credentials_expiry

logger = get_logger(__name__)

MAX_BUFFERED = 1000
BACKOFF_START, BACKOFF_MAX = 0.25, 10.0
#: Ask for a fresh token this long before the current one expires (or a fifth of its life).
REFRESH_MARGIN = 300.0
#: Fetch fresh ICE servers this long before their TURN credentials expire (or at two thirds
#: of their remaining life), retrying every ICE_RETRY s until it works or the relay welcomes
#: us again (a welcome carries fresh ones).
ICE_REFRESH_MARGIN = 300.0
ICE_RETRY = 5.0
ICE_CONFIG_PATH = "/api/v1/calls/ice-config"


def ice_config_url(ws_url: str) -> str:
    """The relay's ice-config endpoint next to its WebSocket URL: ws://h:p/ws ->
    http://h:p/api/v1/calls/ice-config (wss -> https; a path prefix before /ws is kept)."""
    parts = urllib.parse.urlsplit(ws_url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    path = parts.path.removesuffix("/").removesuffix("/ws") + ICE_CONFIG_PATH
    return urllib.parse.urlunsplit((scheme, parts.netloc, path, "", ""))


def fetch_ice_servers(ws_url: str, token: str, timeout: float = 10.0) -> list[dict[str, Any]]:
    """GET the ice-config endpoint of the relay at `ws_url` (blocking: run it in a thread).
    Like the WebSocket, it never goes through an HTTP proxy."""
    request = urllib.request.Request(
        ice_config_url(ws_url), headers={"Authorization": f"Bearer {token}"}
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=timeout) as response:
        body = json.loads(response.read())
    servers = body.get("ice_servers") if isinstance(body, dict) else None
    if not isinstance(servers, list):
        raise ValueError(f"no ice_servers list in the ice-config answer: {body!r}")
    return servers


class SignalingError(CallbotError):
    """The relay cannot be reached or refused us; `code` is a protocol error code if any."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__(f"{code}: {message}")


def _fatal_error(code: str, message: str) -> CallbotError:
    if code in ("auth_failed", "auth_expired", "session_revoked", "forbidden"):
        return AuthError(code, message)
    return SignalingError(code, message)


class RelayClient:
    """One authenticated connection to a relay, kept alive across network trouble."""

    def __init__(
        self,
        url: str | Sequence[str],
        token: str,
        *,
        on_message: Callable[[AppMessage], None],
        role: str = "user",
        max_calls: int | None = None,
        claims: Callable[[], list[CallClaim]] = list,
        on_token_expiring: Callable[[], Awaitable[str]] | None = None,
        on_welcome: Callable[[Welcome], None] | None = None,
        reconnect: bool = True,
        on_fatal: Callable[[CallbotError], None] | None = None,
    ) -> None:
        #: The relay URLs to use in turn (one, or the nodes of a cluster).
        self.urls = [url] if isinstance(url, str) else list(url)
        if not self.urls:
            raise ValueError("RelayClient needs at least one relay URL")
        self._next_url = 0
        self.token = token
        self.role = role
        self.max_calls = max_calls
        self.user: str | None = None
        self.ice_servers: list[dict[str, Any]] = []
        self.expires_at = 0.0
        self.fatal_error: CallbotError | None = None
        self.reconnects = 0
        self._on_message = on_message
        self._claims = claims
        self._on_token_expiring = on_token_expiring
        self._on_welcome = on_welcome
        self._on_fatal = on_fatal  # told once the relay refused us for good
        self._reconnect = reconnect
        self._websocket: ClientConnection | None = None
        self._buffer: deque[ClientMessage] = deque(maxlen=MAX_BUFFERED)
        self._welcomed = asyncio.Event()
        self._first: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._refresh_task: asyncio.Task[None] | None = None
        self._ice_task: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def url(self) -> str:
        """The relay URL in use (or tried next)."""
        return self.urls[self._next_url]

    @property
    def connected(self) -> bool:
        return self._welcomed.is_set()

    async def connect(self, timeout: float = 10.0) -> None:
        """Connect and authenticate; raises `AuthError`/`SignalingError` if that fails."""
        if self._task is None:
            self._first = asyncio.get_running_loop().create_future()
            self._task = asyncio.get_running_loop().create_task(self._run(), name="relay-client")
        assert self._first is not None
        try:
            await asyncio.wait_for(asyncio.shield(self._first), timeout)
        except TimeoutError:
            await self.close()
            raise SignalingError(
                "unreachable", f"no welcome from {self.url} in {timeout}s"
            ) from None

    def queue(self, message: ClientMessage) -> None:
        """Send a message right after the next welcome (or with the next flush)."""
        self._buffer.append(message)

    async def send(self, message: ClientMessage) -> None:
        """Send a message now, or as soon as the relay is back."""
        if self.fatal_error is not None:
            raise self.fatal_error
        websocket = self._websocket
        if websocket is not None and self.connected:
            try:
                await websocket.send(encode(message))
                return
            except ConnectionClosed:
                pass
        self._buffer.append(message)

    async def close(self) -> None:
        """Say goodbye to the relay (close code 1000) and stop reconnecting."""
        self._closing = True
        if self._websocket is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._websocket.close(), 2)
        for task in (self._refresh_task, self._ice_task, self._task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def wait_connected(self, timeout: float | None = None) -> None:
        await asyncio.wait_for(self._welcomed.wait(), timeout)

    # -- the connection loop -------------------------------------------------------------------

    async def _run(self) -> None:
        delay = BACKOFF_START
        while not self._closing:
            try:
                async with connect(
                    self.url,
                    proxy=None,
                    compression=None,
                    open_timeout=5,
                    max_size=TRANSPORT_MAX_SIZE,  # the relay sends at most MAX_MESSAGE_BYTES
                ) as websocket:
                    self._websocket = websocket
                    await self._session(websocket)
                    delay = BACKOFF_START
            except (OSError, InvalidHandshake, InvalidURI, TimeoutError, ConnectionClosed) as exc:
                logger.info("relay %s unreachable: %s", self.url, exc)
                if isinstance(exc, InvalidURI):
                    self._fail(SignalingError("invalid_url", str(exc)))
            finally:
                self._websocket = None
                self._welcomed.clear()
                self._next_url = (self._next_url + 1) % len(self.urls)
            if self.fatal_error is not None or self._closing or not self._reconnect:
                break
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, BACKOFF_MAX)
            self.reconnects += 1
        if self._first is not None and not self._first.done():
            self._first.set_exception(
                self.fatal_error or SignalingError("unreachable", f"cannot reach {self.url}")
            )

    async def _session(self, websocket: ClientConnection) -> None:
        hello: Hello = {"type": "hello", "token": self.token, "role": self.role,
                        "calls": self._claims(), "client": "callbot-python"}  # fmt: skip
        if self.max_calls is not None:
            hello["max_calls"] = self.max_calls
        await websocket.send(encode(hello))
        async for data in websocket:
            try:
                # The relay's messages are typed as it builds them; their values are still
                # read defensively (.get, isinstance) where a bad one could do harm.
                message = cast(RelayMessage, decode(data))
            except ProtocolError as exc:
                logger.warning("relay sent an unreadable message: %s", exc)
                continue
            if message["type"] == "welcome":
                await self._welcome(websocket, message)
            elif message["type"] == "refreshed":
                self.expires_at = float(message.get("expires_at", self.expires_at))
                self._schedule_refresh()
            elif message["type"] == "error" and message.get("fatal") is True:
                self._fail(_fatal_error(message["code"], message.get("message", "")))
                return
            else:
                try:
                    self._on_message(message)
                except Exception:
                    logger.exception("handling relay message %s failed", message["type"])

    async def _welcome(self, websocket: ClientConnection, message: Welcome) -> None:
        self.user = message.get("user")
        self.ice_servers = list(message.get("ice_servers") or [])
        self._schedule_ice_refresh()
        self.expires_at = float(message.get("expires_at", 0))
        self._welcomed.set()
        if self._first is not None and not self._first.done():
            self._first.set_result(None)
        if self._on_welcome is not None:
            self._on_welcome(message)  # e.g. restore presence: queued before the buffer below
        while self._buffer:
            await websocket.send(encode(self._buffer.popleft()))
        self._schedule_refresh()

    def _schedule_refresh(self) -> None:
        if self._on_token_expiring is None:
            return
        if self._refresh_task is not None:
            self._refresh_task.cancel()
        left = self.expires_at - time.time()
        delay = max(0.0, left - min(REFRESH_MARGIN, left / 5))
        self._refresh_task = asyncio.get_running_loop().create_task(self._refresh(delay))

    async def _refresh(self, delay: float) -> None:
        await asyncio.sleep(delay)
        assert self._on_token_expiring is not None
        try:
            self.token = await self._on_token_expiring()
        except Exception:
            logger.exception("on_token_expiring failed; the session ends when the token expires")
            return
        await self.send({"type": "refresh", "token": self.token})

    def _schedule_ice_refresh(self) -> None:
        """Arrange to fetch new ICE servers before the TURN credentials we hold expire."""
        if self._ice_task is not None:
            self._ice_task.cancel()
            self._ice_task = None
        expiry = credentials_expiry(self.ice_servers)
        if expiry is None:
            return
        left = expiry - time.time()
        # At least ICE_RETRY apart: a relay whose clock lags ours must not make us spin.
        delay = max(ICE_RETRY if left <= 0 else 0.0, left - min(ICE_REFRESH_MARGIN, left / 3))
        self._ice_task = asyncio.get_running_loop().create_task(self._refresh_ice(delay))

    async def _refresh_ice(self, delay: float) -> None:
        await asyncio.sleep(delay)
        while True:
            try:
                servers = await asyncio.to_thread(fetch_ice_servers, self.url, self.token)
                break
            except (OSError, ValueError) as exc:  # HTTPError (e.g. 401) is an OSError
                logger.warning("could not refresh the ICE servers from %s: %s", self.url, exc)
            if self.fatal_error is not None:
                return
            await asyncio.sleep(ICE_RETRY)
        logger.debug("ICE servers refreshed from %s", self.url)
        self.ice_servers = servers
        self._ice_task = None
        self._schedule_ice_refresh()

    def _fail(self, error: CallbotError) -> None:
        logger.error("relay refused this client: %s", printable(error))
        self.fatal_error = error
        if self._first is not None and not self._first.done():
            self._first.set_exception(error)
        if self._on_fatal is not None:
            self._on_fatal(error)
