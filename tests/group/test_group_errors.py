"""Group calls that cannot happen, and invitations declined: typed errors, nothing joined."""

from __future__ import annotations

import asyncio
import socket

import pytest
from group_helpers import MEDIA_TIMEOUT
from janus_server import JANUS_ADDRESS

from callbot import Bot, GroupInvite, InvalidStateError, JanusError
from callbot.signaling.relay import Relay


@pytest.mark.parametrize(("audio_only", "code"), [(False, 426), (True, 485)])
async def test_joining_a_room_that_does_not_exist(group_bot, audio_only: bool, code: int) -> None:
    alice = await group_bot("alice")
    with pytest.raises(JanusError) as caught:
        await alice.join_group_call(424242, audio_only=audio_only)
    assert caught.value.code == code and "no such room" in caught.value.reason.lower()
    assert alice.active_rooms == []


async def test_janus_that_does_not_answer() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    bot = Bot("alice", janus_url=f"ws://127.0.0.1:{port}", ice_addresses=[JANUS_ADDRESS])
    with pytest.raises(JanusError) as caught:
        await bot.join_group_call(1)
    assert caught.value.code is None and "cannot connect" in str(caught.value)


async def test_a_bot_needs_to_know_a_janus(relay: Relay, monkeypatch) -> None:
    monkeypatch.delenv("CALLBOT_JANUS_URL", raising=False)
    bot = Bot("alice", server=relay.url, token=relay.mint("alice", role="bot"))
    await bot.start()
    try:
        assert bot.janus_url is None  # this relay announces none
        with pytest.raises(InvalidStateError, match="no Janus server known"):
            await bot.start_group_call()
    finally:
        await bot.stop()


async def test_own_janus_setting_and_declined_invitation(relay: Relay, janus) -> None:
    """The relay announces no Janus: Bot(janus_url=...) is used, and put in the invitation."""
    alice = Bot("alice", server=relay.url, token=relay.mint("alice", role="bot"),
                janus_url=janus.url, ice_addresses=[JANUS_ADDRESS])  # fmt: skip
    bob = Bot("bob", server=relay.url, token=relay.mint("bob", role="bot"))
    invited: asyncio.Future[GroupInvite] = asyncio.get_running_loop().create_future()

    @bob.on_group_invite
    async def refuse(invite: GroupInvite) -> None:
        await invite.decline()
        invited.set_result(invite)

    await alice.start()
    await bob.start()
    try:
        room = await alice.start_group_call(audio_only=True, invite=["bob"])
        invite = await asyncio.wait_for(invited, MEDIA_TIMEOUT)
        assert (invite.from_, invite.room, invite.kind) == ("alice", room.id, "audiobridge")
        assert invite.janus == janus.url == room.janus_url
        with pytest.raises(InvalidStateError, match="declined"):
            await invite.accept()
        assert bob.active_rooms == [] and room.participants == []
        await room.hangup()
        assert room.end_reason == "hangup" and alice.active_rooms == []
        with pytest.raises(JanusError) as caught:  # its creator left it empty: destroyed
            await alice.join_group_call(room.id, audio_only=True)
        assert caught.value.code == 485
    finally:
        await asyncio.gather(alice.stop(), bob.stop())
