"""Received VP8 recorded into WebM/Matroska as it arrives: no decoding, no encoding."""

from __future__ import annotations

import asyncio
import fractions
import logging
from pathlib import Path

import av
import numpy as np
import pytest
from aiortc.mediastreams import MediaStreamTrack

from callbot.media import vp8
from callbot.media.writers import VideoItem, Vp8PacketWriter
from callbot.testing import generate

SIZE = (640, 480)


def _packets(path: Path) -> list[av.Packet]:
    """The file's video packets (those holding data), in order."""
    with av.open(str(path)) as container:
        assert container.streams.video[0].codec_context.name == "vp8"
        return [p for p in container.demux(container.streams.video[0]) if p.size]


def _pictures(path: Path) -> list[np.ndarray]:
    """Every picture of the file as grey levels (decoding raises on a broken stream)."""
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="gray") for f in container.decode(container.streams.video[0])]


def _vp8_frames(sizes: list[tuple[int, int]]) -> list[bytes]:
    """VP8 frames of a bar moving across, one per entry of `sizes` (keyframe at each change)."""
    out: list[bytes] = []
    encoder = None
    for i, (width, height) in enumerate(sizes):
        if encoder is None or (encoder.width, encoder.height) != (width, height):
            encoder = av.CodecContext.create("libvpx", "w")
            encoder.width, encoder.height, encoder.pix_fmt = width, height, "yuv420p"
            encoder.time_base = fractions.Fraction(1, 30)
        picture = np.zeros((height, width, 3), np.uint8)
        picture[:, (i * 8) % width :][:, :16] = 255
        frame = av.VideoFrame.from_ndarray(picture, format="rgb24").reformat(format="yuv420p")
        frame.pts = i
        out += [bytes(p) for p in encoder.encode(frame)]
    return out


class MovingBar(MediaStreamTrack):
    """Live pictures (a bar moving across) for aiortc to encode: it sends a keyframe first,
    then only on request (RTCP PLI)."""

    kind = "video"

    def __init__(self) -> None:
        super().__init__()
        self._count = 0

    async def recv(self) -> av.VideoFrame:
        await asyncio.sleep(1 / 30)
        picture = np.zeros((SIZE[1], SIZE[0], 3), np.uint8)
        picture[:, (self._count * 8) % SIZE[0] :][:, :32] = 255
        frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
        frame.pts, frame.time_base = self._count * 3000, fractions.Fraction(1, 90000)
        self._count += 1
        return frame


def test_keyframe_header_gives_the_size() -> None:
    key, inter = _vp8_frames([(320, 240), (320, 240)])
    assert vp8.keyframe_size(key) == (320, 240)
    assert vp8.is_keyframe(key) and not vp8.is_keyframe(inter)
    assert vp8.keyframe_size(inter) is None
    assert vp8.keyframe_size(b"\x00" * 3) is None  # too short: no size, no error


@pytest.mark.parametrize("suffix", [".webm", ".mkv"])
async def test_vp8_stored_as_received(tmp_path: Path, video_pair, suffix: str) -> None:
    caller, callee = video_pair
    clip = generate.write_video(tmp_path / "clip.webm", seconds=3.0, size=SIZE, fps=30)
    target = tmp_path / f"received{suffix}"
    recording = callee.record_incoming(video_path=target)
    assert recording.video is not None and recording.video.passthrough

    assert await caller.send_video_file(clip) == "finished"
    await asyncio.sleep(0.2)
    await recording.stop()

    packets = _packets(target)
    assert packets[0].is_keyframe
    # stored as received, so nothing is dropped by a slow encoder: all 90 frames (3 s at 30 fps)
    assert abs(len(packets) - 90) <= 5, len(packets)
    assert recording.video.dropped == 0
    pictures = _pictures(target)
    assert len(pictures) == len(packets)
    assert pictures[0].shape == (SIZE[1], SIZE[0])
    # the moving pattern moves: pictures a second apart differ clearly
    assert np.abs(pictures[0].astype(int) - pictures[30].astype(int)).mean() > 5


async def test_recording_started_mid_call_starts_with_a_requested_keyframe(
    tmp_path: Path, video_pair
) -> None:
    """aiortc's encoder sends a keyframe only at the start or when asked: a recording begun
    later gets one by asking (RTCP PLI) and drops what comes before it."""
    caller, callee = video_pair
    await caller.set_video_source(MovingBar())
    frames = callee.video_frames()
    async for _ in frames:  # the call's own first keyframe is long gone by the recording
        break
    await asyncio.sleep(1.0)
    target = tmp_path / "late.webm"
    recording = callee.record_incoming(video_path=target)
    await asyncio.sleep(2.0)
    await recording.stop()

    packets = _packets(target)
    assert packets and packets[0].is_keyframe
    assert len(packets) >= 20, len(packets)  # ~60 sent in 2 s; a busy machine sends fewer
    pictures = _pictures(target)
    assert np.abs(pictures[0].astype(int) - pictures[-1].astype(int)).mean() > 5


async def test_recording_resumes_at_a_keyframe_after_deafen(tmp_path: Path, video_pair) -> None:
    """While deafened nothing is stored; after, the file goes on from a (requested) keyframe,
    never from frames referring to pictures it lacks."""
    caller, callee = video_pair
    await caller.set_video_source(MovingBar())
    target = tmp_path / "deafened.webm"
    recording = callee.record_incoming(video_path=target)
    await asyncio.sleep(1.5)
    await callee.deafen()
    await asyncio.sleep(1.0)
    await callee.undeafen()
    await asyncio.sleep(1.5)
    await recording.stop()

    packets = _packets(target)
    times = [float(p.pts * p.time_base) for p in packets]
    gaps = [i for i in range(1, len(times)) if times[i] - times[i - 1] > 0.5]
    assert len(gaps) == 1, times
    assert packets[0].is_keyframe and packets[gaps[0]].is_keyframe
    assert gaps[0] >= 10 and len(packets) - gaps[0] >= 10, (gaps, len(packets))
    assert len(_pictures(target)) == len(packets)


def test_size_change_is_stored_and_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A keyframe of another size goes in as received; players follow it; the log says so."""
    frames = _vp8_frames([(320, 240)] * 10 + [(160, 120)] * 10)
    writer = Vp8PacketWriter(tmp_path / "resized.mkv", SIZE)
    with caplog.at_level(logging.INFO, logger="callbot.media.writers"):
        for i, payload in enumerate(frames):
            writer.write(VideoItem(payload, i * 3000, vp8.is_keyframe(payload)))
        writer.close()

    sizes = [(p.shape[1], p.shape[0]) for p in _pictures(tmp_path / "resized.mkv")]
    assert sizes == [(320, 240)] * 10 + [(160, 120)] * 10
    assert "from 320x240 to 160x120" in caplog.text


def test_nothing_received_still_closes_the_file(tmp_path: Path) -> None:
    """No keyframe ever came: closing still works and leaves a WebM header (as FFmpeg writes
    for a track without frames), not an exception."""
    writer = Vp8PacketWriter(tmp_path / "empty.webm", SIZE)
    writer.close()
    assert (tmp_path / "empty.webm").read_bytes()[:4] == b"\x1a\x45\xdf\xa3"  # EBML magic
