"""Outgoing tracks: real-time pacing, silence/still between playbacks, behaviour after a stall."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

from callbot.media import analysis, generate
from callbot.media.decoder import FileDecoder
from callbot.media.playback import Playback
from callbot.media.tracks import OutgoingAudioTrack, OutgoingVideoTrack


async def test_audio_after_a_stall_no_burst_no_lost_content(tmp_path: Path) -> None:
    track = OutgoingAudioTrack()
    playback = Playback(FileDecoder(generate.write_tone(tmp_path / "t.wav", 440, 3.0)))
    track.play(playback)
    stamps = []
    for index in range(40):
        frame = await track.recv()
        stamps.append((time.monotonic(), frame.pts))
        if index == 10:
            time.sleep(0.3)  # the event loop is blocked
    returned_after_stall = [t for t, _ in stamps[11:] if t - stamps[11][0] < 0.06]
    assert len(returned_after_stall) <= 5  # a burst would deliver ~15 frames at once
    jumps = [b - a for (_, a), (_, b) in itertools.pairwise(stamps)]
    assert max(jumps) >= 0.2 * 48000  # timestamps follow the wall clock across the stall
    assert playback.position == 40 * 0.02  # no content was dropped to catch up
    track.stop()


async def test_silence_before_and_after_a_playback(tmp_path: Path) -> None:
    track = OutgoingAudioTrack()
    before = [await track.recv() for _ in range(5)]
    playback = Playback(FileDecoder(generate.write_tone(tmp_path / "t.wav", 440, 0.2)))
    track.play(playback)
    during = [await track.recv() for _ in range(10)]
    after = [await track.recv() for _ in range(5)]
    assert analysis.level_dbfs(before) == analysis.level_dbfs(after) == float("-inf")
    assert analysis.has_tone(during, 440, min_db=-15)
    assert playback.done.result() == "finished"
    assert [f.pts for f in before + during + after] == [i * 960 for i in range(20)]


async def test_video_keeps_last_frame_after_playback(tmp_path: Path) -> None:
    track = OutgoingVideoTrack((320, 240))
    clip = generate.write_video(
        tmp_path / "v.webm", seconds=0.3, size=(320, 240), fps=30, tone=None
    )
    playback = Playback(FileDecoder(clip, video_size=(320, 240)))
    track.play(playback)
    frames = [(await track.recv()).to_ndarray(format="gray").copy() for _ in range(14)]
    assert playback.done.result() == "finished"
    assert (frames[-1] == frames[-2]).all()  # a still frame, not black
    assert frames[-1].mean() > 60
    track.stop()
