"""What a scenario hears: the far side's audio since the call connected (with DTMF keys,
data messages and video frames), kept so each step can look at what came in since its anchor.

Positions are sample counts into the received audio, so "since the last action" means the same
audio whether the step runs now or its check runs later.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import av
import numpy as np

from ..call import Call
from ..media.analysis import AudioClip, frame_samples

RATE = 48000
#: At most this much received audio is kept (seconds): about 110 MB of float32 for 10 minutes.
MAX_SECONDS = 600


class Ear:
    """Collects a call's incoming audio, DTMF, data and video frames while a scenario runs."""

    def __init__(self, call: Call, video: bool = False) -> None:
        self.call = call
        self._chunks: list[np.ndarray] = []
        self.samples = 0
        self.keys: list[tuple[str, int]] = []  # (digit, audio position when it came)
        self.messages: list[tuple[str, int]] = []
        self.video_times: list[float] = []
        self.frozen_runs: list[float] = []
        self._video = video
        self._tasks: list[asyncio.Task[None]] = []
        self._last_look: bytes | None = None
        self._frozen_since: float | None = None

    def start(self) -> None:
        self.call.on("dtmf", lambda digit: self.keys.append((str(digit), self.samples)))
        self.call.on("data", self._on_data)
        self._tasks.append(asyncio.ensure_future(self._audio(self.call.audio_frames())))
        if self._video:
            self._tasks.append(asyncio.ensure_future(self._frames(self.call.video_frames())))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._close_frozen(time.monotonic())

    def clip(self, since: int = 0, until: int | None = None) -> AudioClip:
        """The audio received between two positions (default: from `since` until now)."""
        if len(self._chunks) > 1:
            self._chunks = [np.concatenate(self._chunks)]
        data = self._chunks[0] if self._chunks else np.zeros(0, np.float32)
        return AudioClip(data[since:until], RATE)

    def seconds(self, since: int = 0) -> float:
        return (self.samples - since) / RATE

    def _on_data(self, payload: Any) -> None:
        text = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else str(payload)
        self.messages.append((text, self.samples))

    async def _audio(self, frames: Any) -> None:
        async for frame in frames:
            samples = frame_samples(frame)
            if frame.sample_rate != RATE:  # linear resampling is plenty for level and pitch
                count = round(samples.size * RATE / frame.sample_rate)
                samples = np.interp(
                    np.linspace(0, samples.size, count, endpoint=False),
                    np.arange(samples.size),
                    samples,
                ).astype(np.float32)
            if self.samples < MAX_SECONDS * RATE:
                self._chunks.append(samples)
                self.samples += samples.size

    async def _frames(self, frames: Any) -> None:
        async for frame in frames:
            now = time.monotonic()
            self.video_times.append(now)
            look = _thumbnail(frame)
            if look == self._last_look:
                if self._frozen_since is None:
                    self._frozen_since = self.video_times[-2]
            else:
                self._close_frozen(now)
            self._last_look = look

    def _close_frozen(self, now: float) -> None:
        if self._frozen_since is not None:
            self.frozen_runs.append(now - self._frozen_since)
            self._frozen_since = None


def _thumbnail(frame: av.VideoFrame) -> bytes:
    """A coarse 16x12 grey picture of the frame: equal thumbnails mean a frozen picture (a
    moving test pattern or a face never repeats exactly; encoder noise is averaged away)."""
    grey = frame.reformat(width=16, height=12, format="gray").to_ndarray()
    return bytes((grey // 8).astype(np.uint8).tobytes())
