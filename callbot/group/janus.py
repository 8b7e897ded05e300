"""A small async client of the Janus API over WebSocket: one session, its plugin handles.

Janus (https://janus.conf.meetecho.com) speaks JSON over a WebSocket with the `janus-protocol`
subprotocol. Every request carries a `transaction`; Janus answers `success` or `error`, or, for
plugin requests that take time (joining, negotiating), `ack` first and later an `event` with the
same transaction. Events without a pending transaction (someone joined, a PeerConnection came
up, a publisher left) go to the handle they concern (`sender`). The session is kept alive with
a `keepalive` well within Janus's session timeout (60 s by default).

Only what group calls need is here: create a session, attach plugins, send plugin messages
(optionally with a JSEP offer/answer), detach, destroy. Errors Janus reports, whether from the
core (`{"janus": "error"}`) or from a plugin (`error_code` in the plugin data), raise
`JanusError` with Janus's code and reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
from websockets.typing import Subprotocol

from ..errors import CallbotError
from ..safe import get_logger

logger = get_logger(__name__)

SUBPROTOCOL = Subprotocol("janus-protocol")
#: Seconds between keepalives; Janus drops sessions silent for `session_timeout` (60 s default).
KEEPALIVE_INTERVAL = 25.0
#: Seconds to wait for Janus to answer a request (an `event` for asynchronous plugin requests).
REQUEST_TIMEOUT = 15.0


class JanusError(CallbotError):
    """Janus refused a request, or could not be reached.

    `code` is Janus's numeric error code (e.g. 426 "No such room" from the VideoRoom plugin,
    458 "No such session" from the core), None when the connection itself failed; `reason` is
    Janus's text; `request` names what was asked (e.g. "videoroom join").
    """

    def __init__(self, code: int | None, reason: str, request: str | None = None) -> None:
        self.code = code
        self.reason = reason
        self.request = request
        where = f" on {request}" if request else ""
        prefix = f"Janus error {code}" if code is not None else "Janus unavailable"
        super().__init__(f"{prefix}{where}: {reason}")


@dataclass(frozen=True)
class JanusEvent:
    """Something Janus sent about a handle on its own initiative.

    `janus` is the message type ("event", "webrtcup", "media", "hangup", "slowlink",
    "detached"...); `data` the plugin's payload (`plugindata.data`, empty for core events);
    `jsep` an SDP offer or answer, if any; `message` the whole message.
    """

    janus: str
    data: dict[str, Any]
    jsep: dict[str, Any] | None
    message: dict[str, Any]


EventHandler = Callable[[JanusEvent], None]


def _raise_for(message: dict[str, Any], request: str) -> None:
    """Raise the `JanusError` a reply carries, if any (core error or plugin error_code)."""
    if message.get("janus") == "error":
        error = message.get("error") or {}
        raise JanusError(error.get("code"), str(error.get("reason", "unknown error")), request)
    data = (message.get("plugindata") or {}).get("data") or {}
    if "error_code" in data or "error" in data:
        raise JanusError(data.get("error_code"), str(data.get("error", "unknown error")), request)


class JanusSession:
    """One Janus session on its own WebSocket. Open with `await JanusSession.open(url)`.

    `on_lost` is called once if the session ends by itself: the WebSocket closed or Janus timed
    the session out. `close()` destroys the session and closes the socket.
    """

    def __init__(self, websocket: ClientConnection, url: str) -> None:
        self.url = url
        self.id: int | None = None
        self.on_lost: Callable[[JanusError], None] | None = None
        self._websocket = websocket
        self._pending: dict[str, tuple[asyncio.Future[dict[str, Any]], bool]] = {}
        self._handles: dict[int, JanusHandle] = {}
        self._ending = False  # closing on request, or lost: no more requests, no `on_lost`
        loop = asyncio.get_running_loop()
        self._reader = loop.create_task(self._read(), name="janus-reader")
        self._keepalive: asyncio.Task[None] | None = None
        self._shutting_down: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, url: str, timeout: float = REQUEST_TIMEOUT) -> JanusSession:
        """Connect to Janus's WebSocket API at `url` (ws:// or wss://) and create a session."""
        if not url.startswith(("ws://", "wss://")):
            raise JanusError(None, f"{url!r} is not a ws:// or wss:// URL of Janus's WebSocket API")
        try:
            websocket = await connect(
                url,
                subprotocols=[SUBPROTOCOL],
                proxy=None,
                compression=None,
                open_timeout=timeout,
            )
        except (OSError, InvalidHandshake, InvalidURI, TimeoutError) as exc:
            raise JanusError(None, f"cannot connect to {url}: {exc}") from exc
        session = cls(websocket, url)
        try:
            reply = await session._request({"janus": "create"}, "create session", timeout)
        except BaseException:
            await session._shutdown()
            raise
        session.id = int(reply["data"]["id"])
        session._keepalive = asyncio.get_running_loop().create_task(session._keep_alive())
        return session

    @property
    def closed(self) -> bool:
        """Whether the session is closing or gone (closed, timed out, connection lost)."""
        return self._ending

    async def attach(self, plugin: str, on_event: EventHandler | None = None) -> JanusHandle:
        """Attach to `plugin` (e.g. "janus.plugin.videoroom"); events go to `on_event`."""
        reply = await self._request({"janus": "attach", "plugin": plugin}, f"attach {plugin}")
        handle = JanusHandle(self, int(reply["data"]["id"]), plugin, on_event)
        self._handles[handle.id] = handle
        return handle

    async def close(self) -> None:
        """Destroy the session (Janus detaches every handle: peers leave their rooms) and
        close the WebSocket. Idempotent; never raises."""
        if self._ending:
            if self._shutting_down is not None:
                await asyncio.shield(self._shutting_down)
            return
        self._ending = True
        if self.id is not None:
            with contextlib.suppress(CallbotError):
                await self._request(
                    {"janus": "destroy"}, "destroy session", timeout=5.0, closing=True
                )
        await self._shutdown()

    # -- requests ------------------------------------------------------------------------------

    async def _request(
        self,
        payload: dict[str, Any],
        what: str,
        timeout: float = REQUEST_TIMEOUT,
        *,
        until_event: bool = False,
        closing: bool = False,
    ) -> dict[str, Any]:
        """Send one request and return Janus's reply (the `event` when `until_event`).
        Once the session is ending only the `closing` request (destroy) goes out."""
        if self._ending and not closing:
            raise JanusError(None, "the Janus session is closed", what)
        transaction = uuid.uuid4().hex
        message = {**payload, "transaction": transaction}
        if self.id is not None:
            message["session_id"] = self.id
        reply: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[transaction] = (reply, until_event)
        try:
            await self._websocket.send(json.dumps(message))
            result = await asyncio.wait_for(reply, timeout)
        except ConnectionClosed as exc:
            raise JanusError(None, f"connection to {self.url} lost", what) from exc
        except TimeoutError:
            late = f"no answer from {self.url} within {timeout:g} s"
            raise JanusError(None, late, what) from None
        finally:
            self._pending.pop(transaction, None)
        _raise_for(result, what)
        return result

    # -- incoming ------------------------------------------------------------------------------

    async def _read(self) -> None:
        reason = "the connection closed"
        try:
            async for data in self._websocket:
                try:
                    message = json.loads(data)
                except ValueError:
                    logger.warning("Janus sent invalid JSON: %.200r", data)
                    continue
                if isinstance(message, dict):
                    self._dispatch(message)
        except ConnectionClosed as exc:
            reason = f"the connection closed ({exc})"
        self._lose(JanusError(None, f"{reason}: {self.url}"))

    def _dispatch(self, message: dict[str, Any]) -> None:
        kind = message.get("janus")
        pending = self._pending.get(str(message.get("transaction")))
        if pending is not None:
            reply, until_event = pending
            if kind == "ack" and until_event:
                return  # the real answer comes as an event with this transaction
            if not reply.done():
                reply.set_result(message)
            return
        if kind == "timeout":
            self._lose(JanusError(None, "Janus timed the session out"))
            return
        handle = self._handles.get(message.get("sender"))  # type: ignore[arg-type]
        if handle is None:
            logger.debug("Janus message for no known handle: %s", kind)
            return
        if kind == "detached":
            self._handles.pop(handle.id, None)
        handle.deliver(message)

    def _lose(self, error: JanusError) -> None:
        """The session ended by itself: fail waiting requests, tell the owner once."""
        if self._ending:
            return
        self._ending = True
        for reply, _ in self._pending.values():
            if not reply.done():
                reply.set_exception(error)
        self._shutting_down = asyncio.get_running_loop().create_task(self._shutdown())
        if self.on_lost is not None:
            self.on_lost(error)

    async def _keep_alive(self) -> None:
        while not self._ending:
            await asyncio.sleep(KEEPALIVE_INTERVAL)
            try:
                await self._request({"janus": "keepalive"}, "keepalive")
            except JanusError as exc:
                logger.warning("Janus keepalive failed: %s", exc)

    async def _shutdown(self) -> None:
        current = asyncio.current_task()
        for task in (self._keepalive, self._reader):
            if task is not None and task is not current:
                task.cancel()
        with contextlib.suppress(Exception):
            await self._websocket.close()


class JanusHandle:
    """A session's attachment to one plugin: plugin requests and the plugin's events."""

    def __init__(
        self, session: JanusSession, handle_id: int, plugin: str, on_event: EventHandler | None
    ) -> None:
        self.session = session
        self.id = handle_id
        self.plugin = plugin
        self.on_event = on_event
        self._short = plugin.rsplit(".", 1)[-1]

    async def request(self, body: dict[str, Any]) -> dict[str, Any]:
        """A synchronous plugin request (create, exists, destroy, list...): the plugin's data."""
        reply = await self.session._request(self._message(body), self._what(body))
        return (reply.get("plugindata") or {}).get("data") or {}

    async def send(self, body: dict[str, Any], jsep: dict[str, Any] | None = None) -> JanusEvent:
        """An asynchronous plugin request (join, configure, start...), with an optional SDP
        offer or answer; returns the plugin's event that answers it (with Janus's JSEP)."""
        message = self._message(body)
        if jsep is not None:
            message["jsep"] = jsep
        reply = await self.session._request(message, self._what(body), until_event=True)
        return _event(reply)

    async def detach(self) -> None:
        """Detach from the plugin (for a peer: hang its PeerConnection up). Never raises;
        nothing is sent once the session is closing (Janus then detaches every handle)."""
        self.session._handles.pop(self.id, None)
        with contextlib.suppress(CallbotError):
            await self.session._request(
                {"janus": "detach", "handle_id": self.id}, f"{self._short} detach", timeout=5.0
            )

    def deliver(self, message: dict[str, Any]) -> None:
        """Hand an unsolicited message to `on_event` (called by the session's reader)."""
        if self.on_event is None:
            return
        try:
            self.on_event(_event(message))
        except Exception:  # one bad handler must not stop the session's reader
            logger.exception("handling Janus %s event on handle %s failed", self._short, self.id)

    def _message(self, body: dict[str, Any]) -> dict[str, Any]:
        return {"janus": "message", "handle_id": self.id, "body": body}

    def _what(self, body: dict[str, Any]) -> str:
        return f"{self._short} {body.get('request', 'message')}"


def _event(message: dict[str, Any]) -> JanusEvent:
    data = (message.get("plugindata") or {}).get("data") or {}
    return JanusEvent(str(message.get("janus")), data, message.get("jsep"), message)
