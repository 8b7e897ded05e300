"""The plug points for other speech engines (a cloud service, say): `SPEECH.register` for
synthesis and `use_recognizer` for recognition, used by real calls."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from callbot.media import analysis
from callbot.testing import generate
from callbot.voice import SPEECH, Recognizer, Transcript, use_recognizer

from helpers import collect_frames


class ToneEngine:
    """A synthesis engine that 'speaks' every text as a 660 Hz tone."""

    name = "test-tones"

    def synthesize(self, text: str, voice: str | None, path: Path) -> None:
        generate.write_tone(path, 660.0, seconds=1.0)


class CountingRecognizer:
    """A recogniser that records what it is given and asks the offline one."""

    def __init__(self) -> None:
        self.rates: list[int] = []

    async def transcribe(
        self, samples: np.ndarray, sample_rate: int, *, grammar: Sequence[str] | None = None
    ) -> Transcript:
        self.rates.append(sample_rate)
        return await Recognizer.shared().transcribe(samples, sample_rate, grammar=grammar)


async def test_a_registered_engine_speaks_in_say(call_pair) -> None:
    caller, callee = call_pair
    SPEECH.register(ToneEngine())
    frames = callee.audio_frames()
    await caller.say("hello from the cloud", "test-tones")
    heard = await collect_frames(frames, 0.8)
    assert analysis.tone_level_db(heard, 660.0) > -30


async def test_use_recognizer_replaces_the_offline_one(call_pair, recognizer, speak) -> None:
    caller, callee = call_pair
    plugged = CountingRecognizer()
    use_recognizer(plugged)
    try:
        heard = asyncio.create_task(callee.listen(timeout=10, grammar=["sales", "support"]))
        await (await caller.say("sales", "piper"))
        utterance = await heard
    finally:
        use_recognizer(None)
    assert utterance is not None and utterance.text == "sales"
    assert plugged.rates == [16000]
