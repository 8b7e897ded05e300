"""What `Call.say`, `Call.listen` and `Call.ask` do: speak, capture one utterance and
transcribe it, and ask with barge-in (the prompt stops the moment the caller speaks or presses
a key). The call hands in its `SpeechListener`; nothing here touches the call's internals.
"""

from __future__ import annotations

import asyncio
import contextlib
import wave
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..media.playback import Playback
from .asr import MODEL_RATE, Recognizer, SpeechRecognizer, current_recognizer, normalise
from .listener import Segment, SpeechListener
from .tts import SPEECH


@dataclass(frozen=True)
class Utterance:
    """One thing the caller said: its words, a rough 0..1 `confidence` (see asr.py), where
    its audio was saved (`listen(save_to=...)`, else None), and when it `started` and `ended`
    (`time.monotonic()` values). `cut` is true when `max_seconds` ended it."""

    text: str
    confidence: float
    audio_path: Path | None
    started: float
    ended: float
    words: list[str] = field(default_factory=list)
    cut: bool = False


@dataclass(frozen=True)
class Answer:
    """What `ask()` got: the `choice` (the grammar option said, normalised) and the
    `utterance`, or the `digits` pressed; all empty when the caller stayed silent."""

    choice: str | None = None
    digits: str = ""
    utterance: Utterance | None = None

    @property
    def text(self) -> str:
        """The words said ("" if keys were pressed or nothing came)."""
        return self.utterance.text if self.utterance else ""


async def prepare(
    texts: Sequence[str] = (),
    voice: str | None = None,
    *,
    recognition: bool = True,
    grammars: Sequence[Sequence[str]] = (),
) -> None:
    """Load the recogniser (unless not `recognition`) and synthesise `texts` now, e.g. when
    the bot is ready, so that no caller waits seconds for either; each of `grammars` is
    checked too (`ValueError` naming a word the recogniser does not know)."""
    if recognition or grammars:
        await current_recognizer_loaded()
    for grammar in grammars:
        await current_recognizer().transcribe(np.zeros(MODEL_RATE // 50, np.int16), MODEL_RATE,
                                              grammar=grammar)  # fmt: skip
    for text in texts:
        await SPEECH.path(text, voice)


async def current_recognizer_loaded() -> None:
    """Load the offline recogniser now, unless a plugin replaced it."""
    recognizer = current_recognizer()
    if isinstance(recognizer, Recognizer):
        await recognizer.load()


def match_option(words: Sequence[str], options: Sequence[str]) -> str | None:
    """The option whose words occur, in order, in `words` (the longest if several do)."""
    said = f" {' '.join(words)} "
    found = [" ".join(normalise(o)) for o in options]
    hits = [o for o in found if o and f" {o} " in said]
    return max(hits, key=len) if hits else None


async def listen(
    listener: SpeechListener,
    *,
    timeout: float,
    max_seconds: float,
    end_silence: float,
    grammar: Sequence[str] | None,
    save_to: str | Path | None,
    recognizer: SpeechRecognizer | None = None,
) -> Utterance | None:
    """The next utterance, or None if no speech started within `timeout` seconds."""
    recognizer = recognizer or current_recognizer()  # a missing package fails before waiting
    segment = listener.segment(end_silence, max_seconds)
    try:
        started = await _wait(segment.started, timeout)
        if started is None:
            return None
        await segment.finished
    finally:
        listener.discard(segment)
    return await transcribe(segment, grammar, save_to, recognizer)


async def transcribe(
    segment: Segment,
    grammar: Sequence[str] | None,
    save_to: str | Path | None,
    recognizer: SpeechRecognizer,
) -> Utterance:
    """Recognise a finished segment (in the recogniser's thread) and save its audio."""
    audio = segment.audio()
    path = Path(save_to) if save_to is not None else None
    if path is not None:
        await asyncio.to_thread(_write_wav, path, audio.tobytes())
    transcript = await recognizer.transcribe(audio, MODEL_RATE, grammar=grammar)
    return Utterance(
        transcript.text,
        transcript.confidence,
        path,
        segment.started.result() or 0.0,
        segment.finished.result(),
        transcript.words,
        segment.cut,
    )


KeyReader = Callable[[float | None], Awaitable[str | None]]


async def ask(
    listener: SpeechListener,
    start_prompt: Callable[[], Awaitable[Playback | None]],
    read_key: KeyReader,
    *,
    grammar: Sequence[str] | None,
    digits: int,
    timeout: float,
    max_seconds: float,
    end_silence: float,
    recognizer: SpeechRecognizer | None = None,
) -> Answer:
    """Start the prompt and return what the caller says or presses (up to `digits` keys);
    either stops the prompt at once (barge-in). `timeout` runs from the end of the prompt."""
    recognizer = recognizer or current_recognizer()
    segment = listener.segment(end_silence, max_seconds)
    keys = asyncio.ensure_future(read_key(None)) if digits > 0 else None
    inputs: set[asyncio.Future[Any]] = {segment.started, *([keys] if keys else [])}
    try:
        prompt = await start_prompt()
        if prompt is not None:
            await asyncio.wait(inputs | {prompt.done}, return_when=asyncio.FIRST_COMPLETED)
            if any(f.done() for f in inputs):
                prompt.stop()  # barge-in
        if not any(f.done() for f in inputs):
            await asyncio.wait(inputs, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if segment.started.done() and segment.started.result() is not None:
            # a key during the utterance still wins: in-band tones sound like speech
            ending: set[asyncio.Future[Any]] = {segment.finished, *([keys] if keys else [])}
            await asyncio.wait(ending, return_when=asyncio.FIRST_COMPLETED)
        first = keys.result() if keys is not None and keys.done() else None
        if first:
            return Answer(digits=await _more_keys(first, digits, timeout, read_key))
        if not segment.finished.done() or segment.started.result() is None:
            return Answer()
    finally:
        listener.discard(segment)
        if keys is not None:
            keys.cancel()
    utterance = await transcribe(segment, grammar, None, recognizer)
    choice = match_option(utterance.words, grammar) if grammar else None
    return Answer(choice=choice, utterance=utterance)


async def _more_keys(first: str, digits: int, timeout: float, read_key: KeyReader) -> str:
    """`first` and up to `digits - 1` more keys, each within `timeout` of the one before."""
    pressed = first
    while len(pressed) < digits:
        key = await read_key(timeout)
        if key is None:
            break
        pressed += key
    return pressed


async def _wait(future: asyncio.Future[float | None], timeout: float) -> float | None:
    """`future`'s result, or None after `timeout` seconds (the future is left running)."""
    with contextlib.suppress(TimeoutError):
        return await asyncio.wait_for(asyncio.shield(future), timeout)
    return None


def _write_wav(path: Path, pcm: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(MODEL_RATE)
        out.writeframes(pcm)
