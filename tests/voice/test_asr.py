"""callbot.voice.asr: offline recognition of real speech (synthesised by piper, offline)."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from callbot.voice import prepare
from callbot.voice.asr import Recognizer, VoiceUnavailable, grammar_jsgf, to_model_rate

MENU = ["sales", "support", "one", "two", "three"]
#: The fixed set: what a caller of a menu says. Bound: WER <= 10% (measured: 0%).
PHRASES = [
    "sales",
    "support",
    "two",
    "i want to talk to support please",
    "connect me to sales",
    "press three",
]


def word_errors(reference: str, hypothesis: str) -> int:
    """Levenshtein distance between the two word sequences."""
    ref, hyp = reference.split(), hypothesis.split()
    row = list(range(len(hyp) + 1))
    for i, word in enumerate(ref, 1):
        previous, row[0] = row[0], i
        for j, heard in enumerate(hyp, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (word != heard))
    return row[-1]


async def test_menu_phrases_are_recognised_within_the_wer_bound(recognizer, speak) -> None:
    errors = words = 0
    for phrase in PHRASES:
        samples, rate = await speak(phrase)
        transcript = await recognizer.transcribe(samples, rate, grammar=MENU)
        errors += word_errors(phrase, transcript.text)
        words += len(phrase.split())
        assert transcript.words == transcript.text.split()
    assert errors / words <= 0.10, f"WER {errors}/{words}"


async def test_telephone_rate_audio_is_resampled_and_recognised(recognizer, speak) -> None:
    samples, rate = await speak("support")
    narrow = to_model_rate(samples, rate)[::2].copy()  # 8 kHz (the 16 kHz model's band halves)
    transcript = await recognizer.transcribe(narrow, 8000, grammar=MENU)
    assert transcript.text == "support"
    assert 0.0 <= transcript.confidence <= 1.0


async def test_dictation_without_a_grammar_finds_the_keyword(recognizer, speak) -> None:
    samples, rate = await speak("connect me to sales")
    transcript = await recognizer.transcribe(samples, rate)
    assert "sales" in transcript.words


async def test_silence_gives_an_empty_transcript(recognizer) -> None:
    transcript = await recognizer.transcribe(np.zeros(16000, np.int16), 16000, grammar=MENU)
    assert (transcript.text, transcript.words) == ("", [])


async def test_a_word_outside_the_dictionary_is_named(recognizer) -> None:
    with pytest.raises(ValueError, match="xyzzyq"):
        await recognizer.transcribe(np.zeros(1600, np.int16), 16000, grammar=["xyzzyq"])


def test_grammar_offers_each_option_once_with_filler() -> None:
    jsgf = grammar_jsgf(["Sales!", "sales", "customer  service"])
    assert "<option> = customer service | sales;" in jsgf
    with pytest.raises(ValueError):
        grammar_jsgf(["?!"])


def test_missing_pocketsphinx_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pocketsphinx", None)  # as if not installed
    with pytest.raises(VoiceUnavailable, match=r"pip install 'callbot\[voice\]'"):
        Recognizer()


async def test_prepare_checks_grammars_up_front(recognizer) -> None:
    await prepare(grammars=[["sales", "support"]], recognition=False)
    with pytest.raises(ValueError, match="xyzzyq"):
        await prepare(grammars=[["sales", "xyzzyq"]])
