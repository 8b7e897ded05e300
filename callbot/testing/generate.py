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

from ..media.tones import dtmf_samples, tone_samples

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


# -- speech -------------------------------------------------------------------------------------

#: Formants (F1, F2, F3 in Hz) of a few vowels of an adult voice.
_VOWELS = (
    (730.0, 1090.0, 2440.0),  # a
    (530.0, 1840.0, 2480.0),  # e
    (270.0, 2290.0, 3010.0),  # i
    (570.0, 840.0, 2410.0),  # o
    (300.0, 870.0, 2240.0),  # u
    (660.0, 1720.0, 2410.0),  # ae
    (490.0, 1350.0, 1690.0),  # er
)
_FORMANT_WIDTHS = np.array([80.0, 110.0, 160.0])
ESPEAK = "espeak-ng"
DEFAULT_TEXT = "Hello, this is a test call from callbot. Please say something after the beep."


def speech_samples(
    seconds: float = 4.0,
    rate: int = 48000,
    *,
    pitch: float = 120.0,
    seed: int = 0,
    amplitude: float = 0.5,
) -> np.ndarray:
    """A synthetic voice: no words, but speech's rhythm and spectrum.

    Words of 1-3 syllables (130-240 ms, a few starting with a hiss like a fricative), short
    gaps between syllables, pauses between words and phrases; each syllable is a vowel (a
    harmonic series at a drifting pitch shaped by gliding formants). Deterministic for a seed.
    It passes `expectations.check_speech_like`, as recorded speech does.
    """
    rng = np.random.default_rng(seed)
    total = round(seconds * rate)
    out = np.zeros(total, np.float64)
    pos = phrase_start = round(0.15 * rate)

    def put(wave: np.ndarray, at: int) -> int:
        end = min(total, at + wave.size)
        if end > at:
            out[at:end] += wave[: end - at]
        return at + wave.size

    while pos < total:
        for _ in range(int(rng.integers(1, 4))):  # syllables of one word
            if rng.random() < 0.4:
                pos = put(_hiss(rng, round(rng.uniform(0.04, 0.08) * rate), rate), pos)
            elapsed = (pos - phrase_start) / rate
            pos = put(_vowel(rng, round(rng.uniform(0.13, 0.24) * rate), rate, pitch, elapsed), pos)
            pos += round(rng.uniform(0.02, 0.06) * rate)
        pos += round(rng.uniform(0.12, 0.3) * rate)
        if rng.random() < 0.25:  # end of a phrase: a longer pause, the pitch resets
            pos += round(0.3 * rate)
            phrase_start = pos
    peak = float(np.max(np.abs(out))) or 1.0
    return (out / peak * amplitude).astype(np.float32)


def _vowel(
    rng: np.random.Generator, length: int, rate: int, pitch: float, elapsed: float
) -> np.ndarray:
    t = np.arange(length) / rate
    # the pitch glides up or down through each syllable (a voice never holds a note like a
    # tone does), with a slight vibrato, and falls through the phrase (declination)
    glide_by = rng.choice([-1.0, 1.0]) * rng.uniform(0.25, 0.4)
    contour = 1 + glide_by * (t / max(t[-1], 1e-9) - 0.5) + 0.02 * np.sin(2 * np.pi * 5 * t)
    f0 = np.maximum(pitch * (1.15 - 0.05 * elapsed) * contour, 0.7 * pitch)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    start, end = (np.array(_VOWELS[int(rng.integers(len(_VOWELS)))]) for _ in range(2))
    glide = np.linspace(0, 1, length)[:, None]
    formants = start * (1 - glide) + end * glide
    wave = np.zeros(length)
    for k in range(1, int(4000 / pitch) + 1):
        fk = k * f0
        gain = np.sum(1 / (1 + ((fk[:, None] - formants) / _FORMANT_WIDTHS) ** 2), axis=1)
        gain[fk > rate / 2 - 500] = 0
        wave += gain / np.sqrt(k) * np.sin(k * phase)
    envelope = np.ones(length)
    attack, decay = min(length, round(0.03 * rate)), min(length, round(0.07 * rate))
    envelope[:attack] = np.sin(np.linspace(0, np.pi / 2, attack)) ** 2
    envelope[length - decay :] *= np.cos(np.linspace(0, np.pi / 2, decay)) ** 2
    return wave * envelope * rng.uniform(0.6, 1.0)


def _hiss(rng: np.random.Generator, length: int, rate: int) -> np.ndarray:
    spectrum = np.fft.rfft(rng.standard_normal(length))
    freqs = np.fft.rfftfreq(length, 1 / rate)
    spectrum[(freqs < 2500) | (freqs > 7000)] = 0
    return np.fft.irfft(spectrum, length) * np.hanning(length) * 0.15


def espeak_available() -> bool:
    """Whether espeak-ng is on PATH (then `write_speech` can say real words)."""
    import shutil

    return shutil.which(ESPEAK) is not None


def espeak_samples(
    text: str = DEFAULT_TEXT, rate: int = 48000, voice: str | None = None
) -> np.ndarray:
    """`text` spoken by espeak-ng, as mono float samples at `rate`."""
    import subprocess
    import tempfile

    from ..errors import MediaError
    from ..media.analysis import load_audio

    with tempfile.TemporaryDirectory(prefix="callbot-espeak-") as scratch:
        wav = Path(scratch) / "speech.wav"
        command = [ESPEAK, "-w", str(wav), *(["-v", voice] if voice else []), "--", text]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=60)
        except FileNotFoundError as exc:
            raise MediaError(None, f"{ESPEAK} is not installed") from exc
        if done.returncode != 0 or not wav.exists():
            raise MediaError(None, f"{ESPEAK} failed: {done.stderr.strip() or done.returncode}")
        clip = load_audio(wav)
    return resample(clip.samples, clip.rate, rate)


def resample(samples: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Mono float samples converted from `rate_in` to `rate_out` (FFmpeg's resampler)."""
    if rate_in == rate_out or samples.size == 0:
        return samples.astype(np.float32)
    resampler = av.AudioResampler(format="flt", layout="mono", rate=rate_out)
    frame = av.AudioFrame.from_ndarray(
        samples.astype(np.float32).reshape(1, -1), format="flt", layout="mono"
    )
    frame.sample_rate = rate_in
    parts = [f.to_ndarray().reshape(-1) for f in [*resampler.resample(frame),
                                                  *resampler.resample(None)]]  # fmt: skip
    return np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, np.float32)


def write_speech(
    path: str | Path,
    seconds: float | None = None,
    *,
    text: str | None = None,
    engine: str = "auto",
    voice: str | None = None,
    rate: int = 48000,
    seed: int = 0,
) -> tuple[Path, str]:
    """A speech fixture; returns (path, engine used: "espeak" or "synthetic").

    `engine="auto"` uses espeak-ng when installed, else `speech_samples`. With espeak and
    `seconds`, the text is repeated (0.4 s apart) until long enough and cut to `seconds`;
    without espeak, `seconds` defaults to 4 and `text` is ignored.
    """
    if engine not in ("auto", "espeak", "synthetic"):
        raise ValueError(f"engine must be auto, espeak or synthetic, not {engine!r}")
    use_espeak = engine == "espeak" or (engine == "auto" and espeak_available())
    if not use_espeak:
        return write_audio(path, speech_samples(seconds or 4.0, rate, seed=seed), rate), "synthetic"
    said = espeak_samples(text or DEFAULT_TEXT, rate, voice)
    if seconds is not None:
        gap = np.zeros(round(0.4 * rate), np.float32)
        total = round(seconds * rate)
        parts = [said]
        while sum(p.size for p in parts) < total and said.size:
            parts += [gap, said]
        said = np.concatenate(parts)[:total]
        if said.size < total:
            said = np.concatenate([said, np.zeros(total - said.size, np.float32)])
        fade = min(said.size, round(0.02 * rate))
        said[said.size - fade :] *= np.linspace(1, 0, fade, dtype=np.float32)
    return write_audio(path, said, rate), "espeak"
