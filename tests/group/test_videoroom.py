"""VideoRoom group calls through a real Janus: each participant recorded apart, VP8 video."""

from __future__ import annotations

import asyncio
from pathlib import Path

import av
from group_helpers import MEDIA_TIMEOUT, RECORD_FRAMES, accept_invites, until

from callbot import Participant
from callbot.media import analysis
from callbot.media.recorder import Recording


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
