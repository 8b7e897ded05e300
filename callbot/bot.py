"""`Bot`: a user of the relay that answers and places calls, one task per call.

    bot = Bot("greeter")

    @bot.on_incoming
    async def greet(incoming):
        call = await incoming.accept()
        await call.send_audio_file("samples/welcome.wav")

Without a server the bot starts an embedded relay on 127.0.0.1 and mints its own token, so a
newcomer configures nothing. Every call gets its own task and its own ordered inbox of
signalling messages; a handler that raises ends that call with reason "error" and is logged
with the call id, and every other call goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import inspect
import os
import signal
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
from aiortc import RTCIceServer

from . import _compat, plugins, watchdog
from .call import Call, RejectReason, check_reject_reason
from .config import CallConfig
from .errors import CallbotError, CallError, InvalidStateError
from .events import Emitter
from .group.calls import GroupCalls, InviteHandler
from .group.room import Room, RoomId, RoomKind
from .identity import IdentityError, IdentityKey, KnownPeers, Trust
from .media.playback import Playback
from .safe import get_logger, printable
from .settings import Settings, SettingsError, parse_addresses, relay_urls
from .signaling.client import RelayClient
from .signaling.messages import (
    AppMessage,
    CallMessage,
    DeliveredOffer,
    PeerMessage,
    PresenceSet,
    PresenceState,
    Welcome,
)
from .signaling.state import RelayState
from .sip.call import SipCall
from .sip.endpoint import SipEndpoint, SipSettings, is_sip_uri
from .tasks import TaskHandle, TaskScope

if TYPE_CHECKING:
    from .signaling.relay import Relay

logger = get_logger(__name__)

#: Lifetime of tokens a bot mints for itself (renewed before expiry while it runs).
SELF_TOKEN_TTL = 24 * 3600.0

IncomingHandler = Callable[["Incoming"], Awaitable[None] | None]


class Incoming:
    """A call ringing at this bot: answer it with `accept()` or refuse it with `decline()`."""

    def __init__(self, call: Call, to: str) -> None:
        self._call = call
        self._to = to
        self._answering: asyncio.Future[None] | None = None

    @property
    def call_id(self) -> str:
        return self._call.id

    @property
    def from_(self) -> str:
        """The caller's user id."""
        return self._call.peer

    @property
    def to(self) -> str:
        """The user id that was called (this bot's)."""
        return self._to

    @property
    def metadata(self) -> dict[str, Any]:
        """What the caller attached to the call."""
        return self._call.metadata

    @property
    def video(self) -> bool:
        """Whether the caller offers video."""
        return self._call.remote_offers_video

    async def accept(self, video: bool = False) -> Call:
        """Answer (sending video too when `video` and the caller offers it). Accepting twice
        returns the same call."""
        if self._answering is None:
            if self._call.state not in ("ringing", "early"):
                raise InvalidStateError(f"cannot accept a call that is {self._call.state}")
            self._answering = asyncio.ensure_future(self._call.answer(video=video))
        await asyncio.shield(self._answering)
        return self._call

    async def decline(self, reason: RejectReason = "decline") -> None:
        """Refuse the call: the caller ends with `rejected:<reason>` (busy or decline)."""
        check_reject_reason(reason)
        if self._answering is not None:
            raise InvalidStateError("the call was already accepted", self.call_id)
        await self._call.reject(reason)

    async def early_media(
        self, path: str | Path | None = None, loop: bool = False
    ) -> Playback | None:
        """SIP calls: send media before answering (183 Session Progress; the call is `early`),
        playing `path` if given. Needs `SipSettings(early_media=True)`."""
        early = getattr(self._call, "early_media", None)
        if early is None:
            raise InvalidStateError("early media is for SIP calls", self.call_id)
        await early()
        return self._call.send_audio_file(path, loop=loop) if path is not None else None

    def __repr__(self) -> str:
        return f"<Incoming {self.call_id} from {self.from_} video={self.video}>"


class Subscription:
    """Returned by `listen_for_calls`; `close()` stops delivering calls to that handler."""

    def __init__(self, close: Callable[[], None]) -> None:
        self._close = close

    def close(self) -> None:
        self._close()


class _CallPort:
    """A call's signalling through the bot's relay connection (adds the peer as `to`, and
    to the offer of an attended transfer's replacing call, the relay's `grant`)."""

    def __init__(self, bot: Bot, peer: str, grant: str | None = None) -> None:
        self._bot = bot
        self._peer = peer
        self._grant = grant

    async def send(self, message: CallMessage) -> None:
        client = self._bot._client
        if client is None:
            raise CallError("not_connected", "the bot is not connected to a relay")
        message = copy.copy(message)
        message["to"] = self._peer
        if self._grant is not None and message["type"] == "call_offer":
            message["grant"] = self._grant
        await client.send(message)


class Bot(Emitter):
    """A bot (or any user) on a relay.

    Events: `call(call)` for every new call, `ready`, `presence_list(states)` and
    `presence_update(user, status, text)` for users followed with `subscribe_presence`.
    """

    def __init__(
        self,
        user_id: str,
        server: str | list[str] | None = None,
        token: str | None = None,
        identity: IdentityKey | str | Path | None = None,
        *,
        role: str = "bot",
        max_calls: int | None = None,
        video_codec: str | None = None,
        video_size: tuple[int, int] | None = None,
        ice_addresses: list[str] | None = None,
        always_relay: bool = False,
        config: CallConfig | None = None,
        state_dir: str | Path | None = None,
        on_token_expiring: Callable[[], Awaitable[str]] | None = None,
        follow_transfers: bool = True,
        known_peers: KnownPeers | str | Path | None = None,
        require_signatures: bool = False,
        trust_on_first_use: bool = False,
        janus_url: str | None = None,
        settings: Settings | None = None,
        sip: SipSettings | str | None = None,
    ) -> None:
        super().__init__()
        _compat.ensure_patched()  # aiortc/aioice hooks: when a bot exists, not on import
        self.user_id = user_id
        if config is not None:
            given = {
                "video_codec": video_codec,
                "video_size": video_size,
                "ice_addresses": ice_addresses,
                "always_relay": always_relay or None,
            }
            clash = sorted(name for name, value in given.items() if value is not None)
            if clash:
                raise SettingsError(
                    f"Bot({user_id!r}): give {', '.join(clash)} inside config=, not beside it"
                )
        #: The CallConfig given (or built from the arguments); settings complete it in _apply.
        self._base_config = config or CallConfig(
            video_size=video_size or (640, 480), video_codec=video_codec or "vp8"
        )
        self._identity_key = identity if isinstance(identity, IdentityKey) else None
        self._known_peers = known_peers if isinstance(known_peers, KnownPeers) else None
        #: What this bot's own code set; the command line may add to it but not contradict it.
        self._explicit = Settings(
            server=relay_urls(server),
            token=token,
            identity=str(identity) if isinstance(identity, str | Path) else None,
            known_peers=str(known_peers) if isinstance(known_peers, str | Path) else None,
            require_signatures=require_signatures,
            trust_on_first_use=trust_on_first_use,
            ice_addresses=(
                parse_addresses(ice_addresses) if ice_addresses is not None
                else self._base_config.ice.addresses
            ),
            always_relay=always_relay or self._base_config.ice.relay_only,
            janus_url=janus_url,
            state_dir=Path(state_dir) if state_dir is not None else None,
            fastpath=self._base_config.fastpath,
        )  # fmt: skip
        #: Where the rest comes from: `settings`, else the environment (read here, once).
        self._defaults = settings if settings is not None else Settings.from_env(os.environ)
        self.role = role
        self.max_calls = max_calls
        self._apply(self._explicit.over(self._defaults))
        self._on_token_expiring = on_token_expiring
        self.follow_transfers = follow_transfers
        #: Last known presence of the users followed: user -> {user, status, text}.
        self.presence: dict[str, PresenceState] = {}
        self._my_presence: PresenceSet | None = None  # the last presence_set, resent
        self._followed: set[str] = set()
        self._handlers: list[IncomingHandler] = []
        self._calls: dict[str, Call] = {}
        self._inboxes: dict[str, asyncio.Queue[PeerMessage]] = {}
        self._tasks = TaskScope(f"bot-{self.user_id}")  # its work, its calls' groups within
        self._client: RelayClient | None = None
        self._relay: Relay | None = None
        self._state: RelayState | None = None
        self._stopped: asyncio.Event | None = None
        self._watching = False  # holds the loop watchdog (see callbot/watchdog.py)
        self._groups = GroupCalls(
            user_id, self.settings.janus_url, self._call_config,
            lambda m: self._require_client().send(m),
        )  # fmt: skip
        #: SIP: the bot's address (`sip=`) and its calls to SIP URIs (callbot/sip).
        self._sip = SipEndpoint(None, self._call_config, self._take_sip_call, user_id)
        self.sip = sip

    def __repr__(self) -> str:
        return f"<Bot {self.user_id} {len(self._calls)} calls>"

    def configure(self, settings: Settings) -> None:
        """Apply settings from the command line (`callbot run`): they win over the environment;
        one this bot's code set to something else is a `SettingsError` naming both values."""
        clash = self._explicit.conflicts(settings)
        if clash:
            raise SettingsError(
                f"bot {self.user_id!r}: its code and the command line disagree on "
                + "; ".join(clash)
            )
        self._defaults = settings.over(self._defaults)
        self._apply(self._explicit.over(self._defaults))
        self._groups.own_janus_url = self.settings.janus_url

    def _apply(self, settings: Settings) -> None:
        """Derive the connection, identity and call config from resolved `settings`."""
        self.settings = settings
        #: The relay's URL, or the URLs of a cluster's nodes: on losing one the bot moves on to
        #: the next and claims its calls there (docs/howto/cluster.md).
        self.server = settings.server
        # a token from the environment goes with a server from it, never to an embedded relay
        self.token = settings.token if (self._explicit.token or settings.server) else None
        self.state_dir: str | Path | None = settings.state_dir
        self.identity = self._identity_key or (
            IdentityKey.load(settings.identity) if settings.identity else None
        )
        known_peers = self._known_peers
        if known_peers is None and (settings.known_peers or settings.trust_on_first_use):
            known_peers = KnownPeers(
                settings.known_peers, trust_on_first_use=settings.trust_on_first_use
            )
        base = self._base_config
        ice = replace(base.ice, addresses=settings.ice_addresses, relay_only=settings.always_relay)
        self.config = replace(base, ice=ice, fastpath=settings.fastpath)
        if self.identity is not None or known_peers is not None or settings.require_signatures:
            trust = Trust(self.identity, known_peers, settings.require_signatures)
            self.config = replace(self.config, trust=trust)

    # -- registering behaviour -----------------------------------------------------------------

    def on_incoming(self, handler: IncomingHandler) -> IncomingHandler:
        """Decorator: `handler(incoming)` runs for every incoming call (several allowed)."""
        self._handlers.append(handler)
        return handler

    def listen_for_calls(self, handler: IncomingHandler) -> Subscription:
        """The programmatic form of `@bot.on_incoming`; returns a closable subscription."""
        self._handlers.append(handler)
        return Subscription(lambda: self._handlers.remove(handler))

    def use(self, plugin: str | Callable[..., Any], **options: Any) -> None:
        """Add a plugin's behaviour: a name (`"echo"`), a `.py` path or a `setup` function;
        options are checked against the plugin's `setup(bot, ...)` signature."""
        plugins.apply(self, plugin, options)

    # -- calls -----------------------------------------------------------------------------------

    @property
    def active_calls(self) -> list[Call]:
        """Calls ringing, connecting, connected or held."""
        return [c for c in self._calls.values() if c.state != "ended"]

    def get_call(self, call_id: str) -> Call | None:
        return self._calls.get(call_id)

    async def call(
        self, peer: str, video: bool = False, metadata: dict[str, Any] | None = None
    ) -> Call:
        """Place a call to `peer`; returns once the offer is sent (the call is `calling`)."""
        return await self._place(peer, video, metadata)

    async def _place(
        self, peer: str, video: bool, metadata: dict[str, Any] | None, grant: str | None = None
    ) -> Call:
        """Place a call; `grant` (from the relay) makes it replace a call of `peer`."""
        if is_sip_uri(peer):
            sip_call = await self._sip.place(peer, metadata)
            self._register(sip_call)
            await sip_call.start()
            return sip_call
        if self._client is None:
            raise InvalidStateError("start the bot first (await bot.start())")
        call = Call(
            direction="outbound",
            peer=peer,
            signaling=_CallPort(self, peer, grant),
            config=self._call_config(),
            video=video,
            metadata=metadata,
            place_call=self._place_for_transfer,
            local_user=self.user_id,
        )
        self._register(call)
        await call.start()
        return call

    async def _place_for_transfer(self, peer: str, video: bool, metadata: dict[str, Any]) -> Call:
        return await self.call(peer, video=video, metadata=metadata)

    # -- group calls ---------------------------------------------------------------------------

    def on_group_invite(self, handler: InviteHandler) -> InviteHandler:
        """Decorator: `handler(invite)` runs for every invitation to a group call; the
        `GroupInvite` has `.room`, `.kind`, `.from_`, `await .accept() -> Room`, `.decline()`."""
        return self._groups.on_invite(handler)

    async def start_group_call(
        self, invite: Iterable[str] = (), *, audio_only: bool = False, video: bool = True
    ) -> Room:
        """Create a room on Janus (a VideoRoom, or an AudioBridge mixer when `audio_only`),
        join it (sending video when `video`) and invite the users in `invite` to it."""
        return await self._groups.start(invite, audio_only=audio_only, video=video)

    async def join_group_call(
        self, room: RoomId, *, audio_only: bool = False, video: bool = True
    ) -> Room:
        """Join an existing room: a VideoRoom, or an AudioBridge when `audio_only`."""
        kind: RoomKind = "audiobridge" if audio_only else "videoroom"
        return await self._groups.join(room, kind=kind, video=video)

    @property
    def active_rooms(self) -> list[Room]:
        """The group calls this bot is in."""
        return self._groups.rooms

    @property
    def janus_url(self) -> str | None:
        """The Janus that group calls start on: `Bot(janus_url=...)`, `$CALLBOT_JANUS_URL`,
        or the one the relay announces."""
        return self._groups.janus_url

    # -- presence ------------------------------------------------------------------------------

    async def set_presence(
        self, status: str, text: str | None = None, visible_to: str | list[str] | None = None
    ) -> None:
        """Show `status` ("available", "away" or "dnd") and an optional text to followers;
        `on_call` and `offline` are set by the relay itself. A user's presence is hidden
        (`unknown`) unless `visible_to` is "everyone" or lists the watcher; a bot's is public;
        None keeps the last choice."""
        if status not in ("available", "away", "dnd"):
            raise ValueError("status is 'available', 'away' or 'dnd'")
        message: PresenceSet = {"type": "presence_set", "status": status, "text": text}
        if visible_to is not None:
            message["visible_to"] = visible_to
        elif self._my_presence is not None and "visible_to" in self._my_presence:
            message["visible_to"] = self._my_presence["visible_to"]
        self._my_presence = message
        await self._require_client().send(message)

    async def subscribe_presence(self, users: list[str]) -> None:
        """Follow `users`: a `presence_list` event now, `presence_update`s on every change."""
        self._followed.update(users)
        await self._require_client().send({"type": "presence_subscribe", "users": list(users)})

    async def unsubscribe_presence(self, users: list[str]) -> None:
        self._followed.difference_update(users)
        for user in users:
            self.presence.pop(user, None)
        await self._require_client().send({"type": "presence_unsubscribe", "users": list(users)})

    def _require_client(self) -> RelayClient:
        if self._client is None:
            raise InvalidStateError("start the bot first (await bot.start())")
        return self._client

    def _restore_session(self, welcome: Welcome) -> None:
        """After every (re)connection: show our presence and follow our users again."""
        assert self._client is not None
        self._groups.relay_janus_url = welcome.get("janus") or None
        if self._my_presence is not None:
            self._client.queue(self._my_presence)
        if self._followed:
            self._client.queue({"type": "presence_subscribe", "users": sorted(self._followed)})

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect to the relay (starting an embedded one when no server is set)."""
        if self._client is not None:
            return
        self._stopped = asyncio.Event()
        if not self._watching:
            self._watching = True
            watchdog.WATCHDOG.acquire()
        if self.server is None:
            from .embedded import start_relay  # the relay server only when we embed it

            self._relay = await start_relay(
                state_dir=Path(self.state_dir) if self.state_dir else None
            )
            self.server = self._relay.url
            logger.info("embedded relay at %s", self.server)
        if self.token is None:
            self.token = self._local_state().mint(self.user_id, SELF_TOKEN_TTL, self.role)
            if self._on_token_expiring is None:
                self._on_token_expiring = self._mint_again
        self._client = RelayClient(
            self.server,
            self.token,
            on_message=self._on_message,
            role=self.role,
            max_calls=self.max_calls,
            claims=lambda: [{"call_id": c.id, "peer": c.peer} for c in self.active_calls],
            on_token_expiring=self._on_token_expiring,
            on_welcome=self._restore_session,
            on_fatal=self._refused,
        )
        try:
            await self._client.connect()
        except BaseException:
            await self.stop()
            raise
        if self._client.user != self.user_id:
            logger.warning("token is for %r, not %r", self._client.user, self.user_id)
        try:
            await self._sip.start()
        except BaseException:
            await self.stop()
            raise
        self.emit("ready")

    async def stop(self) -> None:
        """Hang up every call, leave every room, disconnect, stop the embedded relay."""
        await asyncio.gather(*(c.hangup() for c in self.active_calls), return_exceptions=True)
        await self._groups.stop()
        await self._sip.stop()
        self._tasks.cancel()
        if self._client is not None:
            await self._client.close()
            self._client = None
        if self._relay is not None:
            await self._relay.stop()
            self._relay = None
        if self._state is not None:
            self._state.close()
            self._state = None
        if self._watching:
            self._watching = False
            watchdog.WATCHDOG.release()
        if self._stopped is not None:
            self._stopped.set()

    async def run_forever(self) -> None:
        """Start and serve calls until stopped (SIGINT/SIGTERM or `stop()`)."""
        await self.start()
        assert self._stopped is not None
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signum, lambda: asyncio.ensure_future(self.stop()))
        try:
            await self._stopped.wait()
        finally:
            await self.stop()

    def run(self) -> None:
        """Blocking form of `run_forever()` for scripts; says on stderr when the bot is ready
        and how to call it, as `callbot run` does."""
        from .embedded import say_ready

        self.once("ready", lambda: say_ready(self))
        asyncio.run(self.run_forever())

    async def __aenter__(self) -> Bot:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def sip(self) -> SipSettings | None:
        """The bot's SIP address (and registration), None without one; set before `start()`
        (`callbot run --sip` does), from a `SipSettings` or a `sip:user@host:port` string."""
        return self._sip.settings

    @sip.setter
    def sip(self, value: SipSettings | str | None) -> None:
        self._sip.settings = SipSettings(value) if isinstance(value, str) else value

    @property
    def connected(self) -> bool:
        return self._client is not None and self._client.connected

    @property
    def relay(self) -> Relay | None:
        """The embedded relay, when this bot started one."""
        return self._relay

    # -- internals -----------------------------------------------------------------------------

    def _local_state(self) -> RelayState:
        if self._relay is not None:
            return self._relay.state
        if self._state is None:
            self._state = RelayState(self.state_dir)
        return self._state

    async def _mint_again(self) -> str:
        return self._local_state().mint(self.user_id, SELF_TOKEN_TTL, self.role)

    def _refused(self, error: CallbotError) -> None:
        """The relay cut us for good; if our tokens were revoked, our calls end too (their
        media is peer to peer: only we can stop it), with reason `revoked`."""
        if getattr(error, "code", None) == "session_revoked":
            for call in self.active_calls:
                self._spawn(call.fail(CallError("session_revoked", str(error), call.id), "revoked"))

    def _call_config(self) -> CallConfig:
        """Calls use the relay's ICE servers on top of the bot's own settings."""
        servers = self._client.ice_servers if self._client else []
        if not servers:
            return self.config
        extra = tuple(
            RTCIceServer(s["urls"], s.get("username"), s.get("credential")) for s in servers
        )
        return replace(self.config, ice=replace(self.config.ice, servers=self.config.ice.servers
                                                + extra))  # fmt: skip

    def _register(self, call: Call) -> None:
        self._calls[call.id] = call
        call._tasks.parent = self._tasks  # the call's group lives in the bot's: stop() ends it
        if isinstance(call, SipCall):  # its signalling is SIP's: relay messages never reach it
            call.on("ended", lambda reason, duration: self._forget(call, None))
        else:
            inbox = self._inboxes[call.id] = asyncio.Queue()
            task = call._spawn(self._deliver(call, inbox))
            call.on("ended", lambda reason, duration: self._forget(call, task))
        if self.follow_transfers:
            call.on("transfer", lambda target, replaces: self._spawn(
                self._follow_transfer(call, target, replaces)))  # fmt: skip
        self.emit("call", call)

    async def _follow_transfer(self, call: Call, target: str, replaces: str | None) -> None:
        """The peer transferred us: call `target` (taking over `replaces` there, if given, with
        the grant the relay issued for it; metadata is informative only, never trusted)."""
        metadata: dict[str, Any] = {"transferred_by": call.peer, "transferred_from": call.id}
        grant = call.transfer_grant if replaces else None
        try:
            new_call = await self._place(target, call.has_video, metadata, grant)
        except CallbotError as exc:
            logger.warning("call %s: could not follow the transfer to %s: %s", call.id, target, exc)
            return
        call.emit("transferred", new_call)

    def _forget(self, call: Call, inbox_task: TaskHandle | None) -> None:
        self._calls.pop(call.id, None)
        self._inboxes.pop(call.id, None)
        if inbox_task is not None:
            inbox_task.cancel()

    async def _deliver(self, call: Call, inbox: asyncio.Queue[PeerMessage]) -> None:
        """Apply a call's signalling messages one at a time, in order."""
        while True:
            message = await inbox.get()
            try:
                await call.handle_signal(message)
            except CallbotError as exc:
                logger.warning("call %s: %s", call.id, exc)
            except Exception:
                logger.exception("call %s: signalling message %s failed", call.id, message["type"])

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> TaskHandle:
        """Run `coro` in the bot's task group (`stop()` cancels it, and its calls' work)."""
        return self._tasks.spawn(coro)

    def _start_handler(self, coro: Coroutine[Any, Any, Any]) -> None:
        self._tasks.spawn(coro, on_error=self._handler_failed)

    def _on_message(self, message: AppMessage) -> None:
        if message["type"] == "call_offer":
            self._offered(message)
            return
        if message["type"] == "group_invite":
            self._groups.invited(message)
            return
        if message["type"] == "presence_list":
            states = [s for s in message.get("users", []) if isinstance(s, dict) and "user" in s]
            self.presence.update({s["user"]: s for s in states})
            self.emit("presence_list", states)
            return
        if message["type"] == "presence_update":
            user = message.get("user")
            if isinstance(user, str):
                state: PresenceState = {"user": user, "status": message.get("status"),
                                        "text": message.get("text")}  # fmt: skip
                self.presence[user] = state
                self.emit("presence_update", user, state["status"], state["text"])
            return
        kind, call_id = message["type"], message.get("call_id")
        # only calls placed or answered through the relay have an inbox: never a SIP call's id
        inbox = call = None
        if isinstance(call_id, str) and (inbox := self._inboxes.get(call_id)) is not None:
            call = self._calls.get(call_id)
        if message["type"] == "error":
            if call is not None:
                code = str(message.get("code", "call_failed"))
                error = CallError(code, str(message.get("message", "")), call.id)
                self._spawn(call.fail(error, "failed"))
            else:
                text = printable(f"{message.get('code')}: {message.get('message')}")
                logger.warning("relay error: %s", text)
            return
        if call is None or inbox is None:
            logger.debug("message %r for unknown call %r ignored", kind, call_id)
            return
        inbox.put_nowait(message)

    def _offered(self, offer: DeliveredOffer) -> None:
        """An offer arrived: create and register its call at once, before any other message is
        read, so what the caller sends right after (trickled `ice`, `hangup`) reaches the
        call's inbox; then ring in a task."""
        caller = str(offer.get("from", "unknown"))
        port = _CallPort(self, caller)
        call = Call(
            direction="inbound",
            peer=caller,
            signaling=port,
            config=self._call_config(),
            call_id=offer["call_id"],
            remote_offer=offer["sdp"],
            metadata=offer.get("metadata") or {},
            place_call=self._place_for_transfer,
            local_user=self.user_id,
            remote_signature=offer.get("sig"),
        )
        replaced = self._replaced_by(offer)
        if self.max_calls is not None and len(self.active_calls) >= self.max_calls and not replaced:
            self._spawn(call.reject("busy"))
            return
        self._register(call)
        call._spawn(self._ring(call, port, replaced))  # the call's handlers: in its task group

    async def _ring(self, call: Call, port: _CallPort, replaced: Call | None) -> None:
        """Check the caller, say the call rings, and run the handlers for it."""
        try:
            call.verify_offer()
        except IdentityError as exc:
            logger.warning("call %s refused: %s", printable(call.id), printable(exc))
            await call.refuse(exc)
            return
        if replaced is not None:  # the far end of an attended transfer: take it over at once
            await call.answer(video=replaced.has_video)
            await replaced.hangup("transferred")
            return
        with contextlib.suppress(CallbotError):
            await port.send({"type": "call_ringing", "call_id": call.id})
        await self._offer_to_handlers(call, self.user_id)

    async def _offer_to_handlers(self, call: Call, to: str) -> None:
        if not self._handlers:
            logger.warning("%s has no on_incoming handler: declining call %s", self, call.id)
            await call.reject("decline")
            return
        incoming = Incoming(call, to)
        async with anyio.create_task_group() as handlers:
            for handler in self._handlers:
                handlers.start_soon(self._run_handler, handler, incoming, call)

    def _take_sip_call(self, call: Call) -> None:
        """An INVITE arrived (callbot/sip): ring it at the handlers, or 486 when full."""
        if self.max_calls is not None and len(self.active_calls) >= self.max_calls:
            self._spawn(call.reject("busy"))
            return
        self._register(call)
        to = str(call.metadata.get("to") or self.user_id)
        call._spawn(self._offer_to_handlers(call, to))  # the call's handlers: in its task group

    def _replaced_by(self, offer: DeliveredOffer) -> Call | None:
        """The consultation call this offer replaces (attended transfer), if any: named by the
        relay (which stamps it only for a caller holding the transferor's grant, never from
        caller metadata), ours, live, and with the party that did the transfer."""
        replaces, transferred_by = offer.get("replaces"), offer.get("transferred_by")
        old = self._calls.get(replaces) if isinstance(replaces, str) else None
        if old is None or old.state not in ("connected", "held") or old.peer != transferred_by:
            return None
        return old

    async def _run_handler(self, handler: IncomingHandler, incoming: Incoming, call: Call) -> None:
        watchdog.attribute(asyncio.current_task(), call.id)  # the task group gave it a task
        try:
            result = handler(incoming)
            if inspect.isawaitable(result):
                await result
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.exception(
                "call %s: handler %s failed", call.id, getattr(handler, "__name__", handler)
            )
            if call.state != "ended":
                call._cancel_work()  # the call's other handlers and helpers, not other calls'
                call.emit(
                    "error", CallError("handler_failed", f"{type(exc).__name__}: {exc}", call.id)
                )
                await call.hangup("error")
