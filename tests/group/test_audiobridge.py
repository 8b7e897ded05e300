"""AudioBridge group calls through a real Janus: the mix carries every other participant."""

from __future__ import annotations

import asyncio
from pathlib import Path

from aiortc import AudioStreamTrack, RTCPeerConnection, RTCSessionDescription
from group_helpers import MEDIA_TIMEOUT, RECORD_FRAMES, accept_invites, until
from janus_server import JANUS_ADDRESS

from callbot import Participant
from callbot.group import audiobridge
from callbot.group.janus import JanusSession
from callbot.ice import IceConfig
from callbot.media import analysis
from callbot.peer import set_local_description


async def test_mix_holds_both_tones(group_bot, media, tmp_path: Path) -> None:
    alice, bob, carol = [await group_bot(u) for u in ("alice", "bob", "carol")]
    bob_room = accept_invites(bob)

    room_a = await alice.start_group_call(audio_only=True, invite=["bob"])
    room_a.send_audio_file(media["tone440"], loop=True)
    room_b = await asyncio.wait_for(bob_room, MEDIA_TIMEOUT)
    room_b.send_audio_file(media["tone1000"], loop=True)
    room_c = await carol.join_group_call(room_a.id, audio_only=True)  # no invitation needed
    assert room_c.kind == "audiobridge" and not room_c.has_video

    await room_c.wait_for_participants("alice", "bob", timeout=MEDIA_TIMEOUT)
    mix = room_c.record_incoming(audio_path=tmp_path / "mix.wav")
    await until(lambda: mix.audio.frames >= RECORD_FRAMES)
    await mix.stop()

    levels = {hz: analysis.tone_level_db(tmp_path / "mix.wav", hz) for hz in (440.0, 1000.0)}
    assert analysis.has_tone(tmp_path / "mix.wav", 440.0), levels  # about -12 dBFS each
    assert analysis.has_tone(tmp_path / "mix.wav", 1000.0), levels

    left: list[Participant] = []
    room_c.on("left", left.append)
    await room_a.hangup()
    await until(lambda: left)
    assert [p.display for p in left] == ["alice"] and room_c.participant("alice") is None


async def test_membership_events_say_when_media_is_up(group_bot, janus) -> None:
    """A participant who joins without media is `joined`; once their peer connection is up,
    `published`; leaving gives `unpublished` then `left`."""
    alice = await group_bot("alice")
    room = await alice.start_group_call(audio_only=True)
    seen: list[tuple[str, str]] = []
    for name in ("joined", "published", "unpublished", "left"):
        room.on(name, lambda p, name=name: seen.append((name, p.display)))

    session = await JanusSession.open(janus.url)
    ice = IceConfig(addresses=[JANUS_ADDRESS])
    pc = RTCPeerConnection(ice.rtc_configuration())
    try:
        handle = await session.attach(audiobridge.PLUGIN)
        await handle.send({"request": "join", "room": room.id, "display": "late"})
        await until(lambda: seen)
        assert seen == [("joined", "late")] and not room.participants[0].publishing

        pc.addTransceiver(AudioStreamTrack(), direction="sendrecv")
        offer = await set_local_description(pc, "offer", ice)
        configured = await handle.send({"request": "configure"}, {"type": "offer", "sdp": offer})
        await pc.setRemoteDescription(RTCSessionDescription(configured.jsep["sdp"], "answer"))
        (late,) = await room.wait_for_participants("late", timeout=MEDIA_TIMEOUT)
        assert seen == [("joined", "late"), ("published", "late")] and late.publishing

        await handle.send({"request": "leave"})
        await until(lambda: len(seen) == 4)
        assert seen[2:] == [("unpublished", "late"), ("left", "late")]
    finally:
        await session.close()
        await pc.close()
