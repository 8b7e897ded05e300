"""Recording what a call receives: `Recording` (audio + video) made of `TrackRecorder`s.

A `TrackRecorder` is a sink of the call's `IncomingMedia`. It stamps frames onto a continuous
timeline (gaps from lost packets become silence, so the file keeps wall-clock time) and hands
them to its writer on the shared write pool, one job in flight, through a bounded queue: memory
stays flat on long calls, and if the disk is slower than real time frames are dropped and
counted rather than buffered without end. Received Opus (into Ogg/WebM/Matroska) and VP8 (into
WebM/Matroska) are stored as they are, inline: no decoding, no encoding. Other video (encoding
is the slow part) is handed over frame by frame and never waits more than `VIDEO_MAX_LAG` for
the writer, so a recording killed with SIGKILL plays up to about its last second, as audio does.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import re
import secrets
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
import numpy as np

from ..errors import MediaError
from ..safe import get_logger
from . import opus, vp8
from .incoming import Frame, IncomingMedia
from .pool import WRITE_POOL
from .writers import (
    PACKET_WRITERS,
    VIDEO_CLOCK,
    FrameWriter,
    OpusItem,
    VideoItem,
    open_writer,
)

logger = get_logger(__name__)

#: Frames waiting for the writer before new ones are dropped (~10 s of audio or video).
MAX_PENDING = 500
#: Frames handed to the write pool together, and the longest a smaller batch waits (seconds).
BATCH, BATCH_WAIT = 10, 0.2
#: Seconds of video waiting for a writer slower than real time before the oldest are dropped.
VIDEO_MAX_LAG = 0.5
#: A jump in received timestamps longer than the wall-clock pause plus this is not silence.
GAP_SLACK = 0.5


_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def recording_name(call_id: str) -> str:
    """A file name stem for a call's recording, chosen by the bot: UTC time, the call id made
    safe (letters, digits, `-`, `_`; at most 40) and a random tag. The caller picks the call id,
    so it alone must never name a file: `.beep`, `../x` or an id reused after a relay restart
    would replace a bot's asset or an earlier recording."""
    safe = _UNSAFE.sub("_", call_id).strip("-_")[:40] or "call"
    return f"{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{safe}-{secrets.token_hex(3)}"


class _Gaps:
    """Where each piece of received audio falls on a continuous timeline: the silence owed
    before it (a lost packet, a pause of the sender), bounded by the wall-clock time that really
    passed (a sender restarting its timestamps is no pause), or None for a duplicate."""

    def __init__(self) -> None:
        self._next: float | None = None  # media time where the next piece should start
        self._last_wall = 0.0

    def before(self, start: float | None, duration: float) -> float | None:
        now = time.monotonic()
        gap = 0.0
        if self._next is not None and start is not None:
            gap = min(start - self._next, now - self._last_wall + GAP_SLACK)
            if gap < -duration:
                self._last_wall = now
                return None
        base = start if start is not None else (self._next or 0.0)
        self._next = base + duration
        self._last_wall = now
        return gap if gap >= duration / 2 else 0.0


class AudioTimeline:
    """Restamps received audio frames onto one continuous timeline, filling gaps with
    silence."""

    def __init__(self) -> None:
        self._gaps = _Gaps()
        self._samples = 0  # samples issued so far: the output pts

    def place(self, frame: av.AudioFrame) -> list[av.AudioFrame]:
        rate = frame.sample_rate
        at, time_base = frame.pts, frame.time_base
        start = float(at * time_base) if at is not None and time_base is not None else None
        gap = self._gaps.before(start, frame.samples / rate)
        if gap is None:
            return []  # a duplicate: already covered
        out = [self._stamp(_silence_like(frame, round(gap * rate)))] if gap else []
        return [*out, self._stamp(frame)]

    def _stamp(self, frame: av.AudioFrame) -> av.AudioFrame:
        frame.pts = round(self._samples * 48000 / frame.sample_rate)
        frame.time_base = fractions.Fraction(1, 48000)
        self._samples += frame.samples
        return frame


class PacketTimeline:
    """The same for Opus packets stored as they are: gaps become ready silent packets."""

    def __init__(self) -> None:
        self._gaps = _Gaps()
        self._samples = 0

    def place(self, payload: bytes, pts: int) -> list[OpusItem]:
        samples = opus.packet_samples(payload) or opus.FRAME_SAMPLES
        gap = self._gaps.before(pts / opus.RATE, samples / opus.RATE)
        if gap is None:
            return []
        silent = [opus.silent_payload()] * round(gap / 0.02)
        return [self._stamp(p, opus.FRAME_SAMPLES) for p in silent] + [
            self._stamp(payload, samples)
        ]

    def _stamp(self, payload: bytes, samples: int) -> OpusItem:
        item = OpusItem(payload, self._samples, samples)
        self._samples += samples
        return item


class VideoPacketTimeline:
    """The same for encoded VP8 frames, stamped from the first keyframe: frames before it are
    dropped (they refer to pictures the file lacks) while the sender is asked for one. A
    timestamp going back (the sender restarted) waits for the next keyframe the same way."""

    def __init__(self, want_keyframe: Callable[[], None]) -> None:
        self._want_keyframe = want_keyframe
        self._origin: int | None = None
        self._last = -1  # the last pts written

    def place(self, payload: bytes, pts: int) -> list[VideoItem]:
        keyframe = vp8.is_keyframe(payload)
        if self._origin is None or pts - self._origin <= self._last:
            if not keyframe:
                self._want_keyframe()
                return []
            self._origin = pts - self._last - 1  # first: 0; after a restart: right after
        self._last = pts - self._origin
        return [VideoItem(payload, self._last, keyframe)]


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
        at, time_base = frame.pts, frame.time_base
        pts = int(at * time_base * 90000) if at is not None and time_base is not None else 0
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
        self._writer: FrameWriter = open_writer(
            self.path, self.kind, video_size, encoded=source.encoding
        )
        self._source = source
        self._on_error = on_error
        self._loop = asyncio.get_running_loop()
        self._pending: deque[Frame | OpusItem] = deque()
        self._job: asyncio.Future[None] | None = None
        self._stopping = False
        self._stopped: asyncio.Future[None] = self._loop.create_future()
        self._timer: asyncio.TimerHandle | None = None
        self._batch = BATCH if self.kind == "audio" else 1  # a video frame costs more to write
        #: Opus or VP8 received is stored as it is (no decoding) when the container allows
        self.passthrough = isinstance(self._writer, PACKET_WRITERS)
        if self.passthrough:
            self._packets: PacketTimeline | VideoPacketTimeline = (
                PacketTimeline()
                if self.kind == "audio"
                else VideoPacketTimeline(source.want_keyframe)
            )
            source.add_packet_sink(self)
        else:
            self._timeline = AudioTimeline() if self.kind == "audio" else VideoTimeline()
            source.add_sink(self)

    @property
    def stopped(self) -> bool:
        return self._stopped.done()

    # FrameSink
    def write(self, frame: Frame) -> None:
        if not self._stopping:
            self.frames += 1
            self._queue(self._timeline.place(frame))  # type: ignore[arg-type]

    # PacketSink
    def write_packet(self, payload: bytes, pts: int) -> None:
        if not self._stopping:
            self.frames += 1
            self._queue(self._packets.place(payload, pts))

    def _queue(self, items: list[Any]) -> None:
        if self.passthrough:  # storing packets as they are is cheap: done here, no hand-off
            try:
                for item in items:
                    self._writer.write(item)
            except Exception as exc:
                self._give_up(exc)
            return
        for item in items:
            if len(self._pending) >= MAX_PENDING:
                self.dropped += 1
                continue
            self._pending.append(item)
        if self.kind == "video":
            self._drop_stale_video()
        self._kick()

    def _drop_stale_video(self) -> None:
        """Drop (and count) the oldest waiting video frames more than `VIDEO_MAX_LAG` older
        than the newest: a writer slower than real time then leaves a choppier picture, not a
        file seconds behind the call that a crash would cut short."""
        limit = VIDEO_MAX_LAG * VIDEO_CLOCK
        with contextlib.suppress(IndexError):  # the writer thread pops from the left too
            newest = self._pending[-1].pts or 0  # restamped by VideoTimeline: never None
            while len(self._pending) > 1 and newest - (self._pending[0].pts or 0) > limit:
                self._pending.popleft()
                self.dropped += 1

    def end(self) -> None:
        self.stop()

    def stop(self) -> asyncio.Future[None]:
        """Finish writing what was received and close the file (idempotent)."""
        if not self._stopping:
            self._stopping = True
            self._source.remove_sink(self)
            self._source.remove_packet_sink(self)
            self._kick()
        return self._stopped

    def __repr__(self) -> str:
        return f"<TrackRecorder {self.kind} {self.path} frames={self.frames}>"

    # -- the writer job ----------------------------------------------------------------------

    def _kick(self, now: bool = False) -> None:
        """Hand the pending frames to the write pool: in batches (a hand-off per frame costs
        more than writing it), or at once when `now` or stopping."""
        if self._job is not None or self._stopped.done():
            return
        if self._pending and (now or self._stopping or len(self._pending) >= self._batch):
            self._job = self._loop.run_in_executor(WRITE_POOL, self._write_pending)
            self._job.add_done_callback(self._written)
        elif self._pending:
            if self._timer is None:  # a small batch still goes out within BATCH_WAIT
                self._timer = self._loop.call_later(BATCH_WAIT, self._flush_small_batch)
        elif self._stopping:
            self._job = self._loop.run_in_executor(WRITE_POOL, self._writer.close)
            self._job.add_done_callback(self._closed)

    def _flush_small_batch(self) -> None:
        self._timer = None
        self._kick(now=True)

    def _write_pending(self) -> None:
        """Write what is pending now, not what arrives meanwhile: a job ends, so the recorders
        sharing the write pool take turns (a busy video writer would otherwise keep a thread)."""
        for _ in range(len(self._pending)):
            try:
                item = self._pending.popleft()
            except IndexError:  # dropped as stale meanwhile
                return
            self._writer.write(item)

    def _written(self, job: asyncio.Future[None]) -> None:
        self._job = None
        error = job.exception()
        if error is None:
            self._kick()
            return
        self._give_up(error)

    def _give_up(self, error: BaseException) -> None:
        """A write failed (disk full...): report it, stop, and still close the file so what
        was written stays playable."""
        self._record_error(error)
        self._stopping = True
        self._pending.clear()
        self._source.remove_sink(self)
        self._source.remove_packet_sink(self)
        self._kick()

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
