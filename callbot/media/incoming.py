"""The call's incoming side: one hub per kind of remote media, fanning it out to sinks.

Video arrives as frames from aiortc's decoder, read for the whole call by `IncomingMedia` (aiortc
queues them without bound until someone reads). Audio arrives as Opus packets straight from the
receive buffer (jitter.py): packet sinks (recorders storing Opus as is) take them untouched, and
they are decoded, once, only while some frame sink needs samples. Received VP8 is also offered
undecoded, as the frames aiortc assembles (_compat/videotap.py), to packet sinks storing it as
is. Sinks (recorders, frame iterators, tracks handed to users) each get everything; a slow
consumer loses its own oldest frames, counted, never everybody's memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Protocol, cast

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from ..safe import get_logger
from . import opus, vp8

logger = get_logger(__name__)

Frame = av.AudioFrame | av.VideoFrame
#: Seconds between two keyframe requests (RTCP PLI) while a packet sink waits for one.
KEYFRAME_REQUEST_EVERY = 1.0


class FrameSink(Protocol):
    """Receives every frame of one incoming kind, then `end()` once."""

    def write(self, frame: Frame) -> None: ...

    def end(self) -> None: ...


class PacketSink(Protocol):
    """Receives every Opus packet (payload, 48 kHz timestamp) of incoming audio, or every
    encoded frame (payload, 90 kHz timestamp) of incoming video, then `end()`."""

    def write_packet(self, payload: bytes, pts: int) -> None: ...

    def end(self) -> None: ...


class IncomingMedia:
    """Reads one kind of remote media for a call and distributes it to sinks."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.frames = 0
        self.last_frame_at: float | None = None  # monotonic time of the latest frame
        #: While set, sinks get silence (audio) or nothing (video): deafened or on hold.
        self.silenced = False
        self._sinks: list[FrameSink] = []
        self._packet_sinks: list[PacketSink] = []
        self._task: asyncio.Task[None] | None = None
        self._ended = False
        #: "vp8" when video packet sinks get the received frames undecoded (set by the call).
        self.encoding: str | None = None
        #: Asks the sender for a keyframe (set with `encoding` for video).
        self.keyframe_request: Callable[[], None] | None = None
        self._keyframe_asked = -KEYFRAME_REQUEST_EVERY
        self._resync = False  # video packets were held back: resume at a keyframe

    @property
    def wants_frames(self) -> bool:
        """Whether anyone needs decoded frames (else received audio is never decoded)."""
        return bool(self._sinks)

    @property
    def wants_packets(self) -> bool:
        """Whether a packet sink (e.g. a recorder storing Opus as it is) is attached."""
        return bool(self._packet_sinks)

    def packet(self, payload: bytes, pts: int) -> None:
        """An Opus packet arrived (from the receive buffer), stamped in 48 kHz units."""
        self.frames += 1
        self.last_frame_at = time.monotonic()
        if self.silenced:
            payload = opus.silent_payload()
        self._to_packet_sinks(payload, pts)

    def encoded_video(self, payload: bytes, pts: int) -> None:
        """An encoded VP8 frame arrived (before decoding), stamped in 90 kHz units. Nothing
        goes out while silenced; after that, packet sinks resume at a keyframe (the frames in
        between refer to pictures they never got)."""
        if not self._packet_sinks:
            return
        if self.silenced:
            self._resync = True
            return
        if self._resync:
            if not vp8.is_keyframe(payload):
                self.want_keyframe()
                return
            self._resync = False
        self._to_packet_sinks(payload, pts)

    def _to_packet_sinks(self, payload: bytes, pts: int) -> None:
        for sink in list(self._packet_sinks):
            try:
                sink.write_packet(payload, pts)
            except Exception:  # one broken sink must not starve the others
                logger.exception("%s packet sink %r failed; removing it", self.kind, sink)
                self.remove_packet_sink(sink)

    def want_keyframe(self) -> None:
        """Ask the sender for a keyframe, at most once per `KEYFRAME_REQUEST_EVERY` seconds."""
        now = time.monotonic()
        if self.keyframe_request is not None and now - self._keyframe_asked >= (
            KEYFRAME_REQUEST_EVERY
        ):
            self._keyframe_asked = now
            self.keyframe_request()

    def deliver(self, frame: Frame) -> None:
        """A decoded frame for the frame sinks (silence while deafened or held)."""
        if self.silenced:
            if not isinstance(frame, av.AudioFrame):
                return
            frame = _silence_of(frame)
        for sink in list(self._sinks):
            try:
                sink.write(frame)
            except Exception:  # one broken sink must not starve the others
                logger.exception("%s sink %r failed; removing it", self.kind, sink)
                self.remove_sink(sink)

    def add_packet_sink(self, sink: PacketSink) -> None:
        if self._ended:
            sink.end()
        else:
            self._packet_sinks.append(sink)

    def remove_packet_sink(self, sink: PacketSink) -> None:
        with contextlib.suppress(ValueError):
            self._packet_sinks.remove(sink)

    @property
    def attached(self) -> bool:
        return self._task is not None

    def attach(self, track: MediaStreamTrack) -> None:
        """Start reading `track` (the remote track aiortc created)."""
        if self._task is None and not self._ended:
            self._task = asyncio.get_running_loop().create_task(
                self._pump(track), name=f"callbot-incoming-{self.kind}"
            )

    def add_sink(self, sink: FrameSink) -> None:
        if self._ended:
            sink.end()
        else:
            self._sinks.append(sink)

    def remove_sink(self, sink: FrameSink) -> None:
        with contextlib.suppress(ValueError):
            self._sinks.remove(sink)

    def subscribe(self, maxsize: int = 250, *, lazy: bool = False) -> FrameSubscription:
        """A new consumer of this media: an async iterator that is also a MediaStreamTrack.

        A `lazy` subscription starts taking frames at its first `recv()`, so one handed out
        and never read holds no frames.
        """
        subscription = FrameSubscription(self, maxsize)
        if not lazy:
            subscription.start()
        return subscription

    async def close(self) -> None:
        """Stop reading and end every sink."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._finish()

    async def _pump(self, track: MediaStreamTrack) -> None:
        try:
            while True:
                # a remote track aiortc created yields decoded frames, never packets
                frame = cast(Frame, await track.recv())
                self.frames += 1
                self.last_frame_at = time.monotonic()
                self.deliver(frame)
        except MediaStreamError:
            pass
        finally:
            self._finish()

    def _finish(self) -> None:
        if self._ended:
            return
        self._ended = True
        sinks, self._sinks = self._sinks, []
        packet_sinks, self._packet_sinks = self._packet_sinks, []
        ending: list[FrameSink | PacketSink] = [*sinks, *packet_sinks]
        for sink in ending:
            sink.end()


def _silence_of(frame: av.AudioFrame) -> av.AudioFrame:
    """A frame like `frame` (format, layout, rate, timestamp) with every sample zero."""
    silent = av.AudioFrame.from_ndarray(
        np.zeros_like(frame.to_ndarray()), format=frame.format.name, layout=frame.layout.name
    )
    silent.sample_rate = frame.sample_rate
    silent.pts, silent.time_base = frame.pts, frame.time_base
    return silent


class FrameSubscription(MediaStreamTrack):
    """Frames of one incoming kind for one consumer, as `async for` or as a track.

    Being a `MediaStreamTrack`, it can be handed to aiortc or played into another call.
    """

    def __init__(self, source: IncomingMedia, maxsize: int) -> None:
        super().__init__()
        self.kind = source.kind
        self.dropped = 0
        self._source = source
        self._queue: asyncio.Queue[Frame | None] = asyncio.Queue(maxsize + 1)
        self._maxsize = maxsize
        self._started = False

    def start(self) -> None:
        """Begin taking frames from the source (idempotent)."""
        if not self._started:
            self._started = True
            self._source.add_sink(self)

    def write(self, frame: Frame) -> None:
        if self._queue.qsize() >= self._maxsize:
            self._queue.get_nowait()
            self.dropped += 1
        self._queue.put_nowait(frame)

    def end(self) -> None:
        self._queue.put_nowait(None)

    async def recv(self) -> Frame:
        if self.readyState != "live":
            raise MediaStreamError
        self.start()
        frame = await self._queue.get()
        if frame is None:
            self.stop()
            raise MediaStreamError
        return frame

    def stop(self) -> None:
        self._source.remove_sink(self)
        super().stop()

    def __aiter__(self) -> AsyncIterator[Frame]:
        return self

    async def __anext__(self) -> Frame:
        try:
            return await self.recv()
        except MediaStreamError:
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        """Stop receiving (the iterator ends)."""
        self.stop()
