"""Offline speech recognition with pocketsphinx and its bundled US English model.

One `Decoder` per `Recognizer` (the process shares `Recognizer.shared()`): loading one takes
seconds and ~120 MB, so it is built once and kept. Decoding runs in the recogniser's own worker
process, never on the event loop (nor holding its GIL), one utterance at a time. A `grammar`
(menu options such as ``["sales", "support"]``) switches to a JSGF grammar search, which is
fast and accurate for menus; without one the full language model is used (dictation: slower
and much weaker).
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import multiprocessing
import re
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any, Protocol

import av
import numpy as np

from ..errors import CallbotError

#: The rate the bundled acoustic model was trained at; other rates are resampled to it.
MODEL_RATE = 16000
#: Words a caller may say around a menu option ("i want to talk to sales please").
FILLER_BEFORE = ("press", "i want", "i want to talk to", "connect me to", "i would like")
FILLER_AFTER = ("please",)
#: Audio whose loudest 20 ms stays below this (dBFS) holds no speech: a grammar search would
#: force it onto some option, so it is not decoded at all.
SILENCE_DBFS = -45.0


class VoiceUnavailable(CallbotError):
    """An optional speech package is not installed; the message names the extra to install."""

    def __init__(self, package: str, extra: str, purpose: str) -> None:
        self.package = package
        self.extra = extra
        super().__init__(
            f"{purpose} needs the Python package {package!r}: pip install 'callbot[{extra}]'"
        )


@dataclass(frozen=True)
class Transcript:
    """What the recogniser heard: the words as text, their list, and a 0..1 confidence."""

    text: str
    confidence: float
    words: list[str] = field(default_factory=list)


class SpeechRecognizer(Protocol):
    """What `listen` and `ask` need: `Recognizer`, or a plugin's (a cloud service, say)."""

    async def transcribe(
        self, samples: np.ndarray, sample_rate: int, *, grammar: Sequence[str] | None = None
    ) -> Transcript: ...


_chosen: SpeechRecognizer | None = None


def use_recognizer(recognizer: SpeechRecognizer | None) -> None:
    """Make `recognizer` the one every call's `listen` / `ask` uses in this process (None:
    back to the offline `Recognizer.shared()`). How a plugin plugs in another engine."""
    global _chosen
    _chosen = recognizer


def current_recognizer() -> SpeechRecognizer:
    """The recogniser `listen` / `ask` use (raises `VoiceUnavailable` if that is pocketsphinx
    and it is not installed)."""
    return _chosen if _chosen is not None else Recognizer.shared()


def _pocketsphinx() -> Any:
    """The pocketsphinx module, or `VoiceUnavailable` naming the extra."""
    try:
        return importlib.import_module("pocketsphinx")
    except ImportError:
        raise VoiceUnavailable("pocketsphinx", "voice", "speech recognition") from None


def normalise(phrase: str) -> list[str]:
    """The words of `phrase` as the dictionary spells them: lower case, no punctuation."""
    return re.findall(r"[a-z0-9']+", phrase.lower())


def grammar_jsgf(options: Sequence[str]) -> str:
    """A JSGF grammar (https://www.w3.org/TR/jsgf/) accepting one of `options`, optionally
    wrapped in polite filler ("i want to talk to sales please")."""
    alternatives = sorted({" ".join(normalise(o)) for o in options} - {""})
    if not alternatives:
        raise ValueError("a grammar needs at least one option with a word in it")
    return (
        "#JSGF V1.0;\ngrammar menu;\n"
        f"<before> = {' | '.join(FILLER_BEFORE)};\n"
        f"<option> = {' | '.join(alternatives)};\n"
        f"public <menu> = [<before>] <option> [{' | '.join(FILLER_AFTER)}];\n"
    )


def to_model_rate(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    """Mono int16 `samples` resampled to 16 kHz (libswresample through PyAV)."""
    samples = np.ascontiguousarray(samples, dtype=np.int16).reshape(-1)
    if sample_rate == MODEL_RATE or samples.size == 0:
        return samples
    frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = sample_rate
    resampler = av.AudioResampler(format="s16", layout="mono", rate=MODEL_RATE)
    out = [
        f.to_ndarray().reshape(-1) for f in [*resampler.resample(frame), *resampler.resample(None)]
    ]
    return np.concatenate(out) if out else np.zeros(0, np.int16)


class Recognizer:
    """An offline recogniser: one pocketsphinx decoder in a worker process, loaded on first
    use and kept. A process, not a thread: pocketsphinx holds the GIL while it decodes (up to
    ~0.7 s for a sentence of dictation here), which would stall every call's media."""

    _shared: Recognizer | None = None
    _shared_lock = threading.Lock()

    def __init__(self) -> None:
        _pocketsphinx()  # fail here, clearly, when the extra is missing
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    @classmethod
    def shared(cls) -> Recognizer:
        """The process's recogniser (created on first call)."""
        with cls._shared_lock:
            if cls._shared is None:
                cls._shared = cls()
            return cls._shared

    async def load(self) -> None:
        """Start the worker and load the model now (seconds) rather than on first use."""
        await self._run(_warm)

    async def transcribe(
        self, samples: np.ndarray, sample_rate: int, *, grammar: Sequence[str] | None = None
    ) -> Transcript:
        """The words in `samples` (int16 mono at `sample_rate`), restricted to one of the
        `grammar` options (with filler words around it) when given."""
        jsgf = grammar_jsgf(grammar) if grammar is not None else None
        pcm = np.ascontiguousarray(samples, dtype=np.int16).tobytes()
        result: Transcript = await self._run(_decode, pcm, sample_rate, jsgf)
        return result

    def close(self) -> None:
        """Stop the worker process (a later call starts a new one)."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor(), fn, *args)
        except BrokenProcessPool:  # the worker died (killed, out of memory): start afresh
            self.close()
            raise CallbotError("the speech recogniser's worker process died") from None

    def _executor(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                # spawn: a fork of a process running an event loop and threads is unsafe
                context = multiprocessing.get_context("spawn")
                self._pool = ProcessPoolExecutor(max_workers=1, mp_context=context)
            return self._pool


class _Decoding:
    """The decoder and its grammar searches, in the recogniser's worker process."""

    def __init__(self) -> None:
        self.decoder = _pocketsphinx().Decoder(samprate=MODEL_RATE, loglevel="FATAL")
        self.searches: dict[str, str] = {}  # JSGF text digest -> search name

    def search(self, jsgf: str | None) -> str:
        """The name of the search for `jsgf` (added once), or the language model's."""
        if jsgf is None:
            return "_default"
        digest = hashlib.sha1(jsgf.encode()).hexdigest()[:16]
        name = self.searches.get(digest)
        if name is None:
            body = jsgf.split("<option> =", 1)[1].split(";", 1)[0]
            unknown = sorted({w for w in normalise(body) if self.decoder.lookup_word(w) is None})
            if unknown:
                raise ValueError(f"not in the recogniser's dictionary: {', '.join(unknown)}")
            name = f"g{digest}"
            self.decoder.add_jsgf_string(name, jsgf)
            self.searches[digest] = name
        return name

    def decode(self, audio: np.ndarray, jsgf: str | None) -> Transcript:
        search = self.search(jsgf)  # a bad grammar fails even on silence
        if not has_sound(audio):
            return Transcript("", 0.0, [])
        decoder = self.decoder
        decoder.activate_search(search)
        decoder.start_utt()
        decoder.process_raw(audio.tobytes(), full_utt=True)
        decoder.end_utt()
        hyp = decoder.hyp()
        if hyp is None or not hyp.hypstr.strip():
            return Transcript("", 0.0, [])
        words = hyp.hypstr.split()
        return Transcript(" ".join(words), _confidence(hyp), words)


_decoding: _Decoding | None = None  # the worker process's


def _load_decoder() -> _Decoding:
    """In the worker: the decoder, made on first use."""
    global _decoding
    if _decoding is None:
        _decoding = _Decoding()
    return _decoding


def _warm() -> None:
    """In the worker: load the decoder (nothing to send back)."""
    _load_decoder()


def _decode(pcm: bytes, sample_rate: int, jsgf: str | None) -> Transcript:
    """In the worker: one utterance."""
    audio = to_model_rate(np.frombuffer(pcm, np.int16), sample_rate)
    return _load_decoder().decode(audio, jsgf)


def has_sound(audio: np.ndarray) -> bool:
    """Whether some 20 ms of `audio` (16 kHz) is louder than `SILENCE_DBFS`."""
    size = MODEL_RATE // 50
    frames = audio[: len(audio) // size * size].astype(np.float64).reshape(-1, size)
    if not len(frames):
        return False
    loudest = float(np.sqrt((frames**2).mean(axis=1)).max())
    return loudest > 32768 * 10 ** (SILENCE_DBFS / 20)


def _confidence(hyp: Any) -> float:
    """A rough 0..1 score: pocketsphinx's path score per frame (higher is a cleaner match),
    not a calibrated probability; grammar searches always pick their closest option."""
    return float(min(1.0, max(0.0, hyp.score)))
