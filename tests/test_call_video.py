"""Video through real aiortc peers (VP8 on the wire): playback, scaling, recording."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import av
import numpy as np
import pytest

from callbot import Call, InvalidStateError
from callbot.config import CallConfig
from callbot.direct import connect_direct
from callbot.media import analysis
from callbot.media.cache import PROMPTS
from callbot.testing import generate

from helpers import collect_frames


def _count_frames(path: Path) -> tuple[int, tuple[int, int]]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = list(container.decode(stream))
    return len(frames), (frames[0].width, frames[0].height)


@pytest.fixture
def clip_640(tmp_path: Path) -> Path:
    return generate.write_video(tmp_path / "clip.webm", seconds=3.0, size=(640, 480), fps=30)


@pytest.fixture
def clip_720p(tmp_path: Path) -> Path:
    return generate.write_video(tmp_path / "wide.mp4", seconds=1.0, size=(1280, 720), fps=30)


@pytest.mark.parametrize("suffix", [".mp4", ".webm"])
async def test_video_recorded_with_expected_frames_and_size(
    clip_640: Path, tmp_path: Path, video_pair, suffix: str
) -> None:
    caller, callee = video_pair
    target = tmp_path / f"received{suffix}"
    recording = callee.record_incoming(video_path=target, audio_path=tmp_path / "sound.wav")

    result = await caller.send_video_file(clip_640)
    await asyncio.sleep(0.1)
    await recording.stop()

    assert result == "finished"
    count, size = _count_frames(target)
    assert size == (640, 480)
    expected = 90  # 3 s at 30 fps
    # frames an encoder slower than real time (a busy machine) cannot take are dropped, counted
    dropped = recording.video.dropped
    assert abs(count + dropped - expected) <= 0.1 * expected, (count, dropped)
    assert count >= 0.5 * expected, (count, dropped)
    # the file's own soundtrack came along on the audio track
    assert abs(analysis.dominant_frequency(tmp_path / "sound.wav") - 440.0) <= 5.0


async def test_large_source_is_scaled_to_call_size(clip_720p: Path, video_pair) -> None:
    caller, callee = video_pair
    frames = callee.video_frames()
    playback = caller.send_video_file(clip_720p, loop=True)
    received = await collect_frames(frames, 1.5)
    playback.stop()

    assert len(received) > 20
    last = received[-1]
    assert (last.width, last.height) == (640, 480)
    luma = last.to_ndarray(format="gray")
    # 16:9 in 4:3 is letterboxed: black bars above and below, the picture in between
    assert luma[:40].mean() < 30 and luma[-40:].mean() < 30
    assert luma[120:360].mean() > 60


async def test_moving_pattern_moves(clip_640: Path, video_pair) -> None:
    caller, callee = video_pair
    frames = callee.video_frames()
    caller.send_video_file(clip_640)
    received = await collect_frames(frames, 1.5)
    positions = {int(np.argmax(f.to_ndarray(format="gray")[240])) for f in received[-20:]}
    assert len(positions) > 10  # the white bar is somewhere new in most frames


async def _receive_video(
    caller: Call, callee: Call, clip: Path, seconds: float
) -> list[tuple[float, int]]:
    """(arrival time, RTP timestamp) of each frame `callee` receives while `caller` plays."""
    frames = callee.video_frames()
    caller.send_video_file(clip)
    received: list[tuple[float, int]] = []
    deadline = time.monotonic() + seconds
    async for frame in frames:
        received.append((time.monotonic(), frame.pts))
        if time.monotonic() > deadline:
            break
    return received


async def test_video_frames_are_stamped_and_sent_evenly(tmp_path: Path) -> None:
    # 30 fps with a soundtrack: audio's 20 ms steps drive the playback's clock, so frames fall
    # due unevenly; each must still leave in a tick of its own, 3000 (90 kHz) after the last.
    # They went out two at once every third frame (stamped 3000/0/6000 apart, sent 33/0/67 ms)
    # in some phases of the call's video clock against the audio (most calls): five calls.
    clip = generate.write_video(tmp_path / "small.webm", seconds=4.0, size=(160, 120), fps=30)
    prompt = PROMPTS.get(clip, (160, 120))  # encoded before, not while, it plays
    while prompt is not None and not prompt.done():
        await asyncio.sleep(0.05)
    config = CallConfig(video_size=(160, 120))  # cheap to encode and decode on a loaded host
    pairs = [
        await connect_direct(video=True, caller_config=config, callee_config=config)
        for _ in range(5)
    ]
    try:
        results = await asyncio.gather(*(_receive_video(a, b, clip, 3.0) for a, b in pairs))
    finally:
        await asyncio.gather(*(c.hangup() for pair in pairs for c in pair), return_exceptions=True)
    for received in results:
        steady = received[15:]  # past the start (the first keyframe, the switch from the still)
        assert len(steady) > 40
        steps = np.diff([pts for _, pts in steady])
        even = np.count_nonzero(np.abs(steps - 3000) <= 300)
        assert even >= 0.9 * len(steps), steps.tolist()
        spacing = np.diff([at for at, _ in steady])
        late = np.count_nonzero(spacing > 0.055)  # every third frame, before; a few under load
        assert late <= 0.25 * len(spacing), np.round(spacing * 1000).tolist()


async def test_video_mute_sends_black(clip_640: Path, video_pair) -> None:
    caller, callee = video_pair
    statuses: list[tuple[bool, bool]] = []
    callee.on("mediastatus", lambda audio, video: statuses.append((audio, video)))
    frames = callee.video_frames()
    caller.send_video_file(clip_640, loop=True)
    await collect_frames(frames, 0.5)
    await caller.mute("video")
    await collect_frames(frames, 0.4)
    muted = await collect_frames(frames, 0.5)
    assert statuses == [(False, True)]
    assert muted and all(f.to_ndarray(format="gray").mean() < 25 for f in muted)


async def test_send_video_file_needs_a_video_call(clip_640: Path, call_pair) -> None:
    caller, _ = call_pair
    with pytest.raises(InvalidStateError, match="sends no video"):
        caller.send_video_file(clip_640)
    assert caller.state == "connected"
