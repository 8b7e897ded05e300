"""Audio through real aiortc peers on 127.0.0.1: playback, recording, stop, loop, mute, errors."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from callbot import MediaError
from callbot.media import analysis
from callbot.testing import generate

from helpers import collect_frames


@pytest.mark.parametrize(
    ("suffix", "rate", "channels"),
    [(".wav", 44100, 1), (".mp3", 22050, 2), (".ogg", 48000, 2)],
)
async def test_tone_file_arrives_with_its_frequency_and_length(
    call_pair, tone_file, tmp_path: Path, suffix: str, rate: int, channels: int
) -> None:
    caller, callee = call_pair
    source = tone_file(suffix, 440.0, seconds=3.0, rate=rate, channels=channels)
    recording = callee.record_incoming(audio_path=tmp_path / "received.wav")

    result = await caller.send_audio_file(source)
    await asyncio.sleep(0.4)  # the last packets are still in flight
    await recording.stop()

    assert result == "finished"
    clip = analysis.load_audio(tmp_path / "received.wav")
    assert abs(analysis.dominant_frequency(clip) - 440.0) <= 5.0
    # all of the file arrived, whatever pause a busy machine may have put in the middle
    assert abs(analysis.active_seconds(clip) - 3.0) <= 0.03 * 3.0


async def test_both_directions_at_once(call_pair, tone_file, tmp_path: Path) -> None:
    caller, callee = call_pair
    low, high = tone_file(".wav", 440.0, seconds=2.0), tone_file(".ogg", 1000.0, seconds=2.0)
    to_callee = callee.record_incoming(audio_path=tmp_path / "at-callee.wav")
    to_caller = caller.record_incoming(audio_path=tmp_path / "at-caller.ogg")

    results = await asyncio.gather(caller.send_audio_file(low), callee.send_audio_file(high))
    await asyncio.sleep(0.4)
    await asyncio.gather(to_callee.stop(), to_caller.stop())

    assert results == ["finished", "finished"]
    assert abs(analysis.dominant_frequency(tmp_path / "at-callee.wav") - 440.0) <= 5.0
    assert abs(analysis.dominant_frequency(tmp_path / "at-caller.ogg") - 1000.0) <= 5.0


async def test_stop_completes_at_once_then_silence_arrives(call_pair, tone_file) -> None:
    caller, callee = call_pair
    source = tone_file(".wav", 440.0, seconds=10.0)
    frames = callee.audio_frames()
    playback = caller.send_audio_file(source)
    playing = await collect_frames(frames, 1.0)
    assert analysis.has_tone(playing[-25:], 440.0, min_db=-20)

    started = time.monotonic()
    playback.stop()
    result = await asyncio.wait_for(playback, 1.0)
    assert time.monotonic() - started < 0.1
    assert result == "stopped"
    assert playback.done.result() == "stopped"

    await collect_frames(frames, 0.3)  # what was already in flight
    after = await collect_frames(frames, 1.0)
    assert len(after) >= 40
    assert analysis.level_dbfs(after) < -50


async def test_loop_has_no_gap(call_pair, tmp_path: Path) -> None:
    caller, callee = call_pair
    # 1.013 s at 44.1 kHz: the seam falls mid-frame, where padding would leave a hole.
    source = generate.write_tone(tmp_path / "short.wav", 440.0, seconds=1.013, rate=44100)
    frames = callee.audio_frames()
    playback = caller.send_audio_file(source, loop=True)

    received = await collect_frames(frames, 5.5)
    playback.stop()

    clip = analysis.to_clip(received)
    span = analysis.active_span(clip)
    assert span is not None and span[1] - span[0] > 5.0
    inner = clip.slice(span[0], span[1])
    gaps = analysis.silent_spans(inner, threshold_db=-40, min_duration=0.04)
    assert gaps == []
    assert abs(analysis.dominant_frequency(inner) - 440.0) <= 5.0
    assert playback.position > 5.0


async def test_second_playback_replaces_the_first(call_pair, tone_file) -> None:
    caller, callee = call_pair
    low, high = tone_file(".wav", 440.0, seconds=10.0), tone_file(".wav", 1000.0, seconds=10.0)
    frames = callee.audio_frames()
    first = caller.send_audio_file(low)
    await asyncio.sleep(0.5)
    second = caller.send_audio_file(high)

    assert await asyncio.wait_for(first, 1.0) == "stopped"
    assert not second.done.done()
    await collect_frames(frames, 0.8)
    now = await collect_frames(frames, 1.0)
    assert abs(analysis.dominant_frequency(now) - 1000.0) <= 5.0


async def test_mute_sends_silence_and_tells_the_peer(call_pair, tone_file) -> None:
    caller, callee = call_pair
    statuses: list[tuple[bool, bool]] = []
    callee.on("mediastatus", lambda audio, video: statuses.append((audio, video)))
    source = tone_file(".wav", 440.0, seconds=1.0)
    frames = callee.audio_frames()
    playback = caller.send_audio_file(source, loop=True)
    await collect_frames(frames, 0.6)

    await caller.mute("audio")
    assert caller.is_muted
    await collect_frames(frames, 0.3)
    muted = await collect_frames(frames, 1.0)
    assert statuses == [(True, False)]
    assert analysis.level_dbfs(muted) < -50
    assert not playback.done.done()  # the playback kept running underneath

    await caller.unmute("audio")
    await collect_frames(frames, 0.3)
    back = await collect_frames(frames, 1.0)
    assert statuses == [(True, False), (False, False)]
    assert analysis.has_tone(back, 440.0, min_db=-20)


@pytest.fixture
def bad_files(tmp_path: Path) -> dict[str, Path]:
    """Unplayable files, keyed by the reason the error must give (made before the call starts:
    encoding them would stall the event loop the media is paced on)."""
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    noise = tmp_path / "noise.ogg"
    noise.write_bytes(bytes(range(256)) * 64)
    text = tmp_path / "notes.mp3"
    text.write_text("this is not audio\n" * 100)
    silent_video = generate.write_video(tmp_path / "no-sound.webm", seconds=0.5, tone=None)
    return {
        "file not found": tmp_path / "missing.wav",
        "file is empty": empty,
        "not a readable media file": noise,
        "notes.mp3": text,
        "no audio stream": silent_video,
        "not a regular file": tmp_path,
    }


async def test_bad_files_raise_media_error_and_the_call_goes_on(
    bad_files, tone_file, tmp_path: Path, call_pair
) -> None:
    caller, callee = call_pair
    for expected, path in bad_files.items():
        with pytest.raises(MediaError) as caught:
            caller.send_audio_file(path)
        assert str(path) in str(caught.value)
        assert expected in str(caught.value), str(caught.value)
    assert caller.state == callee.state == "connected"

    valid = tone_file(".mp3", 440.0, seconds=2.0)
    recording = callee.record_incoming(audio_path=tmp_path / "after.wav")
    assert await caller.send_audio_file(valid) == "finished"
    await asyncio.sleep(0.4)
    await recording.stop()
    clip = analysis.load_audio(tmp_path / "after.wav")
    assert abs(analysis.active_seconds(clip) - 2.0) <= 0.06
    assert abs(analysis.dominant_frequency(clip) - 440.0) <= 5.0


async def test_unwritable_record_path_raises_at_once(call_pair, tmp_path: Path) -> None:
    _, callee = call_pair
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(MediaError, match="cannot write"):
        callee.record_incoming(audio_path=blocker / "sub" / "rec.wav")
    with pytest.raises(MediaError, match=r"cannot record audio to '\.txt'"):
        callee.record_incoming(audio_path=tmp_path / "rec.txt")
    with pytest.raises(MediaError, match=r"cannot record video to '\.wav'"):
        callee.record_incoming(video_path=tmp_path / "rec.wav")
    assert callee.state == "connected"


@pytest.mark.parametrize("suffix", [".ogg", ".mp4", ".webm", ".mkv", ".mp3"])
async def test_record_formats(call_pair, tone_file, tmp_path: Path, suffix: str) -> None:
    caller, callee = call_pair
    path = tmp_path / f"received{suffix}"
    source = tone_file(".wav", 660.0, seconds=1.5)
    recording = callee.record_incoming(audio_path=path)
    await caller.send_audio_file(source)
    await asyncio.sleep(0.4)
    await recording.stop()
    clip = analysis.load_audio(path)
    assert abs(analysis.dominant_frequency(clip) - 660.0) <= 5.0
    assert abs(analysis.active_seconds(clip) - 1.5) <= 0.1
