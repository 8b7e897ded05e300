"""Finding what a caller says: a sink of received audio that classifies each 20 ms frame
(vad.py) and hands the frames to segmenters (one per `listen()`) and activity monitors.

Runs on the event loop (webrtcvad costs ~1 µs per frame); recognition does not (asr.py).
A call gets one `SpeechListener` the first time something listens, kept until the call ends (it
decodes received audio, so a call nobody listens to pays nothing).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import av
import numpy as np

from .asr import MODEL_RATE
from .vad import FRAME_SAMPLES, FRAME_SECONDS, FrameVad

#: Consecutive voiced frames that make speech start (60 ms).
START_FRAMES = 3
#: Seconds of audio before the detected start kept with an utterance (the onset of a word).
PREROLL = 0.3
END_SILENCE = 0.6


@dataclass(frozen=True)
class VoiceActivity:
    """The caller started (`speaking`) or stopped speaking, at `at` (`time.monotonic()`)."""

    speaking: bool
    at: float


class Endpointer:
    """Turns voiced/unvoiced frames into speech start and end events."""

    def __init__(self, end_silence: float = END_SILENCE, start_frames: int = START_FRAMES) -> None:
        self.start_frames = start_frames
        self.end_frames = max(1, math.ceil(end_silence / FRAME_SECONDS))
        self.speaking = False
        self._run = 0  # frames in the current run against the present state
        self._run_at = 0.0

    def step(self, voiced: bool, at: float) -> VoiceActivity | None:
        """Feed one frame (arrived at `at`); returns the event it completes, if any."""
        if voiced != self.speaking:
            if self._run == 0:
                self._run_at = at
            self._run += 1
            if self._run >= (self.end_frames if self.speaking else self.start_frames):
                self.speaking = voiced
                self._run = 0
                return VoiceActivity(voiced, self._run_at)
        else:
            self._run = 0
        return None


class Segment:
    """One utterance being captured: from the first detected speech to `end_silence` of
    silence, `max_seconds` of speech, or the end of the call."""

    def __init__(self, end_silence: float, max_seconds: float, preroll: list[np.ndarray]) -> None:
        loop = asyncio.get_running_loop()
        self.started: asyncio.Future[float | None] = loop.create_future()
        self.finished: asyncio.Future[float] = loop.create_future()
        self.cut = False  # ended by max_seconds
        self._endpointer = Endpointer(end_silence)
        self._max_frames = max(1, round(max_seconds / FRAME_SECONDS))
        self._frames: deque[np.ndarray] = deque(preroll)
        self._spoken = 0

    def feed(self, frame: np.ndarray, voiced: bool, at: float) -> None:
        if self.finished.done():
            return
        self._frames.append(frame)
        event = self._endpointer.step(voiced, at)
        if not self.started.done():
            if event is None:
                self._drop_old()
                return
            self.started.set_result(event.at)
        self._spoken += 1
        if event is not None and not event.speaking:
            self._finish(event.at)
        elif self._spoken >= self._max_frames:
            self.cut = True
            self._finish(at + FRAME_SECONDS)

    def end(self) -> None:
        """The call ended: what was captured is all there is."""
        if not self.started.done():
            self.started.set_result(None)
        self._finish(time.monotonic())

    def audio(self) -> np.ndarray:
        """The captured samples (16 kHz int16 mono), pre-roll included."""
        return np.concatenate(self._frames) if self._frames else np.zeros(0, np.int16)

    def _drop_old(self) -> None:
        keep = round(PREROLL / FRAME_SECONDS) + START_FRAMES
        while len(self._frames) > keep:
            self._frames.popleft()

    def _finish(self, at: float) -> None:
        if not self.finished.done():
            self.finished.set_result(at)


class SpeechListener:
    """A `FrameSink` of a call's received audio (see media/incoming.py)."""

    def __init__(self) -> None:
        self._vad = FrameVad()
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=MODEL_RATE)
        self._pending = np.zeros(0, np.int16)
        self._recent: deque[np.ndarray] = deque(maxlen=round(PREROLL / FRAME_SECONDS))
        self._consumers: list[Callable[[np.ndarray, bool, float], None]] = []
        self._segments: list[Segment] = []
        self._monitors: list[asyncio.Queue[VoiceActivity | None]] = []
        self.ended = False
        self.frames = 0  # 20 ms frames classified (benchmarks read it)

    def segment(self, end_silence: float, max_seconds: float) -> Segment:
        """Start capturing the next utterance (remove it with `discard`)."""
        segment = Segment(end_silence, max_seconds, list(self._recent))
        if self.ended:
            segment.end()
        self._segments.append(segment)
        return segment

    def discard(self, segment: Segment) -> None:
        if segment in self._segments:
            self._segments.remove(segment)

    async def activity(self) -> AsyncIterator[VoiceActivity]:
        """Speech start and end events from now until the call ends."""
        queue: asyncio.Queue[VoiceActivity | None] = asyncio.Queue()
        endpointer = Endpointer()

        def consume(frame: np.ndarray, voiced: bool, at: float) -> None:
            event = endpointer.step(voiced, at)
            if event is not None:
                queue.put_nowait(event)

        self._consumers.append(consume)
        self._monitors.append(queue)
        try:
            while not self.ended or not queue.empty():
                event = await queue.get()
                if event is None:
                    return
                yield event
        finally:
            self._consumers.remove(consume)
            self._monitors.remove(queue)

    def write(self, frame: av.AudioFrame | av.VideoFrame) -> None:
        """One received frame (any rate): classify its 20 ms pieces and pass them on."""
        if not isinstance(frame, av.AudioFrame) or self.ended:
            return
        now = time.monotonic()
        chunks = [self._pending]
        chunks += [
            f.to_ndarray().reshape(-1).astype(np.int16) for f in self._resampler.resample(frame)
        ]
        samples = np.concatenate(chunks)
        whole = len(samples) // FRAME_SAMPLES * FRAME_SAMPLES
        self._pending = samples[whole:]
        for piece in samples[:whole].reshape(-1, FRAME_SAMPLES):
            self._classify(piece.copy(), now)

    def end(self) -> None:
        self.ended = True
        for segment in self._segments:
            segment.end()
        for queue in self._monitors:
            queue.put_nowait(None)

    def _classify(self, piece: np.ndarray, at: float) -> None:
        self.frames += 1
        voiced = self._vad.voiced(piece)
        for segment in list(self._segments):
            segment.feed(piece, voiced, at)
        for consume in list(self._consumers):
            consume(piece, voiced, at)
        self._recent.append(piece)
