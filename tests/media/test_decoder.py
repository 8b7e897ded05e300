"""FileDecoder: any rate/layout to 48 kHz 20 ms frames, looping with no gap or A/V drift."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from callbot import MediaError
from callbot.media import analysis
from callbot.media.decoder import AUDIO_FRAME_SAMPLES, FileDecoder, fit_video_frame
from callbot.testing import generate


def _read_all(decoder: FileDecoder, limit: float = 60.0):
    audio, video = [], []
    while not decoder.finished and len(audio) * 0.02 < limit:
        chunk = decoder.read(0.5)
        audio += chunk.audio
        video += chunk.video
    return audio, video


@pytest.mark.parametrize(
    ("suffix", "rate", "channels"),
    [
        (".wav", 8000, 1),
        (".wav", 96000, 2),
        (".flac", 44100, 6),
        (".m4a", 44100, 2),
        (".ogg", 16000, 1),
        (".mp3", 32000, 2),
    ],
)
def test_any_rate_and_layout_becomes_48k_20ms(
    tmp_path: Path, suffix: str, rate: int, channels: int
) -> None:
    path = generate.write_tone(tmp_path / f"t{suffix}", 1000.0, 2.0, rate, channels)
    audio, _ = _read_all(FileDecoder(path))
    assert {f.samples for f in audio} == {AUDIO_FRAME_SAMPLES}
    assert {(f.sample_rate, f.layout.name, f.format.name) for f in audio} == {
        (48000, "stereo", "s16")
    }
    assert abs(len(audio) * 0.02 - 2.0) <= 0.1  # codec padding at most
    assert abs(analysis.dominant_frequency(audio) - 1000.0) < 2


@pytest.mark.parametrize("audio_seconds", [1.46, 1.54])
def test_loop_is_seamless_and_audio_stays_with_video(tmp_path: Path, audio_seconds: float) -> None:
    # Each pass starts with a 0.2 s beep in the audio and the bar at the far left in the video;
    # the video is 15 frames at 10 fps (1.5 s), the audio a little shorter or longer. After
    # several loops both markers must still coincide.
    clip = generate.write_video(
        tmp_path / "c.webm",
        seconds=audio_seconds,
        size=(320, 240),
        fps=10,
        tone=1000.0,
        tone_seconds=0.2,
    )
    decoder = FileDecoder(clip, video_size=(320, 240), loop=True)
    audio, video = _read_all(decoder, limit=7.0)
    assert decoder.passes >= 4
    times = np.array([t for t, _ in video])
    assert np.all(np.diff(times) > 0)
    # no freeze at the seams: at most one frame interval plus the audio's overhang
    assert np.max(np.diff(times)) < 0.1 + max(0.0, audio_seconds - 1.5) + 0.03
    video_starts = [t for t, f in video if np.argmax(f.to_ndarray(format="gray")[120]) < 4]
    levels, step = analysis.window_levels(audio, 0.005)
    loud = levels > -30
    audio_starts = [i * step for i in range(1, len(loud)) if loud[i] and not loud[i - 1]]
    audio_starts = [0.0, *audio_starts] if loud[0] else audio_starts
    assert len(video_starts) >= 4 and len(audio_starts) >= 4
    for video_start, audio_start in zip(video_starts, audio_starts, strict=False):
        assert abs(video_start - audio_start) < 0.025
    pass_lengths = np.diff(video_starts)
    assert np.ptp(pass_lengths) < 1e-6  # every pass exactly as long as the first


def test_frame_rate_capped_at_30(tmp_path: Path) -> None:
    clip = generate.write_video(tmp_path / "fast.mp4", seconds=1.0, fps=60, tone=None)
    decoder = FileDecoder(clip, audio=False, video_size=(320, 240))
    _, video = _read_all(decoder)
    assert decoder.fps == 30
    assert 28 <= len(video) <= 31


def test_letterbox_keeps_aspect(tmp_path: Path) -> None:
    clip = generate.write_video(tmp_path / "wide.webm", seconds=0.2, size=(1280, 720), tone=None)
    _, video = _read_all(FileDecoder(clip, audio=False, video_size=(640, 480)))
    frame = video[0][1]
    luma = frame.to_ndarray(format="gray")
    assert (frame.width, frame.height) == (640, 480)
    assert luma[:56].max() <= 20 and luma[-56:].max() <= 20  # 60 px bars (rounded to even)
    assert luma[70:410].mean() > 60
    same = fit_video_frame(frame, 640, 480)
    assert (same.width, same.height) == (640, 480)


def test_corrupt_data_after_a_valid_header_is_a_media_error(tmp_path: Path) -> None:
    good = generate.write_tone(tmp_path / "t.ogg", 440.0, 2.0)
    data = bytearray(good.read_bytes())
    rng = np.random.default_rng(1)
    data[200:] = rng.integers(0, 256, len(data) - 200, dtype=np.uint8).tobytes()
    bad = tmp_path / "bad.ogg"
    bad.write_bytes(bytes(data))
    with pytest.raises(MediaError, match=r"bad\.ogg"):
        _read_all(FileDecoder(bad))
