"""`TrackSource`: a live track (e.g. what the peer sends) played into a call's outgoing track.

The source reads its track in the background into a short queue that the outgoing track's own
clock drains, so jitter on the input costs a little latency, never a growing delay: the queue
holds at most a few frames and the oldest go first.
"""

from __future__ import annotations

import asyncio
import contextlib

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from ..safe import get_logger
from .decoder import AudioFramer, fit_video_frame
from .tracks import PlaybackResult

logger = get_logger(__name__)

#: Frames kept ahead of the outgoing clock; beyond, the oldest are dropped (latency bound).
MAX_AUDIO_AHEAD = 3  # 60 ms
FPS = 30.0


class TrackSource:
    """Plays a `MediaStreamTrack` of one kind into an outgoing track until stopped."""

    def __init__(self, track: MediaStreamTrack, video_size: tuple[int, int] = (640, 480)) -> None:
        self.kind = track.kind
        self.fps = FPS
        self.dropped = 0
        self._track = track
        self._video_size = video_size
        self._framer = AudioFramer()
        self._audio: list[av.AudioFrame] = []
        self._latest: av.VideoFrame | None = None
        self._active = {self.kind}
        loop = asyncio.get_running_loop()
        self.done: asyncio.Future[PlaybackResult] = loop.create_future()
        self._task = loop.create_task(self._read(), name=f"callbot-track-source-{self.kind}")

    @property
    def kinds(self) -> frozenset[str]:
        return frozenset(self._active)

    def stop(self) -> None:
        self._finish("stopped")

    def next_audio(self) -> av.AudioFrame | None:
        return self._audio.pop(0) if self._audio else None

    def video_frame(self, now: float) -> av.VideoFrame | None:
        frame, self._latest = self._latest, None
        return frame

    def release(self, kind: str, result: PlaybackResult = "stopped") -> None:
        self._active.discard(kind)
        if not self._active:
            self._finish(result)

    async def _read(self) -> None:
        try:
            while True:
                frame = await self._track.recv()
                if isinstance(frame, av.AudioFrame):
                    self._audio += self._framer.push(frame)
                    while len(self._audio) > MAX_AUDIO_AHEAD:
                        self._audio.pop(0)
                        self.dropped += 1
                elif isinstance(frame, av.VideoFrame):
                    if (frame.width, frame.height) != self._video_size:
                        frame = fit_video_frame(frame, *self._video_size)
                    self._latest = frame
        except MediaStreamError:
            self._finish("finished")
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("live %s source failed", self.kind)
            self._finish("error")

    def _finish(self, result: PlaybackResult) -> None:
        self._active.clear()
        if not self.done.done():
            self.done.set_result(result)
        if self._task is not asyncio.current_task():
            self._task.cancel()
        with contextlib.suppress(Exception):
            self._track.stop()
