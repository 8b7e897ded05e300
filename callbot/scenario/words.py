"""`expect speech WORDS`: what the far side said, transcribed offline, matched loosely.

The recogniser is `callbot.voice.asr` (pocketsphinx and its bundled US English model, the
`voice` extra). It runs in grammar mode: a grammar of the expected words alone would hear them
in any sound, so it also holds decoys (digits and common menu words, each alone) that a
different prompt matches instead. The expected words count as heard when the word error rate
of the best-matching stretch of the transcript (words before and after are free) is at most
the step's `max-wer` (default 0: every word, in order).
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np

from ..media.analysis import AudioClip

#: Words a menu prompt is made of, so that a prompt without the expected words matches these.
DECOYS = (
    "zero one two three four five six seven eight nine star pound hash "
    "press for to the and or please thank you hello welcome goodbye menu option "
    "sales support billing info information operator message record after tone beep "
    "yes no again repeat main back hold wait call leave your name number"
).split()


def normalise(text: str) -> list[str]:
    import re

    return re.findall(r"[a-z0-9']+", text.lower())


def word_error_rate(expected: list[str], heard: list[str]) -> float:
    """Edits (substitutions, deletions, insertions) turning the best-matching stretch of
    `heard` into `expected`, over len(expected): keyword spotting with a tolerance."""
    if not expected:
        return 0.0
    # edit distance where the stretch of `heard` may start and end anywhere (free ends)
    previous = [0] * (len(heard) + 1)
    for index, word in enumerate(expected, 1):
        current = [index] + [0] * len(heard)
        for j, other in enumerate(heard, 1):
            current[j] = min(
                previous[j - 1] + (word != other), previous[j] + 1, current[j - 1] + 1
            )
        previous = current
    return min(previous) / len(expected)


def available() -> str | None:
    """None when speech recognition can run, else why not (the extra to install)."""
    try:
        from ..voice import asr  # noqa: F401
    except ImportError:
        return "expect speech WORDS needs callbot.voice (pip install 'callbot[voice]')"
    try:
        import pocketsphinx  # noqa: F401
    except ImportError:
        return "expect speech WORDS needs pocketsphinx: pip install 'callbot[voice]'"
    return None


def grammar_for(expected: str) -> list[str]:
    """The options of the recognition grammar: the expected phrase and the decoys."""
    phrase = " ".join(normalise(expected))
    return [phrase, *(word for word in DECOYS if word != phrase)]


async def transcribe(clip: AudioClip, expected: str) -> Any:
    """A `Transcript` of the clip in grammar mode (see the module docstring)."""
    from ..voice.asr import Recognizer

    recognizer = Recognizer.shared()
    samples = np.clip(clip.samples, -1, 1)
    result = recognizer.transcribe(samples, clip.rate, grammar=grammar_for(expected))
    if asyncio.iscoroutine(result):
        return await result
    return result
