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


def active_seconds(
    source: AudioInput, threshold_db: float = -40.0, window: float = 0.01, rate: int | None = None
) -> float:
    """How many seconds are louder than `threshold_db`, wherever they are (pauses not counted)."""
    levels, step = window_levels(source, window, rate)
    return float(np.count_nonzero(levels >= threshold_db) * step)


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


class DtmfDetector:
    """Streaming in-band DTMF detection: `feed()` samples as they come, get keys as found.

    Each 40 ms window (10 ms hop) is tested at the 8 DTMF frequencies: the strongest row and
    column tones must both exceed `min_db`, dominate their group by 6 dB, be within 8 dB of
    each other (twist) and carry at least 40 % of the window's energy (so speech does not
    count). A key is reported once it holds for 3 windows (a tone of about 60 ms); one failed
    window inside a tone (a lost or damaged packet) does not split it, two end it.
    """

    def __init__(self, rate: int, min_db: float = -45.0) -> None:
        self.rate = rate
        self._size = int(DTMF_WINDOW * rate)
        self._hop = max(1, int(DTMF_HOP * rate))
        self._window = np.hanning(self._size)
        freqs = np.array(DTMF_ROWS + DTMF_COLS)
        self._basis = np.exp(-2j * np.pi * np.outer(np.arange(self._size), freqs) / rate)
        self._gain = self._window.sum()
        self._power_gain = np.mean(self._window**2)
        self._floor = 10 ** (min_db / 20) * math.sqrt(2)
        self._buffer = np.zeros(0)
        self._consumed = 0  # samples of the stream before self._buffer[0]
        self._key: str | None = None  # the key being pressed (or becoming so)
        self._hits = 0  # windows that showed it
        self._misses = 0  # consecutive windows that did not
        self._reported = False
        self._first = 0  # stream position of the key's first window

    def feed(self, samples: np.ndarray) -> list[tuple[str, float]]:
        """Add mono samples; returns the keys that started in them: [(digit, seconds)]."""
        buffer = np.concatenate([self._buffer, samples.astype(np.float64)])
        count = 0 if len(buffer) < self._size else (len(buffer) - self._size) // self._hop + 1
        found: list[tuple[str, float]] = []
        if count:
            starts = np.arange(count) * self._hop
            windows = buffer[starts[:, None] + np.arange(self._size)] * self._window
            amplitudes = 2 * np.abs(windows @ self._basis) / self._gain
            power = np.mean(windows**2, axis=1) / self._power_gain
            for index, (amps, total) in enumerate(zip(amplitudes, power, strict=True)):
                position = self._consumed + starts[index]
                if self._step(self._classify(amps, total), position):
                    # a window already counts when about half of it holds the tone
                    onset = self._first + self._size // 4
                    found.append((self._key or "", float(onset / self.rate)))
        self._buffer = buffer[count * self._hop :]
        self._consumed += count * self._hop
        return found

    def _step(self, key: str | None, position: int) -> bool:
        """Advance the key state by one window; True when a key press is to be reported."""
        if key is not None and key == self._key:
            self._hits, self._misses = self._hits + 1, 0
        elif key is not None and (self._key is None or not self._reported):
            self._key, self._hits, self._misses, self._reported = key, 1, 0, False
            self._first = position
        elif self._key is not None:  # silence, or another key inside a reported press
            self._misses += 1
            if self._misses >= 2:
                self._key, self._hits, self._misses, self._reported = None, 0, 0, False
        if self._key is not None and self._hits >= 3 and not self._reported:
            self._reported = True
            return True
        return False

    def _classify(self, amps: np.ndarray, total: float) -> str | None:
        rows, cols = amps[:4], amps[4:]
        r, c = int(np.argmax(rows)), int(np.argmax(cols))
        ok = (
            rows[r] >= self._floor
            and cols[c] >= self._floor
            and rows[r] >= 2.0 * np.partition(rows, -2)[-2]
            and cols[c] >= 2.0 * np.partition(cols, -2)[-2]
            and 0.4 <= rows[r] / cols[c] <= 2.5
            and (rows[r] ** 2 + cols[c] ** 2) / 2 >= 0.4 * total
        )
        return DTMF_KEYS[r][c] if ok else None


def detect_dtmf(
    source: AudioInput, rate: int | None = None, min_db: float = -45.0
) -> list[tuple[str, float]]:
    """In-band DTMF keys in the audio: [(digit, start seconds), ...] (see `DtmfDetector`)."""
    clip = to_clip(source, rate)
    return DtmfDetector(clip.rate, min_db).feed(clip.samples)


def dtmf_digits(source: AudioInput, rate: int | None = None) -> str:
    """The DTMF keys heard in the audio, as a string (e.g. "159#")."""
    return "".join(digit for digit, _ in detect_dtmf(source, rate))
