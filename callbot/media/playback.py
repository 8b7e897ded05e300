"""`Playback`: one file being played into a call, fed to the call's outgoing tracks."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

import av

from ..errors import MediaError
from ..safe import get_logger
from .decoder import AUDIO_FRAME_SAMPLES, AUDIO_RATE
from .feeds import AudioItem, FileFeed, PromptFeed, VideoItem
from .tracks import PlaybackResult

logger = get_logger(__name__)

AUDIO_FRAME_SECONDS = AUDIO_FRAME_SAMPLES / AUDIO_RATE


class Playback:
    """A file playing into a call.

    Awaitable: `await pb` returns how it ended ("finished", "stopped", "error" or "ended" when
    the call ended first); `pb.done` is the same result as a future; `pb.stop()` ends it now;
    `pb.position` is the seconds played so far (it keeps growing across loops); `pb.error`
    holds the `MediaError` of a file that turned out corrupt.
    """

    def __init__(
        self,
        feed: PromptFeed | FileFeed,
        *,
        on_error: Callable[[MediaError], None] | None = None,
    ) -> None:
        self._feed = feed
        self._on_error = on_error
        self._loop = asyncio.get_running_loop()
        self.done: asyncio.Future[PlaybackResult] = self._loop.create_future()
        self.error: MediaError | None = None
        self._active = {
            kind for kind, has in (("audio", feed.has_audio), ("video", feed.has_video)) if has
        }
        self._started: float | None = None
        self._audio_sent = 0
        self._final_position: float | None = None
        self.underruns = 0
        feed.on_error = self._failed

    # -- public ------------------------------------------------------------------------------

    @property
    def path(self) -> Path:
        return self._feed.path

    @property
    def kinds(self) -> frozenset[str]:
        """The kinds ("audio", "video") this playback still feeds."""
        return frozenset(self._active)

    @property
    def fps(self) -> float:
        return self._feed.fps

    @property
    def last_frame(self) -> av.VideoFrame | None:
        """The picture to keep showing once the video is over."""
        return self._feed.last_frame

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

    def next_audio(self) -> AudioItem | None:
        """The next 20 ms of audio (None between the end of the file and its release)."""
        if "audio" not in self._active:
            return None
        self._start_clock()
        item = self._feed.next_audio()
        if item is not None:
            self._audio_sent += 1
        elif self._feed.audio_ended():
            self.release("audio", "error" if self.error else "finished")
        else:
            self.underruns += 1
        return item

    def video_frame(self, now: float) -> VideoItem | None:
        """What is newly due at monotonic time `now`: the newest frame, or the next packet."""
        if "video" not in self._active:
            return None
        media_time = self._media_time(now)
        item = self._feed.video_due(media_time)
        if item is None and self._feed.video_ended(media_time):
            self.release("video", "error" if self.error else "finished")
        return item

    def release(self, kind: str, result: PlaybackResult = "stopped") -> None:
        """A track stops taking `kind` from this playback; the last release completes it."""
        if kind == "audio" and "audio" in self._active and self._started is not None:
            # Video goes on alone: re-anchor its wall clock where the audio clock stopped.
            self._started = time.monotonic() - self._audio_sent * AUDIO_FRAME_SECONDS
        self._active.discard(kind)
        if not self._active:
            self._finish(result)

    # -- internals ---------------------------------------------------------------------------

    def _start_clock(self, now: float | None = None) -> None:
        if self._started is None:
            self._started = time.monotonic() if now is None else now

    def _media_time(self, now: float) -> float:
        """How far into the file playback is. While audio plays, the audio sent is the clock,
        so a stall delays audio and video alike instead of dropping content or desyncing."""
        self._start_clock(now)
        if "audio" in self._active:
            return self._audio_sent * AUDIO_FRAME_SECONDS
        assert self._started is not None
        return now - self._started

    def _failed(self, error: MediaError) -> None:
        if self.error is not None or self.done.done():
            return
        self.error = error
        logger.warning("playback of %s failed: %s", self.path, error)
        self._finish("error")
        if self._on_error is not None:
            self._on_error(error)

    def _finish(self, result: PlaybackResult) -> None:
        if self.done.done():
            return
        self._final_position = self.position
        self._active.clear()
        self.done.set_result(result)
        self._feed.close()
