"""Checks on what came back from a call: tone, silence, duration, DTMF, video, speech.

Shared by `callbot call --expect-*` and the pytest plugin (`callbot.testing`). Every check
returns a `CheckResult` whose `message` is one line naming the file (or "audio"/"video" for
frames and arrays), what was expected and what was measured, e.g.

    out.wav: no 440 Hz tone (strongest 1000.0 Hz at -9.0 dBFS; 440 Hz at -71.3 dBFS, need -40)

`Expectation` is the declarative form used by `CallPlan.expect`: it names the recording it
needs (audio or video) and runs the matching check on it after the call.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import av
import av.error
import numpy as np

from ..errors import MediaError
from ..media import analysis
from ..media.analysis import AudioClip, AudioInput

#: Tone search: analysis window and hop (seconds). 100 ms resolves about 10 Hz.
TONE_WINDOW, TONE_HOP = 0.1, 0.05
#: A tone must carry at least a quarter of its window's energy (6 dB under the window's level):
#: chords of up to 4 tones pass, a voice's harmonics (even a monotone synthetic voice's) do not.
TONE_PROMINENCE_DB = 6.0

# Speech-likeness thresholds (see `speech_features`).
SPEECH_MIN_ACTIVE = 1.0  # seconds of sound to judge
SPEECH_MIN_DEPTH = 0.4  # envelope standard deviation / mean
SPEECH_MIN_SYLLABIC = 0.3  # share of envelope modulation power at 2-8 Hz
SPEECH_MIN_PAUSES = 1  # gaps of >= 80 ms, 20 dB under the speech level
SPEECH_MAX_TONALITY = 0.8  # share of energy in the 2 strongest spectral peaks
SPEECH_MAX_FLATNESS = 0.3  # spectral flatness (white noise ~0.56)


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check: `ok`, a one-line `message`, and the numbers measured."""

    name: str
    ok: bool
    message: str
    measured: dict[str, Any] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return self.ok

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _label(source: object, label: str | None, kind: str = "audio") -> str:
    if label is not None:
        return label
    if isinstance(source, str | os.PathLike):
        return os.fspath(source)
    return kind


def _fmt_db(value: float) -> str:
    return "-inf dBFS" if value == -math.inf else f"{value:.1f} dBFS"


def _round(value: float | None, digits: int = 1) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return round(float(value), digits)


def _load(source: AudioInput, rate: int | None, label: str, name: str) -> AudioClip | CheckResult:
    """The clip, or a failed result naming why the source could not be read."""
    if isinstance(source, str | os.PathLike) and not os.path.exists(source):
        return CheckResult(name, False, f"{label}: file not found", {"error": "file not found"})
    try:
        return analysis.to_clip(source, rate)
    except MediaError as exc:
        return CheckResult(name, False, f"{label}: {exc.reason}", {"error": str(exc)})


def _windows(clip: AudioClip, window: float, hop: float) -> tuple[np.ndarray, int]:
    """Start indices of analysis windows, and the window size in samples."""
    size = min(len(clip.samples), max(16, round(window * clip.rate)))
    step = max(1, round(hop * clip.rate))
    if size == 0:
        return np.zeros(0, int), 0
    return np.arange(0, len(clip.samples) - size + 1, step), size


def _tone_levels(
    clip: AudioClip, frequencies: Sequence[float], window: float = TONE_WINDOW
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per window: the best level (dBFS) over `frequencies`, the window's level, and starts (s)."""
    starts, size = _windows(clip, window, TONE_HOP)
    if starts.size == 0:
        return np.zeros(0), np.zeros(0), np.zeros(0)
    samples = clip.samples.astype(np.float64)
    hann = np.hanning(size)
    basis = np.exp(-2j * np.pi * np.outer(np.arange(size), frequencies) / clip.rate)
    best, total = np.empty(starts.size), np.empty(starts.size)
    for first in range(0, starts.size, 256):  # bounded memory on long recordings
        chunk = starts[first : first + 256]
        blocks = samples[chunk[:, None] + np.arange(size)]
        amplitudes = 2 * np.abs((blocks * hann) @ basis) / hann.sum()
        best[first : first + chunk.size] = amplitudes.max(axis=1) / math.sqrt(2)
        total[first : first + chunk.size] = np.sqrt(np.mean(blocks**2, axis=1))
    with np.errstate(divide="ignore"):
        return 20 * np.log10(best), 20 * np.log10(total), starts / clip.rate


def _probe_frequencies(hz: float, tolerance: float) -> list[float]:
    steps = max(1, math.ceil(tolerance / 2.5))
    return list(np.linspace(hz - tolerance, hz + tolerance, 2 * steps + 1))


# -- tone ---------------------------------------------------------------------------------------


def check_tone(
    source: AudioInput,
    hz: float,
    min_db: float = -40.0,
    *,
    min_seconds: float = 0.2,
    tolerance: float | None = None,
    rate: int | None = None,
    label: str | None = None,
) -> CheckResult:
    """A steady tone at `hz` (± `tolerance`, default 1 %, plus about 8 Hz of analysis
    resolution): at least `min_db` dBFS without a break for `min_seconds`, carrying at least a
    quarter of the energy of each 100 ms window (50 ms apart) where it counts, so a chord's
    notes count but a voice's harmonics do not."""
    name = f"tone {hz:g} Hz"
    label = _label(source, label)
    clip = _load(source, rate, label, name)
    if isinstance(clip, CheckResult):
        return clip
    tolerance = max(1.0, 0.01 * hz) if tolerance is None else tolerance
    tone_db, window_db, starts = _tone_levels(clip, _probe_frequencies(hz, tolerance))
    present = (tone_db >= min_db) & (tone_db >= window_db - TONE_PROMINENCE_DB)
    run, run_start = _longest_run(present)
    window = min(TONE_WINDOW, clip.duration)
    seconds = 0.0 if run == 0 else min(clip.duration, window + (run - 1) * TONE_HOP)
    peak_db = float(tone_db.max()) if tone_db.size else -math.inf
    measured: dict[str, Any] = {
        "hz": hz,
        "level_dbfs": _round(peak_db),
        "seconds": round(seconds, 2),
        "min_db": min_db,
        "min_seconds": min_seconds,
    }
    if present.any() and seconds >= min_seconds - 1e-9:
        first = float(starts[run_start])
        measured["first_at"] = round(first, 2)
        level = float(tone_db[run_start : run_start + run].max())
        return CheckResult(
            name,
            True,
            f"{label}: {hz:g} Hz tone at {_fmt_db(level)} for {seconds:.2f} s (from {first:.2f} s)",
            measured,
        )
    if present.any():
        return CheckResult(
            name,
            False,
            f"{label}: {hz:g} Hz tone only for {seconds:.2f} s (need {min_seconds:g} s), "
            f"at {_fmt_db(float(tone_db[present].max()))}",
            measured,
        )
    level = analysis.level_dbfs(clip)
    measured["file_level_dbfs"] = _round(level)
    if level < analysis.SILENCE_DB:
        return CheckResult(
            name,
            False,
            f"{label}: no {hz:g} Hz tone (the audio is silent: {_fmt_db(level)}, "
            f"{clip.duration:.2f} s)",
            measured,
        )
    strongest = analysis.dominant_frequency(_loud_part(clip))
    strongest_db = _tone_levels(clip, _probe_frequencies(strongest, 1.0))[0].max()
    measured["strongest_hz"] = round(strongest, 1)
    measured["strongest_dbfs"] = _round(float(strongest_db))
    buried = ""
    if peak_db >= min_db:
        buried = ", drowned in other sound (a tone must carry 25 % of the energy)"
    return CheckResult(
        name,
        False,
        f"{label}: no {hz:g} Hz tone (strongest {strongest:.1f} Hz at {_fmt_db(strongest_db)}; "
        f"{hz:g} Hz at {_fmt_db(peak_db)}{buried}, need {min_db:g})",
        measured,
    )


def _longest_run(flags: np.ndarray) -> tuple[int, int]:
    """(length, start index) of the longest run of True in `flags` ((0, 0) if none)."""
    best, best_start, run = 0, 0, 0
    for index, flag in enumerate(flags):
        run = run + 1 if flag else 0
        if run > best:
            best, best_start = run, index - run + 1
    return best, best_start


def _loud_part(clip: AudioClip) -> AudioClip:
    span = analysis.active_span(clip, threshold_db=analysis.SILENCE_DB)
    if span is None or (span[1] - span[0]) * clip.rate < 16:
        return clip
    return clip.slice(*span)


# -- silence ------------------------------------------------------------------------------------


def check_silence(
    source: AudioInput,
    max_db: float = analysis.SILENCE_DB,
    *,
    rate: int | None = None,
    label: str | None = None,
) -> CheckResult:
    """Every 100 ms of the audio is quieter than `max_db` dBFS."""
    name = "silence"
    label = _label(source, label)
    clip = _load(source, rate, label, name)
    if isinstance(clip, CheckResult):
        return clip
    levels, step = analysis.window_levels(clip, 0.1)
    loudest = float(levels.max()) if levels.size else analysis.level_dbfs(clip)
    measured: dict[str, Any] = {
        "loudest_dbfs": _round(loudest),
        "max_db": max_db,
        "seconds": round(clip.duration, 2),
    }
    if loudest < max_db:
        return CheckResult(
            name, True, f"{label}: silent (loudest 0.1 s at {_fmt_db(loudest)})", measured
        )
    at = float(np.argmax(levels) * step) if levels.size else 0.0
    span = analysis.active_span(clip, threshold_db=max_db)
    measured["loudest_at"] = round(at, 2)
    where = f"; sound from {span[0]:.2f} s to {span[1]:.2f} s" if span else ""
    return CheckResult(
        name,
        False,
        f"{label}: not silent: loudest 0.1 s at {at:.2f} s is {_fmt_db(loudest)} "
        f"(limit {max_db:g} dBFS){where}",
        measured,
    )


# -- duration -----------------------------------------------------------------------------------


def media_duration(path: str | os.PathLike[str]) -> float:
    """Seconds from the first to the end of the last decoded frame, over all audio and video
    streams (so it works for recordings whose container has no duration in its header)."""
    try:
        with av.open(os.fspath(path)) as container:
            streams = [*container.streams.audio, *container.streams.video]
            if not streams:
                raise MediaError(path, "no audio or video stream")
            first, last = math.inf, -math.inf
            video_times: list[float] = []
            for frame in container.decode(*streams):
                if not isinstance(frame, av.AudioFrame | av.VideoFrame) or frame.time is None:
                    continue  # (only audio and video streams are decoded)
                first = min(first, frame.time)
                if isinstance(frame, av.AudioFrame):
                    last = max(last, frame.time + frame.samples / frame.sample_rate)
                else:
                    video_times.append(frame.time)
            if video_times:  # the last frame lasts as long as a typical frame
                step = float(np.median(np.diff(sorted(video_times)))) if len(video_times) > 1 else 0
                last = max(last, max(video_times) + step)
    except av.error.FFmpegError as exc:
        raise MediaError(path, f"cannot read ({exc})") from exc
    except FileNotFoundError as exc:
        raise MediaError(path, "file not found") from exc
    return max(0.0, last - first) if math.isfinite(first) else 0.0


def check_duration(
    source: str | os.PathLike[str] | AudioInput,
    seconds: float,
    tol: float = 0.5,
    *,
    rate: int | None = None,
    label: str | None = None,
) -> CheckResult:
    """The media lasts `seconds` ± `tol` (a file of any kind, or audio frames/arrays)."""
    name = f"duration {seconds:g} s"
    label = _label(source, label)
    try:
        if isinstance(source, str | os.PathLike):
            measured_s = media_duration(source)
        else:
            measured_s = analysis.to_clip(source, rate).duration
    except MediaError as exc:
        return CheckResult(name, False, f"{label}: {exc.reason}", {"error": str(exc)})
    measured = {"seconds": round(measured_s, 3), "expected": seconds, "tol": tol}
    ok = abs(measured_s - seconds) <= tol
    verdict = "" if ok else " (expected " + f"{seconds:g} ± {tol:g} s)"
    return CheckResult(name, ok, f"{label}: {measured_s:.2f} s long{verdict}", measured)


# -- DTMF ---------------------------------------------------------------------------------------

DtmfInput = AudioInput | Sequence[tuple[str, float]]


def check_dtmf(
    source: DtmfInput,
    digits: str,
    *,
    exact: bool = True,
    rate: int | None = None,
    label: str | None = None,
) -> CheckResult:
    """The DTMF keys heard are `digits` (or contain them, with `exact=False`).

    `source` is audio (detected with `analysis.detect_dtmf`) or already-detected events
    `[(digit, seconds), ...]`.
    """
    name = f"DTMF {digits}"
    label = _label(source, label)
    for digit in digits:
        analysis.dtmf_frequencies(digit)  # ValueError for a key that does not exist
    events = _dtmf_events(source)
    if events is None:
        clip = _load(source, rate, label, name)  # type: ignore[arg-type]
        if isinstance(clip, CheckResult):
            return clip
        events = analysis.detect_dtmf(clip)
    heard = "".join(digit for digit, _ in events)
    ok = heard == digits.upper() if exact else digits.upper() in heard
    measured = {"heard": heard, "expected": digits, "events": [list(e) for e in events]}
    if ok:
        return CheckResult(name, True, f"{label}: heard DTMF {heard!r}", measured)
    timeline = ", ".join(f"{d} at {t:.2f} s" for d, t in events[:12])
    timeline += ", …" if len(events) > 12 else ""
    got = f"heard {heard!r} ({timeline})" if heard else "heard no DTMF"
    want = repr(digits) if exact else f"containing {digits!r}"
    return CheckResult(name, False, f"{label}: expected DTMF {want}, {got}", measured)


def _dtmf_events(source: object) -> list[tuple[str, float]] | None:
    if isinstance(source, list | tuple) and all(
        isinstance(item, list | tuple) and len(item) == 2 and isinstance(item[0], str)
        for item in source
    ):
        return [(str(d).upper(), float(t)) for d, t in source]
    return None


# -- video --------------------------------------------------------------------------------------


def video_info(source: str | os.PathLike[str] | Iterable[av.VideoFrame]) -> dict[str, Any]:
    """Frame count, first frame size, duration and mean rate of a video file or frames."""
    if isinstance(source, str | os.PathLike):
        try:
            with av.open(os.fspath(source)) as container:
                if not container.streams.video:
                    raise MediaError(source, "no video stream")
                frames = [(f.width, f.height, f.time) for f in container.decode(video=0)]
        except av.error.FFmpegError as exc:
            raise MediaError(source, f"cannot read video ({exc})") from exc
        except FileNotFoundError as exc:
            raise MediaError(source, "file not found") from exc
    else:
        frames = [(f.width, f.height, f.time) for f in source]
    times = [t for _, _, t in frames if t is not None]
    span = (max(times) - min(times)) if len(times) > 1 else 0.0
    return {
        "frames": len(frames),
        "width": frames[0][0] if frames else None,
        "height": frames[0][1] if frames else None,
        "sizes": sorted({(w, h) for w, h, _ in frames}),
        "seconds": round(span, 2),
        "fps": round((len(times) - 1) / span, 1) if span > 0 else None,
    }


def check_video(
    source: str | os.PathLike[str] | Iterable[av.VideoFrame],
    min_frames: int = 1,
    size: tuple[int, int] | None = None,
    *,
    label: str | None = None,
) -> CheckResult:
    """At least `min_frames` video frames, all of `size` (width, height) when given."""
    name = f"video ≥ {min_frames} frames" + (f" of {size[0]}x{size[1]}" if size else "")
    label = _label(source, label, "video")
    try:
        info = video_info(source)
    except MediaError as exc:
        return CheckResult(name, False, f"{label}: {exc.reason}", {"error": str(exc)})
    measured = {k: v for k, v in info.items() if k != "sizes"}
    sizes = info["sizes"]
    shown = ", ".join(f"{w}x{h}" for w, h in sizes[:4]) or "no size"
    found = f"{info['frames']} video frames of {shown}"
    enough = info["frames"] >= min_frames
    right_size = size is None or (bool(sizes) and all(tuple(s) == tuple(size) for s in sizes))
    if enough and right_size:
        return CheckResult(name, True, f"{label}: {found}", measured)
    want = [f"at least {min_frames} frames"] if not enough else []
    if not right_size and size is not None:
        want.append(f"{size[0]}x{size[1]}")
    return CheckResult(name, False, f"{label}: {found} (expected {', '.join(want)})", measured)


# -- speech-likeness ----------------------------------------------------------------------------


def speech_features(source: AudioInput, rate: int | None = None) -> dict[str, Any]:
    """What makes audio sound like someone talking, measured on its sounding part.

    - `depth`: the 10 ms energy envelope's standard deviation over its mean (a steady tone or
      steady noise is near 0, speech near 1);
    - `syllabic`: the share of the envelope's modulation power between 2 and 8 Hz (syllables);
    - `pauses`: gaps of at least 80 ms 20 dB below the speech level (95th percentile);
    - `tonality`: median share of each loud 40 ms window's energy in its 2 strongest spectral
      peaks (1.0 for one or two pure tones such as beeps and DTMF, about 0.5 for a voice);
    - `flatness`: median spectral flatness of loud windows (white noise ~0.56, voice < 0.05).
    """
    clip = analysis.to_clip(source, rate)
    samples = clip.samples.astype(np.float64)
    hop = max(1, round(0.01 * clip.rate))
    count = len(samples) // hop
    result: dict[str, Any] = {"active_seconds": 0.0, "level_dbfs": None}
    if count < 10:
        return result
    envelope = np.sqrt(np.mean(samples[: count * hop].reshape(count, hop) ** 2, axis=1))
    levels = 20 * np.log10(np.maximum(envelope, 1e-10))  # digital silence reads -200 dB
    loud = float(np.percentile(levels, 95))
    result["level_dbfs"] = _round(loud)
    if loud < analysis.SILENCE_DB:
        return result
    active = np.flatnonzero(levels > loud - 35)
    first, last = int(active[0]), int(active[-1]) + 1
    envelope, levels = envelope[first:last], levels[first:last]
    result["active_seconds"] = round((last - first) * 0.01, 2)
    centred = envelope - envelope.mean()
    power = np.abs(np.fft.rfft(centred * np.hanning(centred.size))) ** 2
    freqs = np.fft.rfftfreq(centred.size, 0.01)
    modulation = power[(freqs >= 0.5) & (freqs <= 25)].sum()
    result["depth"] = round(float(envelope.std() / envelope.mean()), 2)
    syllabic = power[(freqs >= 2) & (freqs <= 8)].sum() / modulation if modulation > 0 else 0.0
    result["syllabic"] = round(float(syllabic), 2)
    quiet = np.append(levels < loud - 20, False)
    pauses, run = 0, 0
    for is_quiet in quiet:
        if is_quiet:
            run += 1
        else:
            pauses += run >= 8
            run = 0
    result["pauses"] = int(pauses)
    result["pause_share"] = round(float(quiet[:-1].mean()), 2)
    # spectral shape of the loud 40 ms windows
    size = round(0.04 * clip.rate)
    part = samples[first * hop : last * hop]
    starts = np.arange(0, max(0, part.size - size + 1), size // 2)
    if starts.size:
        blocks = part[starts[:, None] + np.arange(size)]
        keep = 20 * np.log10(np.sqrt(np.mean(blocks**2, axis=1)) + 1e-12) >= loud - 15
        spectra = np.abs(np.fft.rfft(blocks[keep] * np.hanning(size), axis=1)) ** 2
    else:
        spectra = np.zeros((0, 1))
    if spectra.shape[0]:
        result["tonality"] = round(float(np.median(_peak_share(spectra))), 2)
        floor = spectra[:, 1:] + 1e-20
        flatness = np.exp(np.mean(np.log(floor), axis=1)) / np.mean(floor, axis=1)
        result["flatness"] = round(float(np.median(flatness)), 3)
    return result


def _peak_share(spectra: np.ndarray, peaks: int = 2, half_width: int = 2) -> np.ndarray:
    """Per row: the share of power within ±half_width bins of the `peaks` strongest bins."""
    power = spectra.copy()
    total = power.sum(axis=1) + 1e-30
    taken = np.zeros(power.shape[0])
    columns = np.arange(power.shape[1])
    for _ in range(peaks):
        top = np.argmax(power, axis=1)
        near = np.abs(columns[None, :] - top[:, None]) <= half_width
        taken += np.where(near, power, 0).sum(axis=1)
        power[near] = 0
    share: np.ndarray = taken / total
    return share


def check_speech_like(
    source: AudioInput, *, rate: int | None = None, label: str | None = None
) -> CheckResult:
    """The audio has a voice's rhythm and spectrum: a 2-8 Hz (syllable-rate) energy
    modulation of real depth, pauses, and a spectrum that is neither one or two pure tones nor
    flat noise. A steady tone, white noise, beeps, DTMF and silence fail."""
    name = "speech-like"
    label = _label(source, label)
    clip = _load(source, rate, label, name)
    if isinstance(clip, CheckResult):
        return clip
    features = speech_features(clip)
    active = features["active_seconds"]
    if features["level_dbfs"] is None or active == 0.0:
        level = analysis.level_dbfs(clip)
        return CheckResult(
            name, False, f"{label}: not speech-like: silent ({_fmt_db(level)})", features
        )
    if active < SPEECH_MIN_ACTIVE:
        return CheckResult(
            name,
            False,
            f"{label}: not speech-like: only {active:.2f} s of sound "
            f"(need {SPEECH_MIN_ACTIVE:g} s)",
            features,
        )
    problems = []
    if features["depth"] < SPEECH_MIN_DEPTH:
        problems.append(f"steady level (modulation depth {features['depth']:.2f} < "
                        f"{SPEECH_MIN_DEPTH})")  # fmt: skip
    if features["syllabic"] < SPEECH_MIN_SYLLABIC:
        problems.append(f"no syllable rhythm (2-8 Hz share {features['syllabic']:.2f} < "
                        f"{SPEECH_MIN_SYLLABIC})")  # fmt: skip
    if features["pauses"] < SPEECH_MIN_PAUSES:
        problems.append("no pauses")
    if features.get("tonality", 0.0) > SPEECH_MAX_TONALITY:
        problems.append(f"pure tones ({features['tonality']:.0%} of the energy in 2 "
                        f"spectral peaks > {SPEECH_MAX_TONALITY:.0%})")  # fmt: skip
    if features.get("flatness", 0.0) > SPEECH_MAX_FLATNESS:
        problems.append(f"noise (spectral flatness {features['flatness']:.2f} > "
                        f"{SPEECH_MAX_FLATNESS})")  # fmt: skip
    summary = (
        f"{active:.2f} s of sound at {features['level_dbfs']:.1f} dBFS, depth "
        f"{features['depth']:.2f}, 2-8 Hz share {features['syllabic']:.2f}, "
        f"{features['pauses']} pause{'' if features['pauses'] == 1 else 's'}"
    )
    if problems:
        return CheckResult(
            name, False, f"{label}: not speech-like: {'; '.join(problems)} ({summary})", features
        )
    return CheckResult(name, True, f"{label}: speech-like ({summary})", features)


# -- declarative expectations (callbot call --expect-*, CallPlan.expect) -------------------------


@dataclass(frozen=True)
class Expectation:
    """A check to run on a call's recording after the call. Build with the class methods."""

    kind: str
    value: Any = None
    options: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def tone(cls, hz: float, min_db: float = -40.0, min_seconds: float = 0.2) -> Expectation:
        return cls("tone", float(hz), (("min_db", min_db), ("min_seconds", min_seconds)))

    @classmethod
    def dtmf(cls, digits: str, exact: bool = True) -> Expectation:
        for digit in digits:
            analysis.dtmf_frequencies(digit)  # ValueError for a key that does not exist
        return cls("dtmf", digits.upper(), (("exact", exact),))

    @classmethod
    def video_frames(cls, count: int, size: tuple[int, int] | None = None) -> Expectation:
        return cls("video", int(count), (("size", size),))

    @classmethod
    def silence(cls, max_db: float = analysis.SILENCE_DB) -> Expectation:
        return cls("silence", max_db)

    @classmethod
    def speech(cls) -> Expectation:
        return cls("speech")

    @property
    def needs(self) -> str:
        """The recording this check reads: "audio" or "video"."""
        return "video" if self.kind == "video" else "audio"

    @property
    def name(self) -> str:
        options = dict(self.options)
        return {
            "tone": lambda: f"tone {self.value:g} Hz",
            "dtmf": lambda: f"DTMF {self.value}",
            "video": lambda: (
                f"at least {self.value} video frames"
                + (f" of {options['size'][0]}x{options['size'][1]}" if options.get("size") else "")
            ),
            "silence": lambda: "silence",
            "speech": lambda: "speech",
        }[self.kind]()

    def check(self, path: str | os.PathLike[str]) -> CheckResult:
        options = dict(self.options)
        result = {
            "tone": lambda: check_tone(path, self.value, **options),
            "dtmf": lambda: check_dtmf(path, self.value, **options),
            "video": lambda: check_video(path, self.value, **options),
            "silence": lambda: check_silence(path, self.value),
            "speech": lambda: check_speech_like(path),
        }[self.kind]()
        return CheckResult(self.name, result.ok, result.message, result.measured)

    def not_checked(self, reason: str) -> CheckResult:
        return CheckResult(self.name, False, f"not checked: {reason}", {"skipped": True})


def evaluate(expect: Sequence[Expectation], recordings: dict[str, Path | None]) -> list[dict]:
    """Run each expectation on its recording; report entries for `callbot call --json`."""
    out = []
    for expectation in expect:
        path = recordings.get(expectation.needs)
        if path is None or not Path(path).exists():
            result = CheckResult(
                expectation.name,
                False,
                f"no {expectation.needs} was recorded"
                + (f" ({path} does not exist)" if path is not None else ""),
            )
        else:
            result = expectation.check(path)
        out.append(result.as_dict())
    return out


def failure_reason(report: dict[str, Any]) -> str | None:
    """One line saying why a `callbot call` report is not ok, or None when it is."""
    if report.get("ok"):
        return None
    peer = report.get("peer", "the peer")
    if not report.get("connected"):
        return f"call to {peer} failed: {report.get('error') or report.get('end_reason')}"
    if report.get("end_reason") not in ("hangup", "remote_hangup"):
        return f"call to {peer} ended: {report.get('error') or report.get('end_reason')}"
    failed = [e for e in report.get("expectations", []) if not e["ok"]]
    if not failed:
        return f"call to {peer} failed" + (f": {report['error']}" if report.get("error") else "")
    head = "expectation failed" if len(failed) == 1 else f"{len(failed)} expectations failed"
    return f"{head}: " + "; ".join(f"{e['name']}: {e['message']}" for e in failed)


def from_options(
    tones: Sequence[float] = (),
    dtmf: str | None = None,
    video_frames: int | None = None,
    speech: bool = False,
) -> list[Expectation]:
    """The expectations of `callbot call --expect-tone/--expect-dtmf/--expect-video-frames/
    --expect-speech` (a bad DTMF key is a usage error)."""
    import click

    expect = [Expectation.tone(hz) for hz in tones]
    if dtmf is not None:
        try:
            expect.append(Expectation.dtmf(dtmf))
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--expect-dtmf") from exc
    if video_frames is not None:
        expect.append(Expectation.video_frames(video_frames))
    if speech:
        expect.append(Expectation.speech())
    return expect
