"""Sine tones and in-band DTMF as float sample arrays: what a call sends for in-band keys
(`Call.send_dtmf(..., inband=True)`) and what the fixture writers in callbot.testing write."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .analysis import dtmf_frequencies


def tone_samples(
    frequencies: float | Sequence[float], seconds: float, rate: int, amplitude: float = 0.5
) -> np.ndarray:
    """Float samples of the sum of sines at `frequencies` (each at `amplitude` / count)."""
    freqs = [frequencies] if isinstance(frequencies, int | float) else list(frequencies)
    t = np.arange(round(seconds * rate)) / rate
    if not freqs:
        return np.zeros_like(t, dtype=np.float32)
    wave: np.ndarray = np.sum([np.sin(2 * np.pi * f * t) for f in freqs], axis=0) / len(freqs)
    return (amplitude * wave).astype(np.float32)


def dtmf_samples(
    digits: str,
    rate: int = 48000,
    duration: float = 0.1,
    gap: float = 0.07,
    amplitude: float = 0.5,
) -> np.ndarray:
    """In-band DTMF: each key as its two tones for `duration`, then `gap` of silence."""
    parts = []
    for digit in digits:
        parts.append(tone_samples(dtmf_frequencies(digit), duration, rate, amplitude))
        parts.append(np.zeros(round(gap * rate), np.float32))
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)
