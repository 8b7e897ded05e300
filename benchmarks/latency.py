"""Mouth-to-ear audio latency, bot to bot through the relay: clicks sent at known times,
detected in the audio the other bot receives.

The "mouth" is a live microphone-like track (a `MediaStreamTrack` delivering a 20 ms frame
every 20 ms, like a capture device) played into the call with `call.set_audio_source`; once a
second it delivers a click (a loud 20 ms burst) and notes when. The "ear" is the other bot's
`call.audio_frames()`, what a bot hears: the click's first loud sample, at the time its frame
was handed over plus its offset in the frame. Between them: callbot's live-source queue and
20 ms clock, Opus encode, SRTP, loopback UDP, the jitter buffer and Opus decode. Both bots
and the relay share this process (so one clock times both ends).

    python benchmarks/latency.py              # 30 clicks, ~40 s
    python benchmarks/latency.py --clicks 100
"""

from __future__ import annotations

import argparse
import asyncio
import fractions
import tempfile
import time
from pathlib import Path

import av
import numpy as np
from _common import machine, percentile, table
from aiortc.mediastreams import MediaStreamTrack

from callbot import Bot, Incoming
from callbot.config import CallConfig
from callbot.signaling.relay import Relay

RATE = 48000
SAMPLES = 960  # 20 ms
THRESHOLD = 0.2  # of full scale: far above Opus's noise on silence, far below the click
PERIOD = 1.0  # seconds between clicks: much longer than any plausible latency


class ClickTrack(MediaStreamTrack):
    """A capture-like track: a frame every 20 ms, real-time paced; a click every PERIOD s."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self.clicks: list[float] = []  # when each click frame was handed over
        self._index = 0
        self._start: float | None = None
        t = np.arange(SAMPLES) / RATE
        self._click = (np.sin(2 * np.pi * 1000 * t) * 30000).astype(np.int16)
        self._silence = np.zeros(SAMPLES, dtype=np.int16)

    async def recv(self) -> av.AudioFrame:
        if self._start is None:
            self._start = time.monotonic()
        due = self._start + self._index * SAMPLES / RATE
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        click = self._index > 0 and self._index % round(PERIOD * RATE / SAMPLES) == 0
        samples = self._click if click else self._silence
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = RATE
        frame.pts = self._index * SAMPLES
        frame.time_base = fractions.Fraction(1, RATE)
        self._index += 1
        if click:
            self.clicks.append(time.monotonic())
        return frame


async def listen(incoming: Incoming, heard: list[float], done: asyncio.Event) -> None:
    """The ear: note when each click's first loud sample is handed to the bot."""
    call = await incoming.accept(video=False)
    loud = False
    async for frame in call.audio_frames():
        arrived = time.monotonic()
        samples = frame.to_ndarray().reshape(-1, len(frame.layout.channels))[:, 0]
        level = np.abs(samples.astype(np.float64)) / 32768
        above = np.flatnonzero(level > THRESHOLD)
        if above.size and not loud:
            heard.append(arrived + above[0] / frame.sample_rate)
        loud = bool(above.size)
        if done.is_set():
            break


def match(clicks: list[float], heard: list[float]) -> tuple[list[float], int]:
    """Latency of each click heard (the latest click sent before it), and how many went
    unheard."""
    latencies = []
    for at in heard:
        sent = [c for c in clicks if c <= at]
        if sent and at - sent[-1] < PERIOD:
            latencies.append(at - sent[-1])
    return latencies, len(clicks) - len(latencies)


async def main(args: argparse.Namespace) -> None:
    print(f"machine: {machine()}\n", flush=True)
    heard: list[float] = []
    done = asyncio.Event()
    with tempfile.TemporaryDirectory(prefix="callbot-latency-") as work:
        async with Relay(port=0, state_dir=Path(work) / "relay") as relay:
            ear = Bot("ear", server=relay.url, token=relay.mint("ear", role="bot"))
            ear.on_incoming(lambda incoming: listen(incoming, heard, done))
            mouth = Bot(
                "mouth", server=relay.url, token=relay.mint("mouth"), role="user",
                config=CallConfig(media_timeout=0),
            )  # fmt: skip
            await ear.start()
            await mouth.start()
            try:
                call = await mouth.call("ear")
                await call.wait_connected(30)
                track = ClickTrack()
                await call.set_audio_source(track)
                while len(track.clicks) < args.clicks:
                    await asyncio.sleep(0.1)
                await asyncio.sleep(PERIOD)  # the last click's way through
                done.set()
                await call.hangup()
            finally:
                await mouth.stop()
                await ear.stop()
    latencies, unheard = match(track.clicks, heard)
    ms = [x * 1000 for x in latencies]
    low, high = min(ms, default=float("nan")), max(ms, default=float("nan"))
    row = [len(track.clicks), len(ms), percentile(ms, 50), percentile(ms, 95), low, high]
    print(table(("clicks", "heard", "median ms", "p95 ms", "min ms", "max ms"), [row]))
    if unheard:
        print(f"\n{unheard} clicks were not heard")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clicks", type=int, default=30)
    asyncio.run(main(parser.parse_args()))
