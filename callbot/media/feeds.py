"""Where a `Playback` takes its media from: a shared encoded prompt, or a file decoded per call.

`PromptFeed` reads the packets of a file encoded once for the whole process (see cache.py): the
normal case. `FileFeed` decodes the file for this playback alone, a bounded slice ahead on the
shared decode pool: for files too long to cache and for calls whose codecs need raw frames.
Both give audio 20 ms at a time and video by media time, and loop without a gap or drift.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from pathlib import Path

import av

from ..errors import MediaError
from ..safe import get_logger
from .cache import PROMPTS, Prompt, VideoPacket
from .decoder import DecodedChunk, FileDecoder
from .pool import DECODE_POOL

logger = get_logger(__name__)

#: What a feed hands out: audio as Opus payloads or frames; video as packets or frames.
AudioItem = bytes | av.AudioFrame
VideoItem = VideoPacket | av.VideoFrame

#: FileFeed read-ahead: decoded synchronously at the start (so bad files fail before
#: anything is sent), then refilled below LOW_WATER by CHUNK seconds at a time.
PRIME_SECONDS = 0.1
LOW_WATER = 0.4
CHUNK = 0.4
FRAME_SECONDS = 0.02


def open_feed(
    path: str | Path,
    *,
    video_size: tuple[int, int] | None = None,
    loop: bool = False,
    encoded: bool = True,
) -> PromptFeed | FileFeed:
    """The feed for playing `path`: the shared encoding when `encoded` allows it, else a
    decoder of its own. Raises `MediaError` for an unplayable file before anything is sent."""
    if encoded:
        prompt = PROMPTS.get(path, video_size)
        if prompt is not None:
            return PromptFeed(prompt, loop)
    return FileFeed(FileDecoder(path, audio=True, video_size=video_size, loop=loop))


class PromptFeed:
    """Reads a shared `Prompt`, each playback at its own position."""

    def __init__(self, prompt: Prompt, loop: bool) -> None:
        self._prompt = prompt
        self._loop = loop
        self._audio_index = 0
        self._video_index = 0
        self._video_pass = 0
        self.on_error: Callable[[MediaError], None] | None = None
        if loop:
            PROMPTS.want_loop(prompt)

    @property
    def path(self) -> Path:
        return self._prompt.path

    @property
    def has_audio(self) -> bool:
        return self._prompt.has_audio

    @property
    def has_video(self) -> bool:
        return self._prompt.has_video

    @property
    def fps(self) -> float:
        return self._prompt.fps

    @property
    def last_frame(self) -> av.VideoFrame | None:
        return self._prompt.last_frame

    def next_audio(self) -> AudioItem | None:
        prompt, index = self._prompt, self._audio_index
        if self._loop:
            item = prompt.loop_audio(index)
        else:
            item = prompt.audio[index] if index < len(prompt.audio) else None
        if item is not None:
            self._audio_index += 1
        return item

    def audio_ended(self) -> bool:
        if self._loop:
            return self._failed()
        return self._exhausted(self._audio_index, len(self._prompt.audio))

    def video_due(self, media_time: float) -> VideoItem | None:
        prompt = self._prompt
        pass_length = prompt.loop_length if self._loop else None
        if self._video_index >= len(prompt.video) and pass_length:
            self._video_index, self._video_pass = 0, self._video_pass + 1
        if self._video_index < len(prompt.video):
            packet = prompt.video[self._video_index]
            if packet.time + self._video_pass * (pass_length or 0.0) <= media_time:
                self._video_index += 1
                return packet
        return None

    def video_ended(self, media_time: float) -> bool:
        prompt = self._prompt
        if self._loop:
            return self._failed()
        if not self._exhausted(self._video_index, len(prompt.video)):
            return False
        last = prompt.video[-1].time if prompt.video else 0.0
        return media_time >= last + 1 / (prompt.fps or 30)

    def close(self) -> None:
        return None  # the prompt stays in the cache for the next call

    def _exhausted(self, index: int, available: int) -> bool:
        return index >= available and self._prompt.done() and self._failed(or_done=True)

    def _failed(self, or_done: bool = False) -> bool:
        """True once the prompt failed (reporting it, once), or, with `or_done`, finished."""
        error = self._prompt.error
        if error is not None and self.on_error is not None:
            self.on_error(error)
            self.on_error = None
        return error is not None or or_done


class FileFeed:
    """Decodes one file for one playback, at most `LOW_WATER + CHUNK` seconds ahead."""

    def __init__(self, decoder: FileDecoder) -> None:
        self._decoder = decoder
        self._loop = asyncio.get_running_loop()
        self._audio: deque[av.AudioFrame] = deque()
        self._video: deque[tuple[float, av.VideoFrame]] = deque()
        self._refill: asyncio.Future[DecodedChunk] | None = None
        self._closed = False
        self._last_video = 0.0
        self.last_frame: av.VideoFrame | None = None
        self.on_error: Callable[[MediaError], None] | None = None
        self._ingest(decoder.read(PRIME_SECONDS))

    @property
    def path(self) -> Path:
        return self._decoder.path

    @property
    def has_audio(self) -> bool:
        return self._decoder.has_audio

    @property
    def has_video(self) -> bool:
        return self._decoder.has_video

    @property
    def fps(self) -> float:
        return self._decoder.fps

    def next_audio(self) -> AudioItem | None:
        frame = self._audio.popleft() if self._audio else None
        self._maybe_refill(len(self._audio) * FRAME_SECONDS)
        return frame

    def audio_ended(self) -> bool:
        return not self._audio and self._drained()

    def video_due(self, media_time: float) -> VideoItem | None:
        frame = None
        while self._video and self._video[0][0] <= media_time:
            _, frame = self._video.popleft()
        ahead = self._video[-1][0] - media_time if self._video else 0.0
        if not self._decoder.has_audio:  # audio drives the refills when there is audio
            self._maybe_refill(ahead)
        return frame

    def video_ended(self, media_time: float) -> bool:
        end = self._last_video + 1 / (self._decoder.fps or 30)
        return not self._video and self._drained() and media_time >= end

    def close(self) -> None:
        self._closed = True
        if self._refill is None:
            self._decoder.close()

    def _drained(self) -> bool:
        return self._decoder.finished and self._refill is None

    def _maybe_refill(self, buffered: float) -> None:
        if self._refill is not None or self._decoder.finished or self._closed:
            return
        if buffered >= LOW_WATER:
            return
        self._refill = self._loop.run_in_executor(DECODE_POOL, self._decoder.read, CHUNK)
        self._refill.add_done_callback(self._refilled)

    def _refilled(self, future: asyncio.Future[DecodedChunk]) -> None:
        self._refill = None
        if self._closed:
            self._decoder.close()
            return
        error = future.exception()
        if error is None:
            self._ingest(future.result())
            return
        if not isinstance(error, MediaError):
            error = MediaError(self.path, f"decoding failed ({error!r})")
        self._decoder.finished = True  # nothing more will come
        if self.on_error is not None:
            self.on_error(error)

    def _ingest(self, chunk: DecodedChunk) -> None:
        self._audio.extend(chunk.audio)
        self._video.extend(chunk.video)
        if chunk.video:
            self._last_video = chunk.video[-1][0]
            self.last_frame = chunk.video[-1][1]
