"""Opening a room: connect to Janus, make the plugin's room object, join (creating if asked)."""

from __future__ import annotations

import secrets

from ..config import CallConfig
from ..errors import CallbotError, CallError
from .audiobridge import AudioBridgeRoom
from .janus import JanusSession
from .room import Room, RoomId, RoomKind
from .videoroom import VideoRoom

ROOM_TYPES: dict[str, type[Room]] = {"videoroom": VideoRoom, "audiobridge": AudioBridgeRoom}
#: Room ids we pick stay below 2**52, exact as JSON numbers in every client (JavaScript too).
MAX_ROOM_ID = 2**52


def new_room_id() -> int:
    """A random room id, unlikely to be in use on the same Janus."""
    return 1 + secrets.randbelow(MAX_ROOM_ID - 1)


async def open_room(
    janus_url: str,
    room_id: RoomId,
    kind: RoomKind,
    *,
    display: str,
    config: CallConfig,
    video: bool = True,
    create: bool = False,
) -> Room:
    """Join room `room_id` of plugin `kind` on the Janus at `janus_url` as `display`, sending
    video too when `video` (VideoRoom only); with `create`, create the room first. Returns once
    our media is connected. Raises `JanusError` with Janus's code when Janus refuses (e.g. 426
    or 485: no such room), `CallError` when media cannot connect."""
    if kind not in ROOM_TYPES:
        raise ValueError(f"kind must be one of {sorted(ROOM_TYPES)}, not {kind!r}")
    session = await JanusSession.open(janus_url)
    room = ROOM_TYPES[kind](
        session, room_id, display=display, config=config, video=video, created=create
    )
    try:
        await room._join()
    except BaseException as exc:
        await room._end("failed")
        if isinstance(exc, CallbotError) or not isinstance(exc, Exception):
            raise
        raise CallError("negotiation_failed", f"{type(exc).__name__}: {exc}") from exc
    return room
