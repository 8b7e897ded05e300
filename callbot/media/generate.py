"""Write test media: tones, silence and moving-pattern video, in any container PyAV writes.

Used by callbot's own tests and by anyone who needs fixture files with known content
(a frequency to find, a duration to check, frames to count).
"""

from __future__ import annotations

import fractions
from collections.abc import Sequence
from pathlib import Path

import av
import numpy as np

_AUDIO_CODECS = {
    ".wav": "pcm_s16le",
    ".mp3": "libmp3lame",
    ".ogg": "libopus",
    ".opus": "libopus",
    ".m4a": "aac",
    ".aac": "aac",
    ".flac": "flac",
    ".webm": "libopus",
    ".mkv": "libopus",
    ".mp4": "aac",
}
_VIDEO_CODECS = {".webm": "libvpx", ".mkv": "libvpx", ".mp4": "libx264"}
_OPUS_RATES = (48000, 24000, 16000, 12000, 8000)


def tone_samples(
    frequencies: float | Sequence[float], seconds: float, rate: int, amplitude: float = 0.5
) -> np.ndarray:
    """Float samples of the sum of sines at `frequencies` (each at `amplitude` / count)."""
    freqs = [frequencies] if isinstance(frequencies, int | float) else list(frequencies)
    t = np.arange(round(seconds * rate)) / rate
    if not freqs:
        return np.zeros_like(t, dtype=np.float32)
    wave = sum(np.sin(2 * np.pi * f * t) for f in freqs) / len(freqs)
    return (amplitude * wave).astype(np.float32)


def write_audio(
    path: str | Path, samples: np.ndarray, rate: int = 48000, channels: int = 1
) -> Path:
    """Encode mono float samples to `path` (codec from the suffix), copied to `channels`."""
    path = Path(path)
    codec = _AUDIO_CODECS.get(path.suffix.lower())
    if codec is None:
        raise ValueError(f"no audio codec for {path.suffix!r}")
    if codec == "libopus" and rate not in _OPUS_RATES:
        raise ValueError(f"Opus cannot encode {rate} Hz; use one of {_OPUS_RATES}")
    layout = {1: "mono", 2: "stereo", 6: "5.1"}[channels]
    pcm = (np.clip(samples, -1, 1) * 32767).astype(np.int16)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate, layout=layout)
        step = rate // 10
        for start in range(0, len(pcm), step):
            block = np.repeat(pcm[start : start + step], channels).reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(block, format="s16", layout=layout)
            frame.sample_rate = rate
            frame.pts = start
            frame.time_base = fractions.Fraction(1, rate)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def write_tone(
    path: str | Path,
    frequency: float | Sequence[float] = 440.0,
    seconds: float = 1.0,
    rate: int = 48000,
    channels: int = 1,
    amplitude: float = 0.5,
) -> Path:
    """A pure tone (or a chord) file."""
    return write_audio(path, tone_samples(frequency, seconds, rate, amplitude), rate, channels)


def dtmf_samples(
    digits: str,
    rate: int = 48000,
    duration: float = 0.1,
    gap: float = 0.07,
    amplitude: float = 0.5,
) -> np.ndarray:
    """In-band DTMF: each key as its two tones for `duration`, then `gap` of silence."""
    from .analysis import dtmf_frequencies

    parts = []
    for digit in digits:
        parts.append(tone_samples(dtmf_frequencies(digit), duration, rate, amplitude))
        parts.append(np.zeros(round(gap * rate), np.float32))
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)


def write_dtmf(
    path: str | Path, digits: str, rate: int = 48000, duration: float = 0.1, gap: float = 0.07
) -> Path:
    """A file of DTMF keys (after 0.2 s of silence, so the first key is not clipped)."""
    lead = np.zeros(round(0.2 * rate), np.float32)
    return write_audio(
        path, np.concatenate([lead, dtmf_samples(digits, rate, duration, gap)]), rate
    )


def write_silence(path: str | Path, seconds: float = 1.0, rate: int = 48000) -> Path:
    return write_audio(path, np.zeros(round(seconds * rate), np.float32), rate)


def pattern_frame(index: int, width: int, height: int) -> np.ndarray:
    """An RGB frame with a white bar that moves 8 px per frame over a grey gradient."""
    frame = np.empty((height, width, 3), np.uint8)
    frame[:] = np.linspace(40, 200, width, dtype=np.uint8)[None, :, None]
    left = (index * 8) % max(1, width - 16)
    frame[:, left : left + 16] = 255
    return frame


def write_video(
    path: str | Path,
    seconds: float = 2.0,
    size: tuple[int, int] = (640, 480),
    fps: int = 30,
    tone: float | None = 440.0,
    tone_seconds: float | None = None,
) -> Path:
    """A moving-pattern clip, with a tone soundtrack unless `tone` is None.

    With `tone_seconds`, the tone only sounds for that long at the start (then silence), which
    marks where the clip begins in the audio: handy for checking A/V sync.
    """
    path = Path(path)
    codec = _VIDEO_CODECS.get(path.suffix.lower())
    if codec is None:
        raise ValueError(f"no video codec for {path.suffix!r}")
    width, height = size
    with av.open(str(path), "w") as container:
        video = container.add_stream(codec, rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        if codec == "libx264":
            video.options = {"preset": "ultrafast"}
        audio = None
        if tone is not None:
            audio = container.add_stream(
                _AUDIO_CODECS[path.suffix.lower()], rate=48000, layout="mono"
            )
        count = round(seconds * fps)
        sound = tone_samples(tone, seconds, 48000) if tone is not None else None
        if sound is not None and tone_seconds is not None:
            sound[round(tone_seconds * 48000) :] = 0
        per_frame = 48000 // fps
        for index in range(count):
            frame = av.VideoFrame.from_ndarray(pattern_frame(index, width, height), format="rgb24")
            frame.pts = index
            frame.time_base = fractions.Fraction(1, fps)
            container.mux(video.encode(frame))
            if audio is not None and sound is not None:
                last = index == count - 1  # the soundtrack may run longer than the frames
                block = sound[index * per_frame : None if last else (index + 1) * per_frame]
                _mux_samples(container, audio, block, index * per_frame)
        container.mux(video.encode(None))
        if audio is not None:
            container.mux(audio.encode(None))
    return path


def _mux_samples(
    container: av.container.OutputContainer,
    stream: av.audio.AudioStream,
    samples: np.ndarray,
    start: int,
) -> None:
    if samples.size == 0:
        return
    block = (samples * 32767).astype(np.int16).reshape(1, -1)
    chunk = av.AudioFrame.from_ndarray(block, format="s16", layout="mono")
    chunk.sample_rate = 48000
    chunk.pts = start
    chunk.time_base = fractions.Fraction(1, 48000)
    container.mux(stream.encode(chunk))
