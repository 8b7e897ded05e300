"""Audio analysis on files, frames and sample arrays: level, silence, frequency, tone presence.

Every function accepts a path, an `av.AudioFrame`, an iterable of frames, an `AudioClip`, or a
numpy array of samples (then pass `rate=`). Levels are dBFS: RMS relative to full scale, so a
full-scale sine reads about -3 dBFS and digital silence reads -inf.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from dataclasses import dataclass

import av
import av.error
import numpy as np

from ..errors import MediaError

#: Below this level (dBFS) audio counts as silence.
SILENCE_DB = -50.0


@dataclass(frozen=True)
class AudioClip:
    """Mono float samples in [-1, 1] and their sample rate."""

    samples: np.ndarray
    rate: int

    @property
    def duration(self) -> float:
        return len(self.samples) / self.rate

    def slice(self, start: float, end: float | None = None) -> AudioClip:
        """The part between `start` and `end` seconds."""
        stop = None if end is None else int(end * self.rate)
        return AudioClip(self.samples[int(start * self.rate) : stop], self.rate)


AudioInput = (
    str | os.PathLike[str] | AudioClip | np.ndarray | av.AudioFrame | Iterable[av.AudioFrame]
)


def frame_samples(frame: av.AudioFrame) -> np.ndarray:
    """One frame as mono float32 samples in [-1, 1]."""
    data = frame.to_ndarray()
    channels = len(frame.layout.channels)
    if frame.format.is_planar:
        data = data.reshape(channels, -1).mean(axis=0)
    else:
        data = data.reshape(-1, channels).mean(axis=1)
    if np.issubdtype(frame.to_ndarray().dtype, np.integer):
        info = np.iinfo(frame.to_ndarray().dtype)
        if info.min == 0:  # unsigned 8-bit
            return ((data - 128) / 128).astype(np.float32)
        return (data / -float(info.min)).astype(np.float32)
    return data.astype(np.float32)


def load_audio(path: str | os.PathLike[str]) -> AudioClip:
    """Decode the first audio stream of a file into an `AudioClip` (mono, native rate)."""
    try:
        with av.open(os.fspath(path)) as container:
            if not container.streams.audio:
                raise MediaError(path, "no audio stream")
            stream = container.streams.audio[0]
            parts = [frame_samples(f) for f in container.decode(stream)]
            rate = stream.codec_context.sample_rate or 48000
    except av.error.FFmpegError as exc:
        raise MediaError(path, f"cannot read audio ({exc})") from exc
    except FileNotFoundError as exc:
        raise MediaError(path, "file not found") from exc
    return AudioClip(np.concatenate(parts) if parts else np.zeros(0, np.float32), rate)


def to_clip(source: AudioInput, rate: int | None = None) -> AudioClip:
    """Normalise any supported input to an `AudioClip`."""
    if isinstance(source, AudioClip):
        return source
    if isinstance(source, str | os.PathLike):
        return load_audio(source)
    if isinstance(source, np.ndarray):
        if rate is None:
            raise ValueError("pass rate= with a sample array")
        samples = source.astype(np.float32)
        return AudioClip(samples.mean(axis=1) if samples.ndim == 2 else samples, rate)
    frames = [source] if isinstance(source, av.AudioFrame) else list(source)
    if not frames:
        return AudioClip(np.zeros(0, np.float32), rate or 48000)
    return AudioClip(np.concatenate([frame_samples(f) for f in frames]), frames[0].sample_rate)


def _db(value: float) -> float:
    return 20 * math.log10(value) if value > 0 else -math.inf


def level_dbfs(source: AudioInput, rate: int | None = None) -> float:
    """RMS level in dBFS (-inf for digital silence or no samples)."""
    samples = to_clip(source, rate).samples
    if samples.size == 0:
        return -math.inf
    return _db(float(np.sqrt(np.mean(np.square(samples, dtype=np.float64)))))


def is_silent(
    source: AudioInput, threshold_db: float = SILENCE_DB, rate: int | None = None
) -> bool:
    """True when the RMS level is below `threshold_db`."""
    return level_dbfs(source, rate) < threshold_db


def window_levels(
    source: AudioInput, window: float = 0.01, rate: int | None = None
) -> tuple[np.ndarray, float]:
    """RMS level (dBFS) of consecutive windows of `window` seconds; returns (levels, window)."""
    clip = to_clip(source, rate)
    size = max(1, int(window * clip.rate))
    count = len(clip.samples) // size
    if count == 0:
        return np.zeros(0), window
    blocks = clip.samples[: count * size].astype(np.float64).reshape(count, size)
    rms = np.sqrt(np.mean(blocks**2, axis=1))
    with np.errstate(divide="ignore"):
        return 20 * np.log10(rms), size / clip.rate


def silent_spans(
    source: AudioInput,
    threshold_db: float = SILENCE_DB,
    min_duration: float = 0.04,
    window: float = 0.01,
    rate: int | None = None,
) -> list[tuple[float, float]]:
    """(start, end) seconds of every stretch quieter than `threshold_db` for `min_duration`+."""
    levels, step = window_levels(source, window, rate)
    spans, start = [], None
    for index, quiet in enumerate(np.append(levels < threshold_db, False)):
        if quiet and start is None:
            start = index
        elif not quiet and start is not None:
            if (index - start) * step >= min_duration:
                spans.append((start * step, index * step))
            start = None
    return spans


def active_span(
    source: AudioInput, threshold_db: float = -40.0, window: float = 0.01, rate: int | None = None
) -> tuple[float, float] | None:
    """(start, end) seconds from the first to the last window louder than `threshold_db`."""
    levels, step = window_levels(source, window, rate)
    loud = np.flatnonzero(levels >= threshold_db)
    if loud.size == 0:
        return None
    return float(loud[0] * step), float((loud[-1] + 1) * step)


def dominant_frequency(source: AudioInput, rate: int | None = None) -> float:
    """The strongest frequency in Hz (Hann-windowed FFT with parabolic peak interpolation)."""
    clip = to_clip(source, rate)
    samples = clip.samples.astype(np.float64)
    if samples.size < 16:
        raise ValueError("too few samples to estimate a frequency")
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.size)))
    spectrum[0] = 0.0
    peak = int(np.argmax(spectrum))
    offset = 0.0
    if 0 < peak < spectrum.size - 1:
        left, centre, right = np.log(spectrum[peak - 1 : peak + 2] + 1e-12)
        denominator = left - 2 * centre + right
        offset = 0.5 * (left - right) / denominator if denominator else 0.0
    return (peak + offset) * clip.rate / samples.size


def goertzel(source: AudioInput, frequency: float, rate: int | None = None) -> float:
    """Amplitude (0..1) of the component at `frequency`, from one Hann-windowed DFT bin.

    Goertzel's algorithm is a recursive way to evaluate a single DFT bin; here numpy evaluates
    the same bin as one vectorised dot product, which is faster than a Python-level recursion.
    """
    clip = to_clip(source, rate)
    samples = clip.samples.astype(np.float64)
    if samples.size == 0:
        return 0.0
    window = np.hanning(samples.size)
    phase = np.exp(-2j * np.pi * frequency / clip.rate * np.arange(samples.size))
    return float(2 * abs(np.dot(samples * window, phase)) / window.sum())


def tone_level_db(source: AudioInput, frequency: float, rate: int | None = None) -> float:
    """Level in dBFS of the sine component at `frequency` (a full-scale sine reads ~-3)."""
    return _db(goertzel(source, frequency, rate) / math.sqrt(2))


def has_tone(
    source: AudioInput, frequency: float, min_db: float = -40.0, rate: int | None = None
) -> bool:
    """True when the component at `frequency` is at least `min_db` dBFS."""
    return tone_level_db(source, frequency, rate) >= min_db


# -- DTMF ---------------------------------------------------------------------------------------

DTMF_ROWS = (697.0, 770.0, 852.0, 941.0)
DTMF_COLS = (1209.0, 1336.0, 1477.0, 1633.0)
DTMF_KEYS = ("123A", "456B", "789C", "*0#D")
#: Analysis window and hop (s). 40 ms resolves the closest DTMF frequencies (73 Hz apart).
DTMF_WINDOW, DTMF_HOP = 0.040, 0.010


def dtmf_frequencies(digit: str) -> tuple[float, float]:
    """The (row, column) frequencies of a DTMF key."""
    for row, keys in enumerate(DTMF_KEYS):
        if digit.upper() in keys:
            return DTMF_ROWS[row], DTMF_COLS[keys.index(digit.upper())]
    raise ValueError(f"{digit!r} is not a DTMF key (0-9, *, #, A-D)")


def detect_dtmf(
    source: AudioInput, rate: int | None = None, min_db: float = -45.0
) -> list[tuple[str, float]]:
    """In-band DTMF keys in the audio: [(digit, start seconds), ...].

    Each 40 ms window (10 ms hop) is tested at the 8 DTMF frequencies: the strongest row and
    column tones must both exceed `min_db`, dominate their group by 8 dB, be within 8 dB of
    each other (twist) and carry most of the window's energy (so speech does not count). A key
    is reported once it holds for 3 consecutive windows (a tone of about 60 ms).
    """
    clip = to_clip(source, rate)
    size, hop = int(DTMF_WINDOW * clip.rate), max(1, int(DTMF_HOP * clip.rate))
    samples = clip.samples.astype(np.float64)
    if len(samples) < size:
        return []
    starts = np.arange(0, len(samples) - size + 1, hop)
    windows = samples[starts[:, None] + np.arange(size)] * np.hanning(size)
    freqs = np.array(DTMF_ROWS + DTMF_COLS)
    basis = np.exp(-2j * np.pi * np.outer(np.arange(size), freqs) / clip.rate)
    amplitudes = 2 * np.abs(windows @ basis) / np.hanning(size).sum()  # (windows, 8)
    power = np.mean(windows**2, axis=1) / np.mean(np.hanning(size) ** 2)
    floor = 10 ** (min_db / 20) * math.sqrt(2)
    detected: list[str | None] = []
    for amps, total in zip(amplitudes, power, strict=True):
        rows, cols = amps[:4], amps[4:]
        r, c = int(np.argmax(rows)), int(np.argmax(cols))
        second_row = np.partition(rows, -2)[-2]
        second_col = np.partition(cols, -2)[-2]
        tone_power = (rows[r] ** 2 + cols[c] ** 2) / 2
        ok = (
            rows[r] >= floor
            and cols[c] >= floor
            and rows[r] >= 2.5 * second_row
            and cols[c] >= 2.5 * second_col
            and 0.4 <= rows[r] / cols[c] <= 2.5
            and tone_power >= 0.6 * total
        )
        detected.append(DTMF_KEYS[r][c] if ok else None)
    keys: list[tuple[str, float]] = []
    run_key, run_length, reported = None, 0, False
    for index, key in enumerate(detected):
        if key == run_key and key is not None:
            run_length += 1
        else:
            run_key, run_length, reported = key, 1, False
        if key is not None and run_length >= 3 and not reported:
            keys.append((key, float(starts[index - 2] / clip.rate)))
            reported = True
    return keys


def dtmf_digits(source: AudioInput, rate: int | None = None) -> str:
    """The DTMF keys heard in the audio, as a string (e.g. "159#")."""
    return "".join(digit for digit, _ in detect_dtmf(source, rate))
