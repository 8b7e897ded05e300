"""`expect speech WORDS`: what the far side said, transcribed offline, matched loosely.

Recognition is pocketsphinx with its bundled US English model (the `voice` extra; no download
at run time) in grammar mode, which recognises synthetic and telephone speech far better than
its dictation model. The grammar is a loop over a small vocabulary: the expected words plus
decoys (digits and common prompt words), so a prompt is transcribed word by word and a prompt
without the expected words comes out as decoys. (A grammar of whole phrases, one per
utterance, would force a long prompt onto a single option: no keyword spotting.) Decoding
runs in a worker process.

The words count as heard when the word error rate of the best-matching stretch of the
transcript (words before and after are free) is at most the step's `max-wer` (default 0:
every expected word, in order).
"""

from __future__ import annotations

import asyncio
import hashlib
import multiprocessing
import re
import threading
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..media.analysis import AudioClip

#: The rate of the bundled acoustic model.
MODEL_RATE = 16000
#: Words prompts are made of, so a prompt without the expected words is heard as these.
_DECOY_TEXT = """
    zero one two three four five six seven eight nine star pound hash press for to the and or
    please thank you hello welcome goodbye menu option sales support billing information
    operator message record after tone beep yes no again repeat main back hold wait call leave
    your name number hang up this is desk calling
"""
DECOYS = tuple(_DECOY_TEXT.split())


@dataclass(frozen=True)
class Heard:
    """A transcript: the words, in order."""

    text: str

    @property
    def words(self) -> list[str]:
        return self.text.split()


def normalise(text: str) -> list[str]:
    """Lower-case words without punctuation, as the dictionary spells them."""
    return re.findall(r"[a-z0-9']+", text.lower())


def word_error_rate(expected: list[str], heard: list[str]) -> float:
    """Edits (substitutions, deletions, insertions) turning the best-matching stretch of
    `heard` into `expected`, over len(expected): keyword spotting with a tolerance."""
    if not expected:
        return 0.0
    previous = [0] * (len(heard) + 1)  # free start: any word of `heard` may begin the stretch
    for index, word in enumerate(expected, 1):
        current = [index] + [0] * len(heard)
        for j, other in enumerate(heard, 1):
            current[j] = min(previous[j - 1] + (word != other), previous[j] + 1, current[j - 1] + 1)
        previous = current
    return min(previous) / len(expected)  # free end


def available() -> str | None:
    """None when speech recognition can run here, else what to install."""
    try:
        import pocketsphinx  # noqa: F401
    except ImportError:
        return "expect speech WORDS needs pocketsphinx: pip install 'callbot[voice]'"
    return None


def grammar(expected: str) -> str:
    """A JSGF grammar (https://www.w3.org/TR/jsgf/): any sequence of the expected words and
    the decoys."""
    vocabulary = sorted({*normalise(expected), *DECOYS})
    return f"#JSGF V1.0;\ngrammar words;\npublic <s> = ( {' | '.join(vocabulary)} )+;\n"


class Spotter:
    """Decodes in a worker process of its own: pocketsphinx holds the GIL while it decodes
    (seconds per prompt), which in a thread would stall the call's media on the event loop.
    The worker loads the model once (seconds, ~120 MB) and keeps it."""

    _shared: Spotter | None = None
    _lock = threading.Lock()

    def __init__(self) -> None:
        context = multiprocessing.get_context("spawn")  # no copy of the caller's loop or sockets
        self._executor = ProcessPoolExecutor(max_workers=1, mp_context=context)

    @classmethod
    def shared(cls) -> Spotter:
        with cls._lock:
            if cls._shared is None:
                cls._shared = cls()
            return cls._shared

    def unknown_words(self, phrase: str) -> list[str]:
        """Words of `phrase` the recogniser's dictionary lacks (it cannot hear those)."""
        return self._executor.submit(_unknown, phrase).result()

    async def transcribe(self, clip: AudioClip, expected: str) -> Heard:
        audio = _to_model_rate(clip)
        loop = asyncio.get_running_loop()
        text = await loop.run_in_executor(self._executor, _decode, audio.tobytes(), expected)
        return Heard(text)


# -- in the worker process ----------------------------------------------------------------------

_decoder: Any = None
_searches: set[str] = set()


def _load() -> Any:
    global _decoder
    if _decoder is None:
        from pocketsphinx import Decoder

        # no lattice best-path pass: on a word-loop grammar it takes a minute per prompt
        # (the Viterbi result is as good here)
        _decoder = Decoder(samprate=MODEL_RATE, loglevel="FATAL", bestpath=False)
    return _decoder


def _unknown(phrase: str) -> list[str]:
    decoder = _load()
    return [w for w in normalise(phrase) if decoder.lookup_word(w) is None]


def _decode(audio: bytes, expected: str) -> str:
    decoder = _load()
    jsgf = grammar(expected)
    name = "w" + hashlib.sha1(jsgf.encode()).hexdigest()[:12]
    if name not in _searches:
        decoder.add_jsgf_string(name, jsgf)
        _searches.add(name)
    decoder.activate_search(name)
    decoder.start_utt()
    decoder.process_raw(audio, full_utt=True)
    decoder.end_utt()
    hyp = decoder.hyp()
    return " ".join(hyp.hypstr.split()) if hyp is not None else ""


def _to_model_rate(clip: AudioClip) -> np.ndarray:
    """16 kHz int16 samples (linear interpolation; speech has little above 8 kHz)."""
    samples = clip.samples.astype(np.float64)
    if clip.rate != MODEL_RATE and samples.size:
        count = round(samples.size * MODEL_RATE / clip.rate)
        samples = np.interp(
            np.linspace(0, samples.size, count, endpoint=False), np.arange(samples.size), samples
        )
    return (np.clip(samples, -1, 1) * 32767).astype(np.int16)
