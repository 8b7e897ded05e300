"""Session fixtures for speech tests: the recogniser and the piper voice load once (seconds
each), and every sentence is synthesised once per session (offline, by piper)."""

from __future__ import annotations

import asyncio
import wave
from collections.abc import Awaitable, Callable
from pathlib import Path

import numpy as np
import pytest

from callbot.voice.asr import Recognizer
from callbot.voice.tts import SPEECH

#: A sentence spoken by piper, as 16-bit mono samples and their rate.
Spoken = tuple[np.ndarray, int]


@pytest.fixture(scope="session")
def recognizer() -> Recognizer:
    """The process's recogniser, its model loaded."""
    shared = Recognizer.shared()
    asyncio.run(shared.load())
    return shared


@pytest.fixture(scope="session")
def speak() -> Callable[[str], Awaitable[Spoken]]:
    """Factory: `await speak(text)` -> the samples piper says it with (cached per session)."""
    SPEECH.warm("piper")
    cache: dict[str, Spoken] = {}

    async def make(text: str) -> Spoken:
        if text not in cache:
            path = await SPEECH.path(text, "piper")
            cache[text] = read_wav(path)
        return cache[text]

    return make


def read_wav(path: Path) -> Spoken:
    with wave.open(str(path)) as wav:
        assert wav.getsampwidth() == 2 and wav.getnchannels() == 1
        return np.frombuffer(wav.readframes(wav.getnframes()), np.int16), wav.getframerate()
