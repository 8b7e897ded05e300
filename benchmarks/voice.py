"""Offline speech in calls: what `say`, `listen` and `ask` cost and how fast they answer.

In-process call pairs on 127.0.0.1 (callbot.direct); the callers speak with piper,
the callees listen with webrtcvad + pocketsphinx (docs/howto/voice.md). Measured:

- **end of speech -> transcript**: from the end of what the caller said (the first silent
  frame VAD saw) to `listen()` returning; it includes `end_silence` (the wait that decides
  the caller is done), so the recognition itself is shown apart;
- **say() -> first packet**: from calling `say()` to the first loud audio frame the other end
  receives, for a sentence never said before (synthesis, ~2 s of speech) and for one said
  already (cached); the synthesis speed (real-time factor) is shown too;
- **cpu per listening call**: process CPU with N calls whose callee listens (Opus decode,
  resampling, VAD on every 20 ms) minus the same N calls without listening, per call;
- **recognitions at once**: N callees transcribing at the same moment (one decoder per
  process, one utterance at a time): the latency spread shows the queue;
- **loop lag max**: the event loop's worst lateness during each measurement (how long every
  call's media could have stalled): recognition runs in a worker process, synthesis in a
  thread.

    python benchmarks/voice.py                # ~2 min
    python benchmarks/voice.py --calls 20
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import time
import wave
from collections.abc import AsyncIterator

import numpy as np
from _common import LagProbe, cpu_seconds, machine, percentile, table

from callbot.call import Call
from callbot.direct import connect_direct
from callbot.voice import Recognizer
from callbot.voice.tts import SPEECH

MENU = ["sales", "support"]
WORDS = ["sales", "support", "i want to talk to support please", "connect me to sales"]
TALK = "thank you for calling our support line, how can we help you today"
LOUD = 300.0  # RMS of a received frame holding speech (Opus silence is far below)
PROBE = LagProbe()


def lag_since(started: float) -> str:
    """The event loop's worst lag since `started` (monotonic), in ms: media stalls this long."""
    return f"{1000 * max(PROBE.recent(time.monotonic() - started), default=0.0):.0f}"


@contextlib.asynccontextmanager
async def pairs(count: int) -> AsyncIterator[list[tuple[Call, Call]]]:
    made = [await connect_direct() for _ in range(count)]
    try:
        yield made
    finally:
        for caller, callee in made:
            await caller.hangup()
            await callee.hangup()


async def end_to_transcript(rounds: int) -> list[list[object]]:
    """Latency from end of speech to transcript, and the recognition alone, per mode."""
    rows: list[list[object]] = []
    async with pairs(1) as [(caller, callee)]:
        for grammar, label in (([*MENU, "one", "two"], "grammar"), (None, "dictation")):
            total, recognition = [], []
            section = time.monotonic()
            for i in range(rounds):
                words = WORDS[i % len(WORDS)]
                heard = asyncio.create_task(callee.listen(timeout=10, grammar=grammar))
                await asyncio.sleep(0.05)
                await (await caller.say(words, "piper"))
                utterance = await heard
                returned = time.monotonic()
                assert utterance is not None
                total.append(returned - utterance.ended)
                samples, rate = await _said(words)  # the recognition alone, same words
                started = time.monotonic()
                await Recognizer.shared().transcribe(samples, rate, grammar=grammar)
                recognition.append(time.monotonic() - started)
            rows.append([label, rounds, *_ms(total), *_ms(recognition), lag_since(section)])
    return rows


async def _said(words: str) -> tuple[np.ndarray, int]:
    with wave.open(str(await SPEECH.path(words, "piper"))) as spoken:
        pcm = spoken.readframes(spoken.getnframes())
        return np.frombuffer(pcm, np.int16), spoken.getframerate()


def _ms(values: list[float]) -> list[str]:
    return [f"{1000 * percentile(values, 50):.0f}", f"{1000 * max(values):.0f}"]


async def say_to_first_packet(rounds: int) -> list[list[object]]:
    """say() to the first loud frame at the other end: new sentences, then the same again."""
    rows: list[list[object]] = []
    await SPEECH.path(TALK, "piper")  # said once already: the cached case
    async with pairs(1) as [(caller, callee)]:
        for label, fresh in (("new sentence (synthesis)", True), ("cached sentence", False)):
            delays, spoken = [], []
            section = time.monotonic()
            for i in range(rounds):
                text = f"please hold, you are caller number {i + 1}" if fresh else TALK
                frames = callee.audio_frames()
                started = time.monotonic()
                playback = await caller.say(text, "piper")
                async for frame in frames:
                    samples = frame.to_ndarray().astype(np.float64)
                    if np.sqrt((samples**2).mean()) > LOUD:
                        delays.append(time.monotonic() - started)
                        break
                playback.stop()
                frames.stop()
                samples, rate = await _said(text)
                spoken.append(len(samples) / rate)
                await asyncio.sleep(0.3)  # silence again before the next one
            rows.append([label, rounds, f"{percentile(spoken, 50):.1f}", *_ms(delays),
                         lag_since(section)])  # fmt: skip
    return rows


async def listening_cpu(count: int, seconds: float) -> list[list[object]]:
    """CPU per call spent listening: N calls with speech flowing, without then with VAD."""
    talk = await SPEECH.path(TALK, "piper")
    async with pairs(count) as made:
        for caller, _ in made:
            caller.send_audio_file(talk, loop=True)
        await asyncio.sleep(1.0)
        idle = await _cpu_over(seconds)
        streams = [callee.voice_activity() for _, callee in made]
        drains = [asyncio.create_task(_drain(s)) for s in streams]
        await asyncio.sleep(1.0)
        listening = await _cpu_over(seconds)
        for task in drains:
            task.cancel()
    per_call = (listening - idle) / count * 100
    return [[count, f"{idle * 100:.1f}", f"{listening * 100:.1f}", f"{per_call:.2f}",
             f"{100 / per_call:.0f}" if per_call > 0 else "-"]]  # fmt: skip


async def _drain(stream: AsyncIterator[object]) -> None:
    async for _ in stream:
        pass


async def _cpu_over(seconds: float) -> float:
    """This process's CPU use over `seconds`, in cores."""
    before, started = cpu_seconds([os.getpid()]), time.monotonic()
    await asyncio.sleep(seconds)
    return (cpu_seconds([os.getpid()]) - before) / (time.monotonic() - started)


async def concurrent_recognitions(counts: list[int]) -> list[list[object]]:
    """N callees whose callers all say a word at once: end of speech to transcript."""
    rows: list[list[object]] = []
    for count in counts:
        section = time.monotonic()
        async with pairs(count) as made:
            heard = [
                asyncio.create_task(callee.listen(timeout=15, grammar=MENU)) for _, callee in made
            ]
            await asyncio.sleep(0.05)
            await asyncio.gather(*(caller.say("support", "piper") for caller, _ in made))
            latencies, right = [], 0
            for task in asyncio.as_completed(heard):
                utterance = await task
                latencies.append(time.monotonic() - utterance.ended)
                right += utterance.text == "support"
            rows.append([count, f"{right}/{count}", *_ms(latencies), lag_since(section)])
    return rows


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    PROBE.start()
    started = time.monotonic()
    await Recognizer.shared().load()
    await asyncio.to_thread(SPEECH.warm, "piper")
    print(f"models loaded in {time.monotonic() - started:.1f} s\n{machine()}\n")
    rows = await end_to_transcript(args.rounds)
    print(table(["mode", "n", "end->transcript p50 ms", "max ms", "recognition p50 ms",
                 "max ms", "loop lag max ms"], rows))  # fmt: skip
    print(table(["say()", "n", "speech s", "first packet p50 ms", "max ms", "loop lag max ms"],
                await say_to_first_packet(args.rounds)))  # fmt: skip
    print(table(["listening calls", "cpu idle %", "cpu listening %", "per call %",
                 "calls per core"], await listening_cpu(args.calls, args.seconds)))  # fmt: skip
    print(table(["at once", "right", "end->transcript p50 ms", "max ms", "loop lag max ms"],
                await concurrent_recognitions([1, 5, args.calls])))  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())
