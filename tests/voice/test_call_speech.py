"""say / listen / ask / voice_activity between two real calls on 127.0.0.1: the caller speaks
with piper (offline), the callee hears it through Opus and recognises it."""

from __future__ import annotations

import asyncio
import sys
import time
import wave

import numpy as np
import pytest

from callbot.media.cache import PROMPTS
from callbot.voice import listener as listener_module
from callbot.voice import tts
from callbot.voice.asr import VoiceUnavailable
from callbot.voice.listener import SpeechListener
from callbot.voice.tts import SPEECH, SpeechCache

from helpers import eventually, missing_peer

MENU = ["sales", "support"]
LONG = "thank you for calling, please listen carefully as our menu options have changed today"


@pytest.fixture(autouse=True)
def _voices(recognizer, speak) -> None:
    """Every test here needs the recogniser and the piper voice loaded (once per session)."""


async def test_listen_transcribes_what_the_caller_says(call_pair, tmp_path) -> None:
    caller, callee = call_pair
    heard = asyncio.create_task(callee.listen(timeout=10, grammar=MENU, save_to=tmp_path / "u.wav"))
    said_at = time.monotonic()
    await (await caller.say("support", "piper"))
    utterance = await heard
    assert utterance is not None and utterance.text == "support", utterance
    assert said_at <= utterance.started < utterance.ended and not utterance.cut
    with wave.open(str(utterance.audio_path)) as saved:
        samples = np.frombuffer(saved.readframes(saved.getnframes()), np.int16)
    assert saved.getframerate() == 16000 and np.abs(samples).max() > 3000  # speech, not silence


async def test_listen_times_out_on_silence(call_pair) -> None:
    _caller, callee = call_pair
    started = time.monotonic()
    assert await callee.listen(timeout=0.5) is None
    assert time.monotonic() - started >= 0.5


async def test_a_long_utterance_is_cut_at_max_seconds(call_pair) -> None:
    caller, callee = call_pair
    heard = asyncio.create_task(callee.listen(timeout=10, max_seconds=1.0))
    playback = await caller.say(LONG, "piper")
    utterance = await heard
    playback.stop()
    assert utterance is not None and utterance.cut
    assert utterance.ended - utterance.started == pytest.approx(1.0, abs=0.1)


async def test_voice_activity_reports_start_then_end(call_pair) -> None:
    caller, callee = call_pair
    events = callee.voice_activity()
    first = asyncio.ensure_future(anext(events))
    await asyncio.sleep(0)  # the iterator is listening before the caller speaks
    said_at = time.monotonic()
    await (await caller.say("connect me to sales", "piper"))
    start, end = await first, await anext(events)
    assert (start.speaking, end.speaking) == (True, False)
    assert said_at <= start.at < end.at
    await events.aclose()


async def test_barge_in_stops_the_prompt_within_300_ms_of_speech(call_pair) -> None:
    caller, callee = call_pair
    loud, watcher = watch_loud_frames(caller)
    answer = asyncio.create_task(callee.ask(LONG, grammar=MENU, voice="piper"))
    await eventually(lambda: len(loud) > 25, "the prompt playing at the caller")  # 0.5 s in
    samples, rate = await speak_samples("sales")
    onset = time.monotonic() + first_sound(samples, rate)
    await caller.say("sales", "piper")
    result = await asyncio.wait_for(answer, 15)
    watcher.cancel()
    assert result.choice == "sales" and result.digits == "", result
    print(f"barge-in: prompt last heard {1000 * (loud[-1] - onset):.0f} ms after speech onset")
    assert loud[-1] - onset < 0.3, f"prompt heard {loud[-1] - onset:.3f} s after speech onset"


async def test_a_key_stops_the_prompt_and_is_returned(call_pair) -> None:
    caller, callee = call_pair
    answer = asyncio.create_task(callee.ask(LONG, grammar=MENU, digits=2, timeout=3))
    loud, watcher = watch_loud_frames(caller)
    await eventually(lambda: len(loud) > 10, "the prompt playing at the caller")
    await caller.send_dtmf("42")
    result = await asyncio.wait_for(answer, 15)
    watcher.cancel()
    assert loud[-1] - loud[10] < 2.0  # stopped at the key, long before its end
    assert (result.digits, result.choice) == ("42", None)


async def test_saying_a_sentence_in_many_calls_synthesises_and_encodes_it_once(call_pair) -> None:
    _caller, callee = call_pair
    text = f"the same sentence number {time.monotonic_ns() % 1000}"
    syntheses, encodes = SPEECH.syntheses, PROMPTS.encodes
    playbacks = await asyncio.gather(*(callee.say(text, "piper") for _ in range(5)))
    for playback in playbacks[:-1]:
        playback.stop()
    playbacks[-1].stop()
    assert (SPEECH.syntheses - syntheses, PROMPTS.encodes - encodes) == (1, 1)
    assert len({p.path for p in playbacks}) == 1


async def test_espeak_is_the_fallback_without_piper(monkeypatch, tmp_path) -> None:
    if tts.shutil.which(tts.ESPEAK_PROGRAM) is None:
        missing_peer("espeak-ng (Debian package espeak-ng) is not installed")
    monkeypatch.setitem(sys.modules, "piper", None)  # as if callbot[tts] were not installed
    cache = SpeechCache(tmp_path)
    path = await cache.path("hello")
    assert cache.engine(None).name == "espeak"
    with wave.open(str(path)) as spoken:
        assert spoken.getnframes() / spoken.getframerate() > 0.2


async def test_missing_engines_name_the_extra(monkeypatch, tmp_path) -> None:
    monkeypatch.setitem(sys.modules, "piper", None)
    monkeypatch.setattr(tts, "ESPEAK_PROGRAM", "espeak-ng-not-installed")
    with pytest.raises(VoiceUnavailable, match=r"pip install 'callbot\[tts\]'"):
        await SpeechCache(tmp_path).path("hello")
    monkeypatch.setitem(sys.modules, "webrtcvad", None)
    with pytest.raises(VoiceUnavailable, match=r"pip install 'callbot\[voice\]'"):
        SpeechListener()


def watch_loud_frames(call) -> tuple[list[float], asyncio.Task[None]]:
    """Arrival times of the audio frames `call` receives that hold sound (a prompt)."""
    loud: list[float] = []

    async def watch() -> None:
        async for frame in call.audio_frames():
            samples = frame.to_ndarray().astype(np.float64)
            if np.sqrt((samples**2).mean()) > 300:
                loud.append(time.monotonic())

    return loud, asyncio.create_task(watch())


async def speak_samples(text: str) -> tuple[np.ndarray, int]:
    with wave.open(str(await SPEECH.path(text, "piper"))) as spoken:
        return np.frombuffer(
            spoken.readframes(spoken.getnframes()), np.int16
        ), spoken.getframerate()


def first_sound(samples: np.ndarray, rate: int) -> float:
    """Seconds of leading near-silence in `samples` (where speech onset is)."""
    loud = np.nonzero(np.abs(samples) > 1000)[0]
    return float(loud[0]) / rate if len(loud) else 0.0


assert listener_module.START_FRAMES == 3  # the barge-in bound above assumes a 60 ms trigger
