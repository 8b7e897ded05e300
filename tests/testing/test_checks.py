"""The assertions of `callbot.testing` (and the checks behind them) on generated media: each
passes on what it should find and fails, with a message saying what it measured, otherwise."""

from __future__ import annotations

import re
from pathlib import Path

import av
import numpy as np
import pytest

from callbot.media import analysis
from callbot.testing import (
    assert_dtmf,
    assert_duration,
    assert_silence,
    assert_speech_like,
    assert_tone,
    assert_video,
    generate,
)
from callbot.testing.expectations import check_tone, speech_features

ROOT = Path(__file__).resolve().parents[2]
RATE = 48000


def fails(message_pattern: str):
    """pytest.raises(AssertionError) whose message must match the pattern (re.search)."""
    return pytest.raises(AssertionError, match=message_pattern)


def write(path: Path, samples: np.ndarray) -> Path:
    return generate.write_audio(path, samples.astype(np.float32), RATE)


def test_tone_found_with_its_level_and_time(tmp_path: Path) -> None:
    quiet, tone = np.zeros(RATE, np.float32), generate.tone_samples(440, 1.5, RATE)
    path = write(tmp_path / "late.wav", np.concatenate([quiet, tone]))
    result = assert_tone(path, 440)
    assert result.measured["level_dbfs"] == pytest.approx(-9.0, abs=0.5)
    assert 1.3 <= result.measured["seconds"] <= 1.6
    assert result.measured["first_at"] == pytest.approx(1.0, abs=0.1)
    assert_tone(path, 443)  # within 1 %
    assert re.fullmatch(rf"{re.escape(str(path))}: 440 Hz tone at -9\.\d dBFS for 1\.\d+ s "
                        r"\(from 0\.9\d s\)", result.message)  # fmt: skip


def test_tone_missing_names_file_what_is_there_and_the_level_found(tmp_path: Path) -> None:
    path = generate.write_tone(tmp_path / "out.wav", 1000.0, 1.0)
    with fails(
        r"^.*out\.wav: no 440 Hz tone \(strongest 1000\.0 Hz at -9\.0 dBFS; "
        r"440 Hz at -\d+\.\d dBFS, need -40\)$"
    ):
        assert_tone(path, 440)
    with fails(r"out\.wav: no 1000 Hz tone .*1000 Hz at -9\.0 dBFS.*need -3\)"):
        assert_tone(path, 1000, min_db=-3)  # too quiet for the asked level
    with fails(r"no 1030 Hz tone"):
        assert_tone(path, 1030)  # 3 % off


def test_tone_too_short_buried_in_noise_or_silent(tmp_path: Path) -> None:
    blip = write(tmp_path / "blip.wav", generate.tone_samples(440, 0.1, RATE))
    with fails(r"blip\.wav: 440 Hz tone only for 0\.\d+ s \(need 0\.2 s\), at -\d+\.\d dBFS"):
        assert_tone(blip, 440)
    noise = np.random.default_rng(0).standard_normal(2 * RATE) * 0.5  # -6 dBFS
    buried = write(tmp_path / "buried.wav", noise + generate.tone_samples(440, 2, RATE, 0.02))
    with fails(
        r"buried\.wav: no 440 Hz tone \(.*440 Hz at -[23]\d\.\d dBFS, drowned in other sound "
    ):
        assert_tone(buried, 440)
    silent = generate.write_silence(tmp_path / "silent.wav", 1.0)
    with fails(r"silent\.wav: no 440 Hz tone \(the audio is silent: -inf dBFS, 1\.00 s\)"):
        assert_tone(silent, 440)
    with fails(r"missing\.wav: file not found"):
        assert_tone(tmp_path / "missing.wav", 440)


def test_tone_in_frames_and_arrays() -> None:
    samples = generate.tone_samples(700, 1.0, RATE)
    frame = av.AudioFrame.from_ndarray(
        (samples * 32767).astype(np.int16).reshape(1, -1), format="s16", layout="mono"
    )
    frame.sample_rate = RATE
    assert_tone([frame], 700)
    assert_tone(samples, 700, rate=RATE)
    with fails(r"^audio: no 800 Hz tone \(strongest 700\.0 Hz"):
        assert_tone(frame, 800)
    assert not check_tone(samples, 800, rate=RATE, label="leg A").ok
    assert check_tone(samples, 800, rate=RATE, label="leg A").message.startswith("leg A: no 800")


def test_silence(tmp_path: Path) -> None:
    quiet = generate.write_silence(tmp_path / "quiet.wav", 1.0)
    assert_silence(quiet)
    hum = write(tmp_path / "hum.wav", generate.tone_samples(50, 1.0, RATE, 0.001))  # -63 dBFS
    assert_silence(hum)
    with fails(r"hum\.wav: not silent: loudest 0\.1 s at 0\.\d+ s is -6\d\.\d dBFS \(limit -70"):
        assert_silence(hum, max_db=-70)
    keys = generate.write_dtmf(tmp_path / "keys.wav", "5")
    with fails(r"keys\.wav: not silent: loudest 0\.1 s at 0\.\d+ s is -1\d\.\d dBFS "
               r"\(limit -50 dBFS\); sound from 0\.20 s to 0\.30 s"):  # fmt: skip
        assert_silence(keys)


def test_duration_of_audio_and_video(tmp_path: Path) -> None:
    tone = generate.write_tone(tmp_path / "two.ogg", 440, 2.0)
    clip = generate.write_video(tmp_path / "clip.webm", 1.5, (160, 120), 10, tone=None)
    assert assert_duration(tone, 2.0, 0.05).measured["seconds"] == pytest.approx(2.0, abs=0.05)
    assert_duration(clip, 1.5, 0.05)
    assert_duration(generate.tone_samples(1, 0.5, RATE), 0.5, 0.01, rate=RATE)
    with fails(r"two\.ogg: 2\.0\d s long \(expected 3 ± 0\.5 s\)"):
        assert_duration(tone, 3.0)
    with fails(r"clip\.webm: 1\.50 s long \(expected 1 ± 0\.2 s\)"):
        assert_duration(clip, 1.0, 0.2)


def test_dtmf_from_audio_and_events(tmp_path: Path) -> None:
    keys = generate.write_dtmf(tmp_path / "keys.ogg", "123#")
    result = assert_dtmf(keys, "123#")
    assert result.measured["heard"] == "123#"
    assert_dtmf(keys, "23", exact=False)
    with fails(r"keys\.ogg: expected DTMF '1234', heard '123#' \(1 at 0\.\d+ s, 2 at 0\.\d+ s, "
               r"3 at 0\.\d+ s, # at 0\.\d+ s\)"):  # fmt: skip
        assert_dtmf(keys, "1234")
    with fails(r"keys\.ogg: expected DTMF containing '9', heard '123#'"):
        assert_dtmf(keys, "9", exact=False)
    tone = generate.write_tone(tmp_path / "tone.wav", 697, 1.0)
    with fails(r"tone\.wav: expected DTMF '1', heard no DTMF"):
        assert_dtmf(tone, "1")
    events = analysis.detect_dtmf(keys)
    assert_dtmf(events, "123#")
    with fails(r"^audio: expected DTMF '12', heard '1' \(1 at 0\.50 s\)"):
        assert_dtmf([("1", 0.5)], "12")
    with pytest.raises(ValueError, match="not a DTMF key"):
        assert_dtmf(keys, "12x")


def test_video_frames_and_size(tmp_path: Path) -> None:
    clip = generate.write_video(tmp_path / "clip.webm", 1.0, (320, 240), 20, tone=None)
    result = assert_video(clip, 20, (320, 240))
    assert (result.measured["frames"], result.measured["fps"]) == (20, 20.0)
    with fails(r"clip\.webm: 20 video frames of 320x240 \(expected at least 21 frames\)"):
        assert_video(clip, 21)
    with fails(r"clip\.webm: 20 video frames of 320x240 \(expected 640x480\)"):
        assert_video(clip, 1, (640, 480))
    sound = generate.write_tone(tmp_path / "sound.wav")
    with fails(r"sound\.wav: no video stream"):
        assert_video(sound)
    with av.open(str(clip)) as container:
        frames = list(container.decode(video=0))
    assert_video(frames, 20, (320, 240))
    with fails(r"^video: 0 video frames of no size \(expected at least 1 frames\)"):
        assert_video([])


@pytest.mark.parametrize("name", ["welcome.wav", "menu.wav"])
def test_espeak_speech_is_speech_like(name: str) -> None:
    result = assert_speech_like(ROOT / "samples" / name)
    assert result.measured["pauses"] >= 2 and result.measured["syllabic"] > 0.45


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_synthetic_speech_is_speech_like_even_through_opus(tmp_path: Path, seed: int) -> None:
    samples = generate.speech_samples(4.0, RATE, seed=seed)
    assert_speech_like(samples, rate=RATE)
    assert_speech_like(write(tmp_path / "voice.ogg", samples))  # Opus, as a call carries it


def test_what_is_not_speech_fails_and_says_why(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    tone = write(tmp_path / "tone.wav", generate.tone_samples(440, 3, RATE))
    with fails(r"tone\.wav: not speech-like: steady level \(modulation depth 0\.0\d < 0\.4\); "
               r"no syllable rhythm .*; no pauses; pure tones \(100% of the energy in 2 "
               r"spectral peaks > 80%\) \(3\.00 s of sound at -9\.0 dBFS"):  # fmt: skip
        assert_speech_like(tone)
    noise = write(tmp_path / "noise.wav", rng.standard_normal(3 * RATE) * 0.1)
    with fails(r"noise\.wav: not speech-like: steady level .*; no pauses; noise \(spectral "
               r"flatness 0\.5\d > 0\.3\)"):  # fmt: skip
        assert_speech_like(noise)
    gap = np.zeros(int(0.15 * RATE))
    beep = generate.tone_samples(1000, 0.15, RATE)
    beeps = write(tmp_path / "beeps.wav", np.tile(np.concatenate([beep, gap]), 10))
    with fails(r"beeps\.wav: not speech-like: pure tones \(100% "):
        assert_speech_like(beeps)  # rhythm and pauses, but one pure tone
    burst = rng.standard_normal(int(0.15 * RATE)) * 0.1
    bursts = write(tmp_path / "bursts.wav", np.tile(np.concatenate([burst, gap]), 10))
    with fails(r"bursts\.wav: not speech-like: noise "):
        assert_speech_like(bursts)
    keys = write(tmp_path / "keys.wav", generate.dtmf_samples("1234567890*#1234567890", RATE))
    with fails(r"keys\.wav: not speech-like: .*pure tones"):
        assert_speech_like(keys)
    with fails(r"silent\.wav: not speech-like: silent \(-inf dBFS\)"):
        assert_speech_like(generate.write_silence(tmp_path / "silent.wav", 2.0))
    with fails(r"short\.wav: not speech-like: only 0\.5\d s of sound \(need 1 s\)"):
        assert_speech_like(write(tmp_path / "short.wav", generate.speech_samples(0.7, RATE)))


def test_speech_features_separate_voice_from_tones_and_noise() -> None:
    voice = speech_features(ROOT / "samples" / "welcome.wav")
    tone = speech_features(generate.tone_samples(440, 3, RATE), RATE)
    assert voice["depth"] > 0.8 > 0.1 > tone["depth"]
    assert voice["tonality"] < 0.7 and tone["tonality"] > 0.95
    assert voice["flatness"] < 0.05


@pytest.mark.parametrize("name", ["welcome.wav", "menu.wav", "synthetic"])
def test_a_voice_is_not_a_tone(name: str) -> None:
    """Even espeak's monotone voice holds its pitch too briefly, and spreads its energy over too
    many harmonics, to pass for a tone at any frequency."""
    if name == "synthetic":
        voice = analysis.AudioClip(generate.speech_samples(4.0, RATE, seed=4), RATE)
    else:
        voice = analysis.load_audio(ROOT / "samples" / name)
    passed = [hz for hz in range(100, 1300, 20) if check_tone(voice, hz).ok]
    assert passed == []
    assert_speech_like(voice)
