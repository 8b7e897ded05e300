"""VideoRoom group calls through a real Janus: each participant recorded apart, VP8 video."""

from __future__ import annotations

import asyncio
from pathlib import Path

import av
import pytest
from aiortc import AudioStreamTrack, RTCPeerConnection, RTCSessionDescription
from group_helpers import MEDIA_TIMEOUT, RECORD_FRAMES, accept_invites, until
from janus_server import JANUS_ADDRESS

from callbot import Participant
from callbot.group import videoroom
from callbot.group.janus import JanusSession
from callbot.ice import IceConfig
from callbot.media import analysis
from callbot.media.recorder import Recording
from callbot.peer import set_local_description


def _video_frames(path: Path) -> list[av.VideoFrame]:
    with av.open(str(path)) as container:
        return list(container.decode(container.streams.video[0]))


async def test_each_participant_is_recorded_apart(group_bot, media, tmp_path: Path) -> None:
    alice, bob, carol = [await group_bot(u) for u in ("alice", "bob", "carol")]
    bob_room, carol_room = accept_invites(bob), accept_invites(carol)

    room_a = await alice.start_group_call(invite=["bob", "carol"])
    joined_a: list[str] = []
    tracks_a: set[tuple[str, str]] = set()
    room_a.on("joined", lambda p: joined_a.append(p.display))
    room_a.on("track", lambda p, kind, track: tracks_a.add((p.display, kind)))
    room_a.send_video_file(media["clip440"], loop=True)
    room_b = await asyncio.wait_for(bob_room, MEDIA_TIMEOUT)
    room_b.send_audio_file(media["tone1000"], loop=True)
    room_c = await asyncio.wait_for(carol_room, MEDIA_TIMEOUT)
    assert room_a.kind == room_c.kind == "videoroom" and room_c.id == room_a.id

    from_a, from_b = await room_c.wait_for_participants("alice", "bob", timeout=MEDIA_TIMEOUT)
    assert from_a.codecs == from_b.codecs == {"audio": "opus", "video": "vp8"}
    bob_frames = room_c.audio_frames(from_b)
    recordings: dict[str, Recording] = {
        "alice": room_c.record_incoming(
            from_a, audio_path=tmp_path / "alice.wav", video_path=tmp_path / "alice.webm"
        ),
        "bob": room_c.record_incoming(from_b, audio_path=tmp_path / "bob.wav"),
    }
    await until(lambda: all(r.audio.frames >= RECORD_FRAMES for r in recordings.values()))
    await asyncio.gather(*(r.stop() for r in recordings.values()))

    heard = {u: analysis.dominant_frequency(tmp_path / f"{u}.wav") for u in ("alice", "bob")}
    assert abs(heard["alice"] - 440.0) <= 5 and abs(heard["bob"] - 1000.0) <= 5, heard
    assert not analysis.has_tone(tmp_path / "alice.wav", 1000.0)  # kept apart, not mixed
    assert not analysis.has_tone(tmp_path / "bob.wav", 440.0)
    video = _video_frames(tmp_path / "alice.webm")  # about 45 (15 fps)
    assert len(video) >= 20, f"{len(video)} video frames from alice"
    assert (video[0].width, video[0].height) == (320, 240)
    assert sorted(joined_a) == ["bob", "carol"]  # both came after alice started the room
    wanted = {(user, kind) for user in ("bob", "carol") for kind in ("audio", "video")}
    await until(lambda: wanted <= tracks_a)

    left_a: list[Participant] = []
    left_c: list[Participant] = []
    room_a.on("left", left_a.append)
    room_c.on("left", left_c.append)
    await room_b.hangup()
    await until(lambda: left_a and left_c)
    assert [p.display for p in left_a + left_c] == ["bob", "bob"] and left_c[0] is from_b
    assert room_c.participant("bob") is None and room_c.participant("alice") is from_a
    received = await asyncio.wait_for(_count(bob_frames), MEDIA_TIMEOUT)  # ends: bob left
    assert received > 0 and room_b.end_reason == "hangup"


async def _count(frames) -> int:
    return sum([1 async for _ in frames])


async def _publish_silence(handle, ice: IceConfig) -> RTCPeerConnection:
    """Publish audio (aiortc's silence track) on a raw VideoRoom handle, as a browser would."""
    pc = RTCPeerConnection(ice.rtc_configuration())
    pc.addTransceiver(AudioStreamTrack(), direction="sendonly")
    offer = await set_local_description(pc, "offer", ice)
    published = await handle.send({"request": "publish"}, {"type": "offer", "sdp": offer})
    await pc.setRemoteDescription(RTCSessionDescription(published.jsep["sdp"], "answer"))
    return pc


async def test_membership_events_follow_joins_and_media_apart(group_bot, janus) -> None:
    """Someone who joins without publishing is `joined`; publishing and unpublishing are
    `published` / `unpublished` (they stay in the room); only leaving is `left`."""
    alice = await group_bot("alice")
    room = await alice.start_group_call(video=False)
    seen: list[tuple[str, str]] = []
    for name in ("joined", "published", "unpublished", "left"):
        room.on(name, lambda p, name=name: seen.append((name, p.display)))

    session = await JanusSession.open(janus.url)
    pc = None
    try:
        handle = await session.attach(videoroom.PLUGIN)
        await handle.send(
            {"request": "join", "ptype": "publisher", "room": room.id, "display": "watcher"}
        )
        await until(lambda: seen)
        (watcher,) = room.participants
        assert seen == [("joined", "watcher")] and not watcher.publishing
        with pytest.raises(TimeoutError, match="not publishing"):
            await room.wait_for_participants("watcher", timeout=0.5)

        pc = await _publish_silence(handle, IceConfig(addresses=[JANUS_ADDRESS]))
        assert await room.wait_for_participants("watcher", timeout=MEDIA_TIMEOUT) == [watcher]
        assert seen[-1] == ("published", "watcher")
        heard = room.audio_frames(watcher)
        await asyncio.wait_for(heard.__anext__(), MEDIA_TIMEOUT)  # we receive them

        await handle.send({"request": "unpublish"})
        await until(lambda: len(seen) == 3)
        assert seen[-1] == ("unpublished", "watcher")
        assert room.participants == [watcher] and not watcher.publishing
        await asyncio.wait_for(_count(heard), MEDIA_TIMEOUT)  # ends: their media stopped

        await handle.send({"request": "leave"})
        await until(lambda: len(seen) == 4)
        assert seen[-1] == ("left", "watcher") and room.participants == []
    finally:
        await session.close()
        if pc is not None:
            await pc.close()
