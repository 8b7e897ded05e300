"""Helpers shared by the group-call tests (importable: tests/group is on sys.path)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from callbot import Bot, GroupInvite, Room

from helpers import eventually

#: Seconds of audio a recording must hold before it is checked (counted in 20 ms frames).
RECORD_SECONDS = 3.0
RECORD_FRAMES = round(RECORD_SECONDS / 0.02)
#: Generous limit for anything that involves Janus, ICE and media on a busy machine.
MEDIA_TIMEOUT = 30.0


def accept_invites(bot: Bot) -> asyncio.Future[Room]:
    """Make `bot` accept its invitations (with video); the future holds the first room."""
    joined: asyncio.Future[Room] = asyncio.get_running_loop().create_future()

    @bot.on_group_invite
    async def accept(invite: GroupInvite) -> None:
        room = await invite.accept()
        if not joined.done():
            joined.set_result(room)

    return joined


async def until(condition: Callable[[], object], timeout: float = MEDIA_TIMEOUT) -> None:
    """`eventually()` with the group tests' generous Janus timeout."""
    await eventually(condition, timeout=timeout, interval=0.1)
