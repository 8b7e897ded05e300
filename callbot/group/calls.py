"""A bot's group calls: starting and joining rooms, inviting users, handling invitations.

`Bot` delegates its group-call API here. Invitations travel through the relay as
`group_invite` messages (docs/protocol.md): they name the room, its plugin and the Janus that
hosts it, so the invitee joins the same room on the same server. Which Janus a bot uses to
start rooms: `Bot(janus_url=...)`, else `$CALLBOT_JANUS_URL`, else the one the relay announces
in `welcome` (`callbot serve --janus URL`).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from ..config import CallConfig
from ..errors import InvalidStateError
from ..safe import get_logger
from ..signaling.messages import DeliveredInvite
from ..signaling.messages import GroupInvite as InviteMessage
from .join import ROOM_TYPES, new_room_id, open_room
from .room import Room, RoomId, RoomKind

logger = get_logger(__name__)

ENV_JANUS_URL = "CALLBOT_JANUS_URL"

InviteHandler = Callable[["GroupInvite"], Awaitable[None] | None]
SendToRelay = Callable[[InviteMessage], Awaitable[None]]


class GroupInvite:
    """An invitation to a group call: join it with `accept()` or refuse it with `decline()`.

    `room` is the room id, `kind` "videoroom" or "audiobridge", `from_` who invited us,
    `janus` the URL of the Janus that hosts the room.
    """

    def __init__(
        self, calls: GroupCalls, *, room: RoomId, kind: RoomKind, from_: str, janus: str
    ) -> None:
        self.room = room
        self.kind = kind
        self.from_ = from_
        self.janus = janus
        self._calls = calls
        self._joining: asyncio.Future[Room] | None = None
        self._declined = False

    async def accept(self, video: bool = True) -> Room:
        """Join the room (sending video too when `video`, in a VideoRoom); returns once our
        media is connected. Accepting twice returns the same room."""
        if self._declined:
            raise InvalidStateError("this invitation was declined")
        if self._joining is None:
            self._joining = self._calls.spawn(
                self._calls.join(self.room, kind=self.kind, video=video, janus_url=self.janus)
            )
        return await asyncio.shield(self._joining)

    async def decline(self) -> None:
        """Do not join. The inviter is not told: invitations have no reply, and the room
        shows who joins."""
        if self._joining is not None:
            raise InvalidStateError("this invitation was already accepted")
        self._declined = True

    @property
    def accepted(self) -> Room | None:
        """The room, once `accept()` has joined it."""
        joining = self._joining
        if joining is None or not joining.done() or joining.cancelled() or joining.exception():
            return None
        return joining.result()

    def __repr__(self) -> str:
        return f"<GroupInvite {self.kind} {self.room} from {self.from_}>"


class GroupCalls:
    """The group-call side of one bot: its rooms, invitation handlers and Janus URL."""

    def __init__(
        self,
        display: str,
        janus_url: str | None,
        config: Callable[[], CallConfig],
        send: SendToRelay,
    ) -> None:
        self.display = display
        #: The Janus the relay announced in its last `welcome`, if any.
        self.relay_janus_url: str | None = None
        #: The Janus given to this bot (`janus_url=`, $CALLBOT_JANUS_URL), if any.
        self.own_janus_url = janus_url
        self._config = config
        self._send = send
        self._handlers: list[InviteHandler] = []
        self._rooms: set[Room] = set()
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def janus_url(self) -> str | None:
        """Where rooms are started: the bot's own setting, else what the relay announced."""
        return self.own_janus_url or self.relay_janus_url

    @property
    def rooms(self) -> list[Room]:
        """Rooms we are in."""
        return [r for r in self._rooms if r.state != "ended"]

    def on_invite(self, handler: InviteHandler) -> InviteHandler:
        self._handlers.append(handler)
        return handler

    async def start(
        self, invite: Iterable[str] = (), *, audio_only: bool = False, video: bool = True
    ) -> Room:
        """Create a room (AudioBridge when `audio_only`, else VideoRoom), join it, and invite
        `invite` through the relay. An invitee who is offline is logged (relay error
        `user_offline`); the room goes on."""
        kind: RoomKind = "audiobridge" if audio_only else "videoroom"
        room = await self.join(new_room_id(), kind=kind, video=video, create=True)
        try:
            for user in invite:
                await self._send(
                    {
                        "type": "group_invite",
                        "to": user,
                        "room": room.id,
                        "kind": kind,
                        "janus": room.janus_url,
                    }
                )
        except BaseException:  # e.g. the bot is not connected: nobody gets a half-made room
            await room.hangup()
            raise
        return room

    async def join(
        self,
        room_id: RoomId,
        *,
        kind: RoomKind = "videoroom",
        video: bool = True,
        janus_url: str | None = None,
        create: bool = False,
    ) -> Room:
        """Join room `room_id` (created first with `create`) on `janus_url` or ours."""
        url = janus_url or self.janus_url
        if url is None:
            raise InvalidStateError(
                "no Janus server known: pass Bot(janus_url=...), set "
                f"{ENV_JANUS_URL}, or start the relay with --janus"
            )
        room = await open_room(
            url,
            room_id,
            kind,
            display=self.display,
            config=self._config(),
            video=video,
            create=create,
        )
        self._rooms.add(room)
        room.on("ended", lambda reason: self._rooms.discard(room))
        return room

    def invited(self, message: DeliveredInvite) -> None:
        """A `group_invite` arrived from the relay: run every handler on it."""
        kind, janus = message.get("kind"), message.get("janus") or self.janus_url
        if kind not in ROOM_TYPES or janus is None:
            logger.warning("ignoring group invite without a usable room or Janus: %s", message)
            return
        invite = GroupInvite(
            self,
            room=message["room"],
            kind=kind,
            janus=janus,
            from_=str(message.get("from", "unknown")),
        )
        if not self._handlers:
            logger.info("%s has no on_group_invite handler: ignoring %r", self.display, invite)
            return
        for handler in self._handlers:
            self.spawn(self._run(handler, invite))

    def spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        """Run `coro` as a task that `stop()` cancels (invitation handlers, joins)."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def stop(self) -> None:
        """Stop invitation handlers and joins under way; leave every room."""
        tasks = [t for t in self._tasks if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)  # a cancelled join cleans up
        await asyncio.gather(*(r.hangup() for r in self.rooms), return_exceptions=True)

    async def _run(self, handler: InviteHandler, invite: GroupInvite) -> None:
        """Run one handler; if it fails, log it and leave the room it joined, if any."""
        try:
            result = handler(invite)
            if inspect.isawaitable(result):
                await result
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception(
                "group invite %r: handler %s failed", invite, getattr(handler, "__name__", handler)
            )
            room = invite.accepted
            if room is not None:
                await room.hangup()
