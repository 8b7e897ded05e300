"""Outgoing tracks: real-time pacing, silence/still between playbacks, behaviour after a stall,
Opus packets from the shared prompt cache, VP8 packets then a still frame."""

from __future__ import annotations

import fractions
import itertools
import time
from pathlib import Path

import av
import numpy as np

from callbot.media import analysis, opus
from callbot.media.cache import PROMPTS
from callbot.media.clock import AUDIO_TICKER
from callbot.media.decoder import FileDecoder
from callbot.media.feeds import FileFeed, open_feed
from callbot.media.playback import Playback
from callbot.media.tracks import OutgoingAudioTrack, OutgoingVideoTrack
from callbot.testing import generate


def _decoded(packets: list[av.Packet]) -> list[av.AudioFrame]:
    decoder = opus.OpusDecoder()
    return [f for p in packets for f in decoder.decode(bytes(p), p.pts)]


async def test_audio_after_a_stall_no_burst_no_lost_content(tmp_path: Path) -> None:
    dropped_before = AUDIO_TICKER.dropped
    track = OutgoingAudioTrack()
    playback = Playback(open_feed(generate.write_tone(tmp_path / "t.wav", 440, 3.0)))
    track.play(playback)
    stamps = []
    for index in range(40):
        packet = await track.recv()
        stamps.append((time.monotonic(), packet.pts))
        if index == 10:
            time.sleep(0.3)  # the event loop is blocked
    returned_after_stall = [t for t, _ in stamps[11:] if t - stamps[11][0] < 0.06]
    assert len(returned_after_stall) <= 5  # a burst would deliver ~15 packets at once
    jumps = [b - a for (_, a), (_, b) in itertools.pairwise(stamps)]
    assert max(jumps) >= 0.2 * 48000  # timestamps follow the wall clock across the stall
    assert track.dropped >= 10  # the skipped 20 ms slots are counted
    assert AUDIO_TICKER.dropped - dropped_before == track.dropped  # and for the process
    assert AUDIO_TICKER.lag_percentile(100) >= 0.2  # the clock saw the event loop stall
    assert playback.position == 40 * 0.02  # no content was dropped to catch up
    track.stop()


async def test_silence_before_and_after_a_playback(tmp_path: Path) -> None:
    track = OutgoingAudioTrack()
    before = [await track.recv() for _ in range(5)]
    playback = Playback(open_feed(generate.write_tone(tmp_path / "t.wav", 440, 0.2)))
    track.play(playback)
    during = [await track.recv() for _ in range(12)]
    after = [await track.recv() for _ in range(5)]
    assert all(isinstance(p, av.Packet) for p in before + during + after)
    assert {bytes(p) for p in before + after} == {opus.silent_payload()}
    assert analysis.has_tone(_decoded(during), 440, min_db=-15)
    assert playback.done.result() == "finished"
    assert [p.pts for p in before + during + after] == [i * 960 for i in range(22)]


async def test_a_prompt_is_encoded_once_for_every_call(tmp_path: Path) -> None:
    prompt = generate.write_tone(tmp_path / "shared.wav", 660, 1.0)
    before = PROMPTS.encodes
    tracks = [OutgoingAudioTrack() for _ in range(5)]
    for track in tracks:
        track.play(Playback(open_feed(prompt)))
    sent = [[bytes(await track.recv()) for _ in range(30)] for track in tracks]
    assert PROMPTS.encodes == before + 1  # one encoding job for five calls
    assert all(s == sent[0] for s in sent)  # the very same packets
    assert abs(analysis.dominant_frequency(_decoded([opus.packet(p, 0) for p in sent[0]]))
               - 660) < 5  # fmt: skip


async def test_frames_still_work_for_calls_without_opus(tmp_path: Path) -> None:
    track = OutgoingAudioTrack()
    track.opus = False  # e.g. the peer only took PCMU: aiortc encodes frames
    track.play(Playback(open_feed(generate.write_tone(tmp_path / "t.wav", 440, 0.5))))
    frames = [await track.recv() for _ in range(20)]
    assert all(isinstance(f, av.AudioFrame) for f in frames)
    assert analysis.has_tone(frames[5:], 440, min_db=-15)


async def test_video_keeps_last_frame_after_playback(tmp_path: Path) -> None:
    track = OutgoingVideoTrack((320, 240))
    clip = generate.write_video(tmp_path / "v.webm", seconds=0.3, size=(320, 240), fps=30,
                                tone=None)  # fmt: skip
    playback = Playback(FileFeed(FileDecoder(clip, video_size=(320, 240))))
    track.play(playback)
    frames = [(await track.recv()).to_ndarray(format="gray").copy() for _ in range(14)]
    assert playback.done.result() == "finished"
    assert (frames[-1] == frames[-2]).all()  # a still frame, not black
    assert frames[-1].mean() > 60
    track.stop()


async def test_cached_video_goes_out_as_vp8_packets_then_a_still(tmp_path: Path) -> None:
    track = OutgoingVideoTrack((320, 240))
    keyframes_asked: list[bool] = []
    track.keyframe_needed = lambda: keyframes_asked.append(True)
    clip = generate.write_video(tmp_path / "v.webm", seconds=0.5, size=(320, 240), fps=30,
                                tone=None)  # fmt: skip
    playback = Playback(open_feed(clip, video_size=(320, 240)))
    track.play(playback)
    sent = [await track.recv() for _ in range(22)]
    packets = [s for s in sent if isinstance(s, av.Packet)]
    assert len(packets) == 15  # every encoded frame of the 0.5 s clip, in order
    assert all(isinstance(s, av.Packet) for s in sent[:15])  # no picture breaks the stream
    assert isinstance(sent[-1], av.VideoFrame) and sent[-1].to_ndarray(format="gray").mean() > 60
    assert keyframes_asked == [True]  # aiortc's encoder restarts with a full picture
    decoder = av.CodecContext.create("libvpx", "r")
    decoded = [f for p in packets for f in decoder.decode(av.Packet(bytes(p)))]
    assert len(decoded) == len(packets) and decoded[0].width == 320
    track.stop()


async def test_a_gap_between_video_packets_sends_nothing_rather_than_a_picture(
    tmp_path: Path,
) -> None:
    # 10 fps with frames 3 and 4 missing (variable frame rate, as screen captures have)
    clip = tmp_path / "vfr.webm"
    with av.open(str(clip), "w") as container:
        stream = container.add_stream("libvpx", rate=10)
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
        stream.codec_context.time_base = fractions.Fraction(1, 10)
        for index in (0, 1, 2, 5, 6, 7, 8, 9):
            frame = av.VideoFrame.from_ndarray(np.full((120, 160, 3), index * 25, np.uint8))
            frame = frame.reformat(format="yuv420p")
            frame.pts, frame.time_base = index, fractions.Fraction(1, 10)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    track = OutgoingVideoTrack((160, 120))
    keyframes_asked: list[bool] = []
    track.keyframe_needed = lambda: keyframes_asked.append(True)
    track.play(Playback(open_feed(clip, video_size=(160, 120))))
    started = time.monotonic()
    sent = [await track.recv() for _ in range(9)]
    assert [type(s) for s in sent] == [av.Packet] * 8 + [av.VideoFrame]
    assert time.monotonic() - started > 0.9  # the packets kept their timing across the gap
    assert keyframes_asked == [True]  # only once the file was over
    track.stop()
