"""`Playback`: one file being played into a call, fed to the call's outgoing tracks."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any, Literal

import av

from ..errors import MediaError
from .decoder import AUDIO_FRAME_SAMPLES, AUDIO_RATE, DecodedChunk, FileDecoder
from .pool import DECODE_POOL

logger = logging.getLogger(__name__)

PlaybackResult = Literal["finished", "stopped", "error", "ended"]

#: Decoded ahead at the start (synchronously, so bad files fail before anything is sent).
PRIME_SECONDS = 0.1
#: Read-ahead bounds: refill below LOW_WATER, decode CHUNK more each time.
LOW_WATER = 0.4
CHUNK = 0.4

AUDIO_FRAME_SECONDS = AUDIO_FRAME_SAMPLES / AUDIO_RATE


class Playback:
    """A file playing into a call.

    Awaitable: `await pb` returns how it ended ("finished", "stopped", "error" or "ended" when
    the call ended first); `pb.done` is the same result as a future; `pb.stop()` ends it now;
    `pb.position` is the seconds played so far (it keeps growing across loops). Decoding runs
    on the shared decode pool at most `LOW_WATER + CHUNK` seconds ahead of what is sent.
    """

    def __init__(
        self,
        decoder: FileDecoder,
        *,
        on_error: Callable[[MediaError], None] | None = None,
    ) -> None:
        self._decoder = decoder
        self._on_error = on_error
        self._loop = asyncio.get_running_loop()
        self.done: asyncio.Future[PlaybackResult] = self._loop.create_future()
        self.error: MediaError | None = None
        self._audio: deque[av.AudioFrame] = deque()
        self._video: deque[tuple[float, av.VideoFrame]] = deque()
        self._active = {
            kind
            for kind, has in (("audio", decoder.has_audio), ("video", decoder.has_video))
            if has
        }
        self._refill: asyncio.Future[DecodedChunk] | None = None
        self._started: float | None = None
        self._audio_sent = 0
        self._video_end = 0.0
        self._final_position: float | None = None
        self.underruns = 0
        self._ingest(decoder.read(PRIME_SECONDS))

    # -- public ------------------------------------------------------------------------------

    @property
    def path(self) -> Path:
        return self._decoder.path

    @property
    def kinds(self) -> frozenset[str]:
        """The kinds ("audio", "video") this playback still feeds."""
        return frozenset(self._active)

    @property
    def fps(self) -> float:
        return self._decoder.fps

    @property
    def position(self) -> float:
        """Seconds of the file played so far (across loops)."""
        if self._final_position is not None:
            return self._final_position
        return 0.0 if self._started is None else self._media_time(time.monotonic())

    def stop(self) -> None:
        """Stop now; the playback completes as "stopped" and the call sends silence/still."""
        self._finish("stopped")

    def __await__(self) -> Generator[Any, None, PlaybackResult]:
        return asyncio.shield(self.done).__await__()

    def __repr__(self) -> str:
        state = self.done.result() if self.done.done() else "playing"
        return f"<Playback {self.path.name} {state} at {self.position:.2f}s>"

    # -- consumed by the outgoing tracks -----------------------------------------------------

    def next_audio(self) -> av.AudioFrame | None:
        """The next 20 ms of audio (None between the end of the file and its release)."""
        if "audio" not in self._active:
            return None
        self._start_clock()
        frame = self._audio.popleft() if self._audio else None
        if frame is not None:
            self._audio_sent += 1
        elif self._decoder.finished and self._refill is None:
            self.release("audio", "finished")
        else:
            self.underruns += 1
        self._maybe_refill()
        return frame

    def video_frame(self, now: float) -> av.VideoFrame | None:
        """The newest frame due at monotonic time `now`, or None when none is newly due."""
        if "video" not in self._active:
            return None
        elapsed = self._media_time(now)
        frame = None
        while self._video and self._video[0][0] <= elapsed:
            _, frame = self._video.popleft()
        drained = not self._video and self._decoder.finished and self._refill is None
        if drained and elapsed >= self._video_end:
            self.release("video", "finished")
        self._maybe_refill()
        return frame

    def release(self, kind: str, result: PlaybackResult = "stopped") -> None:
        """A track stops taking `kind` from this playback; the last release completes it."""
        if kind == "audio" and "audio" in self._active and self._started is not None:
            # Video goes on alone: re-anchor its wall clock where the audio clock stopped.
            self._started = time.monotonic() - self._audio_sent * AUDIO_FRAME_SECONDS
        self._active.discard(kind)
        if not self._active:
            self._finish(result)

    # -- internals ---------------------------------------------------------------------------

    def _start_clock(self) -> None:
        if self._started is None:
            self._started = time.monotonic()

    def _media_time(self, now: float) -> float:
        """How far into the file playback is. While audio plays, the audio sent is the clock,
        so a stall delays audio and video alike instead of dropping content or desyncing."""
        self._start_clock()
        if "audio" in self._active:
            return self._audio_sent * AUDIO_FRAME_SECONDS
        assert self._started is not None
        return now - self._started

    def _buffered(self) -> float:
        if "audio" in self._active:
            return len(self._audio) * AUDIO_FRAME_SECONDS
        if self._video:
            return self._video[-1][0] - self._media_time(time.monotonic())
        return 0.0

    def _maybe_refill(self) -> None:
        if self._refill is not None or self._decoder.finished or self.done.done():
            return
        if self._buffered() >= LOW_WATER:
            return
        self._refill = self._loop.run_in_executor(DECODE_POOL, self._decoder.read, CHUNK)
        self._refill.add_done_callback(self._refilled)

    def _refilled(self, future: asyncio.Future[DecodedChunk]) -> None:
        self._refill = None
        if self.done.done():
            self._decoder.close()
            return
        error = future.exception()
        if error is None:
            self._ingest(future.result())
            return
        if not isinstance(error, MediaError):
            error = MediaError(self.path, f"decoding failed ({error!r})")
        self.error = error
        logger.warning("playback of %s failed: %s", self.path, error)
        self._finish("error")
        if self._on_error is not None:
            self._on_error(error)

    def _ingest(self, chunk: DecodedChunk) -> None:
        self._audio.extend(chunk.audio)
        self._video.extend(chunk.video)
        if chunk.video:
            self._video_end = chunk.video[-1][0] + 1 / (self._decoder.fps or 30)

    def _finish(self, result: PlaybackResult) -> None:
        if self.done.done():
            return
        self._final_position = self.position
        self._active.clear()
        self.done.set_result(result)
        self._audio.clear()
        self._video.clear()
        if self._refill is None:
            self._decoder.close()
