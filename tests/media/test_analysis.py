"""Analysis: levels, silence, frequency and tone presence on arrays, frames and files."""

from __future__ import annotations

import math
from pathlib import Path

import av
import numpy as np
import pytest

from callbot.media import analysis
from callbot.testing import generate


def test_levels() -> None:
    sine = generate.tone_samples(1000, 1.0, 48000, amplitude=1.0)
    assert analysis.level_dbfs(sine, rate=48000) == pytest.approx(-3.01, abs=0.05)
    half = generate.tone_samples(1000, 1.0, 48000, amplitude=0.5)
    assert analysis.level_dbfs(half, rate=48000) == pytest.approx(-9.03, abs=0.05)
    assert analysis.level_dbfs(np.zeros(100), rate=48000) == -math.inf
    assert analysis.is_silent(np.full(480, 1e-4), rate=48000)
    assert not analysis.is_silent(half, rate=48000)


def test_dominant_frequency_and_tones() -> None:
    chord = generate.tone_samples([697, 1209], 0.5, 8000, amplitude=0.8)
    assert analysis.has_tone(chord, 697, rate=8000) and analysis.has_tone(chord, 1209, rate=8000)
    assert not analysis.has_tone(chord, 941, rate=8000)
    single = generate.tone_samples(440.0, 1.0, 44100)
    assert analysis.dominant_frequency(single, rate=44100) == pytest.approx(440.0, abs=0.5)
    assert analysis.tone_level_db(single, 440.0, rate=44100) == pytest.approx(-9.03, abs=0.3)


def test_silent_spans_and_active_span() -> None:
    rate = 48000
    tone = generate.tone_samples(440, 0.5, rate)
    gap = np.zeros(int(0.1 * rate), np.float32)
    signal = np.concatenate([gap, tone, gap, tone, gap])
    spans = analysis.silent_spans(signal, rate=rate, min_duration=0.05)
    assert [(round(a, 2), round(b, 2)) for a, b in spans] == [(0.0, 0.1), (0.6, 0.7), (1.2, 1.3)]
    assert analysis.active_span(signal, rate=rate) == pytest.approx((0.1, 1.2), abs=0.011)


def test_inputs_frames_and_files(tmp_path: Path) -> None:
    path = generate.write_tone(tmp_path / "t.wav", 1000, 0.5, 16000, channels=2)
    frames = []
    with av.open(str(path)) as container:
        frames = list(container.decode(audio=0))
    for source in (path, frames, frames[0], analysis.load_audio(path)):
        assert analysis.dominant_frequency(source) == pytest.approx(1000, abs=20)
    with pytest.raises(ValueError, match="rate"):
        analysis.level_dbfs(np.zeros(10))


def test_dtmf_detection_on_clean_tones() -> None:
    keys = "0123456789*#ABCD"
    signal = generate.dtmf_samples(keys, rate=8000)
    assert analysis.dtmf_digits(signal, rate=8000) == keys
    found = analysis.detect_dtmf(signal, rate=8000)
    assert [round(t, 2) for _, t in found][:3] == pytest.approx([0.0, 0.17, 0.34], abs=0.02)


def test_dtmf_repeated_key_needs_a_gap_and_short_blips_do_not_count() -> None:
    assert analysis.dtmf_digits(generate.dtmf_samples("55", rate=16000), rate=16000) == "55"
    blip = generate.dtmf_samples("7", rate=16000, duration=0.03)
    assert analysis.dtmf_digits(blip, rate=16000) == ""


def test_dtmf_ignores_single_tones_chords_and_noise() -> None:
    rate = 8000
    rng = np.random.default_rng(3)
    noise = (rng.standard_normal(rate) * 0.2).astype(np.float32)
    assert analysis.dtmf_digits(noise, rate=rate) == ""
    assert analysis.dtmf_digits(generate.tone_samples(697, 1.0, rate), rate=rate) == ""
    chord = generate.tone_samples([440, 554, 659], 1.0, rate)  # music, not a key
    assert analysis.dtmf_digits(chord, rate=rate) == ""
    mixed = generate.dtmf_samples("9", rate=rate) + 0.5 * noise[: int(0.17 * rate)]
    assert analysis.dtmf_digits(mixed, rate=rate) == "9"


def test_dtmf_survives_opus(tmp_path: Path) -> None:
    path = generate.write_dtmf(tmp_path / "keys.ogg", "159#", rate=48000)
    assert analysis.dtmf_digits(path) == "159#"


def test_active_seconds_ignores_pauses() -> None:
    rate = 8000
    tone = generate.tone_samples(440, 0.5, rate)
    gap = np.zeros(int(0.3 * rate), np.float32)
    assert analysis.active_seconds(np.concatenate([tone, gap, tone]), rate=rate) == pytest.approx(
        1.0, abs=0.02
    )
