"""Recording what a call receives: `Recording` (audio + video) made of `TrackRecorder`s.

A `TrackRecorder` is a sink of the call's `IncomingMedia`. It stamps frames onto a continuous
timeline (gaps from lost packets become silence, so the file keeps wall-clock time) and hands
them to its writer on the shared write pool, one job in flight, through a bounded queue: memory
stays flat on long calls, and if the disk is slower than real time frames are dropped and
counted rather than buffered without end.
"""

from __future__ import annotations

import asyncio
import fractions
import logging
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
import numpy as np

from ..errors import MediaError
from .incoming import Frame, IncomingMedia
from .pool import WRITE_POOL
from .writers import FrameWriter, open_writer

logger = logging.getLogger(__name__)

#: Frames waiting for the writer before new ones are dropped (~10 s of audio or video).
MAX_PENDING = 500
#: A jump in received timestamps longer than the wall-clock pause plus this is not silence.
GAP_SLACK = 0.5


class AudioTimeline:
    """Restamps received audio onto one continuous timeline, filling gaps with silence."""

    def __init__(self) -> None:
        self._next: float | None = None  # media time where the next frame should start
        self._last_wall = 0.0
        self._samples = 0  # samples issued so far: the output pts

    def place(self, frame: av.AudioFrame) -> list[av.AudioFrame]:
        rate = frame.sample_rate
        start = float(frame.pts * frame.time_base) if frame.pts is not None else self._next
        now = time.monotonic()
        out: list[av.AudioFrame] = []
        if self._next is not None and start is not None:
            gap = start - self._next
            gap = min(gap, now - self._last_wall + GAP_SLACK)
            if gap >= 0.5 / rate * frame.samples:
                out.append(self._stamp(_silence_like(frame, round(gap * rate))))
            elif gap < -frame.samples / rate:
                self._last_wall = now
                return out  # a duplicate: already covered
        self._next = (start or 0.0) + frame.samples / rate
        self._last_wall = now
        out.append(self._stamp(frame))
        return out

    def _stamp(self, frame: av.AudioFrame) -> av.AudioFrame:
        frame.pts = round(self._samples * 48000 / frame.sample_rate)
        frame.time_base = fractions.Fraction(1, 48000)
        self._samples += frame.samples
        return frame


def _silence_like(frame: av.AudioFrame, samples: int) -> av.AudioFrame:
    channels = len(frame.layout.channels)
    planar = frame.format.is_planar
    shape = (channels, samples) if planar else (1, samples * channels)
    silent = av.AudioFrame.from_ndarray(
        np.zeros(shape, dtype=frame.to_ndarray().dtype),
        format=frame.format.name,
        layout=frame.layout.name,
    )
    silent.sample_rate = frame.sample_rate
    return silent


class VideoTimeline:
    """Restamps received video relative to the first frame, in the 90 kHz clock."""

    def __init__(self) -> None:
        self._origin: int | None = None

    def place(self, frame: av.VideoFrame) -> list[av.VideoFrame]:
        pts = int(frame.pts * frame.time_base * 90000) if frame.pts is not None else 0
        if self._origin is None:
            self._origin = pts
        frame.pts = pts - self._origin
        frame.time_base = fractions.Fraction(1, 90000)
        return [frame]


class TrackRecorder:
    """Writes one incoming kind of media to a file as it arrives.

    `frames` counts frames received; `dropped` counts frames lost to a writer slower than
    real time; `error` holds the `MediaError` that stopped it early, if any. `stop()` starts
    finalising at once and returns a future that completes when the file is closed.
    """

    def __init__(
        self,
        path: str | Path,
        source: IncomingMedia,
        *,
        video_size: tuple[int, int] = (640, 480),
        on_error: Callable[[MediaError], None] | None = None,
    ) -> None:
        self.path = Path(path)
        self.kind = source.kind
        self.frames = 0
        self.dropped = 0
        self.error: MediaError | None = None
        self._writer: FrameWriter = open_writer(self.path, self.kind, video_size)
        self._source = source
        self._on_error = on_error
        self._timeline = AudioTimeline() if self.kind == "audio" else VideoTimeline()
        self._loop = asyncio.get_running_loop()
        self._pending: deque[Frame] = deque()
        self._job: asyncio.Future[None] | None = None
        self._stopping = False
        self._stopped: asyncio.Future[None] = self._loop.create_future()
        source.add_sink(self)

    @property
    def stopped(self) -> bool:
        return self._stopped.done()

    # FrameSink
    def write(self, frame: Frame) -> None:
        if self._stopping:
            return
        self.frames += 1
        for placed in self._timeline.place(frame):  # type: ignore[arg-type]
            if len(self._pending) >= MAX_PENDING:
                self.dropped += 1
                continue
            self._pending.append(placed)
        self._kick()

    def end(self) -> None:
        self.stop()

    def stop(self) -> asyncio.Future[None]:
        """Finish writing what was received and close the file (idempotent)."""
        if not self._stopping:
            self._stopping = True
            self._source.remove_sink(self)
            self._kick()
        return self._stopped

    def __repr__(self) -> str:
        return f"<TrackRecorder {self.kind} {self.path} frames={self.frames}>"

    # -- the writer job ----------------------------------------------------------------------

    def _kick(self) -> None:
        if self._job is not None or self._stopped.done():
            return
        if self._pending:
            self._job = self._loop.run_in_executor(WRITE_POOL, self._write_pending)
            self._job.add_done_callback(self._written)
        elif self._stopping:
            self._job = self._loop.run_in_executor(WRITE_POOL, self._writer.close)
            self._job.add_done_callback(self._closed)

    def _write_pending(self) -> None:
        while self._pending:
            self._writer.write(self._pending.popleft())

    def _written(self, job: asyncio.Future[None]) -> None:
        self._job = None
        error = job.exception()
        if error is None:
            self._kick()
            return
        self._record_error(error)
        self._stopping = True
        self._pending.clear()
        self._source.remove_sink(self)
        self._kick()  # still close the file: what was written stays playable

    def _closed(self, job: asyncio.Future[None]) -> None:
        self._job = None
        error = job.exception()
        if error is not None:
            self._record_error(error)
        self._stopped.set_result(None)

    def _record_error(self, error: BaseException) -> None:
        if self.error is not None:
            return
        if not isinstance(error, MediaError):
            error = MediaError(self.path, f"recording failed ({error})")
        self.error = error
        logger.warning("recording %s stopped: %s", self.path, error)
        if self._on_error is not None:
            self._on_error(error)


class Recording:
    """What `call.record_incoming()` returns: `.audio` and `.video` recorders (None if unset).

    `await rec.stop()` finalises both files; each recorder can also be stopped on its own.
    """

    def __init__(self, audio: TrackRecorder | None, video: TrackRecorder | None) -> None:
        self.audio = audio
        self.video = video

    def stop(self) -> asyncio.Future[Any]:
        """Stop both recorders; the returned future completes when both files are closed."""
        return asyncio.gather(*(r.stop() for r in (self.audio, self.video) if r is not None))

    def __repr__(self) -> str:
        return f"<Recording audio={self.audio!r} video={self.video!r}>"
