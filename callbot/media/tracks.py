"""The call's outgoing tracks: paced in real time, they never end.

Each track plays whatever `Playback` is attached to it and otherwise sends silence (audio) or
the last still frame (video). Muting swaps in silence / black frames while the playback keeps
running, so the peer's decoder and jitter buffer see a continuous stream either way.
"""

from __future__ import annotations

import asyncio
import fractions
import time
from collections import deque
from typing import Protocol

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from .clock import Pacer
from .decoder import AUDIO_FRAME_SAMPLES, AUDIO_RATE, black_video_frame, silent_audio_frame
from .playback import AUDIO_FRAME_SECONDS

VIDEO_CLOCK = 90000
#: Frame rate of the still frame sent between playbacks.
IDLE_FPS = 10.0

_AUDIO_TIME_BASE = fractions.Fraction(1, AUDIO_RATE)
_VIDEO_TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK)


class MediaSource(Protocol):
    """What an outgoing track plays: a `Playback` (file) or a `TrackSource` (live track)."""

    @property
    def kinds(self) -> frozenset[str]: ...

    @property
    def fps(self) -> float: ...

    def next_audio(self) -> av.AudioFrame | None: ...

    def video_frame(self, now: float) -> av.VideoFrame | None: ...

    def release(self, kind: str, result: str = "stopped") -> None: ...


class _OutgoingTrack(MediaStreamTrack):
    """What both outgoing tracks share: the attached source and the mute flag."""

    def __init__(self) -> None:
        super().__init__()
        self.muted = False  # the user muted this track
        self.held = False  # the call is on hold
        self._playback: MediaSource | None = None

    @property
    def silenced(self) -> bool:
        """Whether silence / black goes out instead of the source (muted or on hold)."""
        return self.muted or self.held

    @property
    def playback(self) -> MediaSource | None:
        """The source playing now (None: silence or the still frame)."""
        return self._playback

    def play(self, source: MediaSource | None) -> None:
        """Attach `source` (or nothing), releasing the one playing before."""
        previous, self._playback = self._playback, source
        if previous is not None and previous is not source:
            previous.release(self.kind)

    def _check_live(self) -> None:
        if self.readyState != "live":
            raise MediaStreamError


class OutgoingAudioTrack(_OutgoingTrack):
    """48 kHz stereo, 20 ms frames on absolute deadlines."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._pacer = Pacer(AUDIO_FRAME_SECONDS)
        self._inserts: deque[tuple[deque[av.AudioFrame], asyncio.Future[None]]] = deque()

    def insert(self, frames: list[av.AudioFrame]) -> asyncio.Future[None]:
        """Send `frames` next (e.g. in-band DTMF), pausing the source meanwhile; the future
        completes when they are all sent."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._inserts.append((deque(frames), done))
        return done

    def cancel_inserts(self) -> None:
        """Drop inserted frames not sent yet; whoever waits for them is released."""
        for _, done in self._inserts:
            if not done.done():
                done.set_result(None)
        self._inserts.clear()

    def _next_insert(self) -> av.AudioFrame | None:
        while self._inserts:
            frames, done = self._inserts[0]
            if frames:
                return frames.popleft()
            self._inserts.popleft()
            if not done.done():
                done.set_result(None)
        return None

    async def recv(self) -> av.AudioFrame:
        self._check_live()
        await self._pacer.tick()  # after a stall, timestamps jump: the content is not dropped
        frame = self._next_insert()  # inserted frames (DTMF) go out even when muted
        if frame is None:
            frame = self._from_source()
        if frame is None:
            frame = silent_audio_frame()
        frame.pts = round(self._pacer.elapsed * AUDIO_RATE)
        frame.sample_rate = AUDIO_RATE
        frame.time_base = _AUDIO_TIME_BASE
        assert frame.samples == AUDIO_FRAME_SAMPLES
        return frame

    def _from_source(self) -> av.AudioFrame | None:
        playback = self._playback
        if playback is None:
            return None
        frame = playback.next_audio()  # taken even when silenced: the source keeps its clock
        if "audio" not in playback.kinds:
            self._playback = None
        return None if self.silenced else frame


class OutgoingVideoTrack(_OutgoingTrack):
    """Video at the playback's frame rate (idle: a still frame at `IDLE_FPS`)."""

    kind = "video"

    def __init__(self, size: tuple[int, int] = (640, 480)) -> None:
        super().__init__()
        self.size = size
        self._black = black_video_frame(*size)
        self._still = self._black
        self._pacer = Pacer(1 / IDLE_FPS)

    async def recv(self) -> av.VideoFrame:
        self._check_live()
        playback = self._playback
        self._pacer.set_period(1 / (playback.fps if playback and playback.fps else IDLE_FPS))
        await self._pacer.tick()
        if playback is not None:
            fresh = playback.video_frame(time.monotonic())
            if fresh is not None:
                self._still = fresh
            if "video" not in playback.kinds:
                self._playback = None
        frame = self._black if self.silenced else self._still
        frame.pts = round(self._pacer.elapsed * VIDEO_CLOCK)
        frame.time_base = _VIDEO_TIME_BASE
        return frame
