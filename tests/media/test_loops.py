"""Looping an encoded prompt: no click at the seam, whatever the file's length, and video that
stays with the audio pass after pass."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import av
import numpy as np
import pytest

from callbot.media import analysis, loops
from callbot.media.cache import PROMPTS
from callbot.media.feeds import PromptFeed, open_feed
from callbot.media.opus import OpusDecoder
from callbot.testing import generate

from helpers import eventually

RATE = 48000


async def _looped_audio(feed: PromptFeed, seconds: float) -> np.ndarray:
    """Mono samples of `seconds` of the feed, decoded as a receiver would."""
    await _ready(feed)
    decoder, out = OpusDecoder(), []
    for index in range(round(seconds / 0.02)):
        payload = feed.next_audio()
        assert payload is not None, f"no packet at {index * 0.02:.2f} s"
        out += decoder.decode(payload, index * 960)
    return np.concatenate([f.to_ndarray().reshape(-1, 2)[:, 0] for f in out]) / 32768


async def _ready(feed: PromptFeed) -> None:
    await eventually(lambda: feed._prompt.loop_length, "the loop to be encoded")


def _misfit(samples: np.ndarray, frequency: float) -> np.ndarray:
    """For each 10 ms window: how far the samples are from a clean sine (RMS of the residual
    of a least-squares sine fit). A click or phase jump at a seam shows as a spike."""
    size = RATE // 100
    t = np.arange(size) / RATE
    basis = np.stack([np.sin(2 * np.pi * frequency * t), np.cos(2 * np.pi * frequency * t)], 1)
    out = []
    for start in range(0, samples.size - size, size):
        window = samples[start : start + size]
        coeffs, *_ = np.linalg.lstsq(basis, window, rcond=None)
        out.append(np.sqrt(np.mean((window - basis @ coeffs) ** 2)))
    return np.array(out)


@pytest.mark.parametrize(
    ("seconds", "frequency"),
    [(1.0, 523.0), (0.5, 440.0), (1.01, 500.0)],  # 1.01 s: two passes line up with 20 ms
)
async def test_looped_tone_has_no_seam(tmp_path: Path, seconds: float, frequency: float) -> None:
    # whole cycles per pass, so the looped signal is one unbroken sine
    tone = generate.write_tone(tmp_path / "t.wav", frequency, seconds, amplitude=0.4)
    samples = await _looped_audio(open_feed(tone, loop=True), 3.5 * seconds + 0.2)
    misfit = _misfit(samples[2 * 480 :], frequency)  # after the encoder's first frame
    # a seam replayed from the file's own packets misfits by ~0.1; the encoder's own noise
    # stays under 0.005
    assert misfit.max() < 0.01, f"worst 10 ms window misfits by {misfit.max():.3f}"
    # 0.4 of full scale reads -11 dBFS; the mono file is spread over two channels at -3 dB
    assert analysis.tone_level_db(samples[RATE:], frequency, RATE) > -15.5


async def test_a_pass_that_cannot_line_up_is_padded_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(loops, "MAX_CYCLE_SECONDS", 1.0)
    # 0.305 s = 14640 samples: 61 passes would be needed to line up with the 20 ms grid
    tone = generate.write_tone(tmp_path / "odd.wav", 1000.0, 0.305, amplitude=0.4)
    with caplog.at_level(logging.WARNING):
        feed = open_feed(tone, loop=True)
        samples = await _looped_audio(feed, 2.0)
    assert "not a multiple of 20 ms" in caplog.text
    assert feed._prompt.loop_length == pytest.approx(0.32)  # padded to 16 frames
    levels, step = analysis.window_levels(samples, 0.005, RATE)
    quiet = np.flatnonzero(levels < -40) * step
    seams = np.unique(np.round((quiet - 0.31) / 0.32))  # each quiet spell is one seam
    assert len(seams) >= 5 and quiet.size * step < 6 * 0.02  # under 20 ms per seam


async def test_looped_video_stays_with_its_audio(tmp_path: Path) -> None:
    # each pass: a 0.2 s beep and the bar at the far left, 1.46 s of audio, 1.5 s of video
    clip = generate.write_video(
        tmp_path / "c.webm", seconds=1.46, size=(320, 240), fps=10, tone=1000.0, tone_seconds=0.2
    )
    feed = open_feed(clip, video_size=(320, 240), loop=True)
    await _ready(feed)
    audio_decoder, video_decoder = OpusDecoder(), av.CodecContext.create("vp8", "r")
    audio, video_starts = [], []
    for index in range(round(6.5 / 0.02)):
        media_time = index * 0.02
        payload = feed.next_audio()
        assert payload is not None
        audio += audio_decoder.decode(payload, index * 960)
        packet = feed.video_due(media_time)
        if packet is not None:
            for frame in video_decoder.decode(av.Packet(packet.payload)):
                if np.argmax(frame.to_ndarray(format="gray")[120]) < 4:
                    video_starts.append(media_time)
    levels, step = analysis.window_levels(audio, 0.005)
    loud = levels > -30
    audio_starts = [i * step for i in range(1, len(loud)) if loud[i] and not loud[i - 1]]
    assert len(video_starts) >= 4 and len(audio_starts) >= 3
    for audio_start in audio_starts:  # every pass's beep has its bar within a video frame
        assert min(abs(v - audio_start) for v in video_starts) < 0.1 + 0.02
    assert np.ptp(np.diff(video_starts)) < 0.03


async def test_the_loop_is_encoded_once(tmp_path: Path) -> None:
    tone = generate.write_tone(tmp_path / "t.wav", 440.0, 0.4)
    feeds = [open_feed(tone, loop=True) for _ in range(5)]
    await _ready(feeds[0])
    assert {id(f._prompt.cycle) for f in feeds} == {id(PROMPTS.get(tone).cycle)}


async def test_a_loop_plays_on_while_its_period_is_still_encoded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 1.013 s at 44.1 kHz lines up with the 20 ms grid only after 20 passes (1013 frames); on a
    # loaded machine encoding that period took longer than the first pass, and the playback
    # sent silence at the first seam until it was done. Here the encoder is slowed to half of
    # real time: the looping stream must still carry on through the seam without a gap.
    slow = True
    encode_frames = loops._frames

    def slowed(samples):
        for frame in encode_frames(samples):
            if slow:
                time.sleep(0.01)
            yield frame

    monkeypatch.setattr(loops, "_frames", slowed)
    tone = generate.write_tone(tmp_path / "odd.wav", 440.0, 1.013, rate=44100, amplitude=0.4)
    feed = open_feed(tone, loop=True)
    try:
        await eventually(lambda: feed._prompt.complete, "the first pass to be encoded")
        decoder, out, missing = OpusDecoder(), [], []
        for index in range(round(2.5 / 0.02)):  # paced like a call: one packet per 20 ms
            payload = feed.next_audio()
            if payload is None:
                missing.append(index)
            else:
                out += decoder.decode(payload, index * 960)
            await asyncio.sleep(0.02)
        assert feed._prompt.cycle is None  # the period was not ready at the seam...
    finally:
        slow = False  # let the encoding thread finish at full speed
    assert missing == [], f"no packet at {[i * 0.02 for i in missing[:3]]} s ..."  # ...no gap
    samples = np.concatenate([f.to_ndarray().reshape(-1, 2)[:, 0] for f in out]) / 32768
    clip = samples[RATE // 10 :]
    assert analysis.silent_spans(clip, threshold_db=-40, min_duration=0.02, rate=RATE) == []
    assert abs(analysis.dominant_frequency(clip, RATE) - 440.0) <= 5.0
