"""The call's outgoing tracks: paced in real time, they never end.

Each track plays whatever source is attached (a `Playback` or a live `TrackSource`) and
otherwise sends silence (audio) or the last still frame (video). Muting or holding swaps in
silence / black while the source keeps running, so the peer sees a continuous stream.

Audio leaves as Opus packets, which aiortc's sender passes through: prompts come already
encoded from the process-wide cache, silence is one ready packet, and only live or generated
audio (an echo, DTMF tones) is encoded here. All audio tracks share one 20 ms clock. Video
leaves as VP8 packets while a cached video plays, and as frames (encoded by aiortc) otherwise.
"""

from __future__ import annotations

import asyncio
import fractions
import time
from collections import deque
from collections.abc import Callable
from typing import Literal, Protocol

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from . import opus
from .cache import VideoPacket
from .clock import AUDIO_TICKER, Pacer, Ticker
from .decoder import AUDIO_FRAME_SAMPLES, AUDIO_RATE, black_video_frame, silent_audio_frame
from .feeds import AudioItem, VideoItem

VIDEO_CLOCK = 90000
#: Frame rate of the still frame sent between playbacks.
IDLE_FPS = 10.0
#: A video track this many packets behind jumps to its latest keyframe instead of catching up
#: (the packets in between are sent back to back otherwise: a VP8 stream cannot skip frames).
MAX_VIDEO_BACKLOG = 5
#: Due video packets that may wait for the next tick. While audio plays, media time moves in
#: 20 ms steps, so 33 ms frames fall due unevenly (two in one tick, none in the next): sending
#: one per tick spaces them evenly; only more than this pending means the track is behind.
VIDEO_SLACK = 1

#: How a source's play ended: "ended" means the call ended first.
PlaybackResult = Literal["finished", "stopped", "error", "ended"]

_AUDIO_TIME_BASE = fractions.Fraction(1, AUDIO_RATE)
_VIDEO_TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK)


class MediaSource(Protocol):
    """What an outgoing track plays: a `Playback` (file) or a `TrackSource` (live track)."""

    @property
    def kinds(self) -> frozenset[str]: ...

    @property
    def fps(self) -> float: ...

    def next_audio(self) -> AudioItem | None: ...

    def video_frame(self, now: float) -> VideoItem | None: ...

    def release(self, kind: str, result: PlaybackResult = "stopped") -> None: ...


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
    """20 ms of audio per tick of the shared clock, as Opus packets (or frames, for a call
    that negotiated another codec: set `opus = False`)."""

    kind = "audio"

    def __init__(self, ticker: Ticker = AUDIO_TICKER) -> None:
        super().__init__()
        self.opus = True
        self.dropped = 0  # 20 ms slots skipped because the process could not keep up
        self._ticker = ticker
        self._first_tick: int | None = None
        self._last_tick: int | None = None
        self._encoder: opus.OpusEncoder | None = None
        self._decoder: opus.OpusDecoder | None = None
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

    async def recv(self) -> av.Packet | av.AudioFrame:
        self._check_live()
        tick = await self._ticker.next(self._last_tick)
        if self.opus:
            return opus.packet(*self.next_payload(tick))
        return self._as_frame(*self._next_item(tick))

    def next_audio(self, tick: int) -> AudioItem | None:
        """What goes out at the clock's `tick`, as it is: a shared prompt's Opus payload, a
        frame (live or generated audio), or None (silence). For legs that take PCM, such as
        SIP calls, which decode it through `callbot.media.pcm`."""
        self._check_live()
        return self._next_item(tick)[0]

    def next_payload(self, tick: int) -> tuple[bytes, int]:
        """The Opus payload for the clock's `tick` and its timestamp (48 kHz, from the track's
        first tick). `recv()` uses it; so does the fast sender, which drives every call's
        audio from one loop over the shared clock."""
        self._check_live()
        item, pts = self._next_item(tick)
        if isinstance(item, av.AudioFrame):
            if self._encoder is None:
                self._encoder = opus.OpusEncoder()
            payloads = self._encoder.encode(item)
            item = payloads[0] if payloads else None
        return (item if item is not None else opus.silent_payload()), pts

    def _next_item(self, tick: int) -> tuple[AudioItem | None, int]:
        if self._first_tick is None:
            self._first_tick = tick
        elif self._last_tick is not None and tick > self._last_tick + 1:
            self.dropped += tick - self._last_tick - 1
            self._ticker.dropped += tick - self._last_tick - 1
        self._last_tick = tick
        pts = (tick - self._first_tick) * AUDIO_FRAME_SAMPLES
        # inserted frames (DTMF) go out even when muted
        item: AudioItem | None = self._next_insert()
        if item is None:
            item = self._from_source()
        return item, pts

    def _as_frame(self, item: AudioItem | None, pts: int) -> av.AudioFrame:
        if isinstance(item, bytes):
            if self._decoder is None:
                self._decoder = opus.OpusDecoder()
            frames = self._decoder.decode(item, pts)
            item = frames[0] if frames else None
        frame = item if item is not None else silent_audio_frame()
        frame.pts = pts
        frame.sample_rate = AUDIO_RATE
        frame.time_base = _AUDIO_TIME_BASE
        return frame

    def _next_insert(self) -> av.AudioFrame | None:
        while self._inserts:
            frames, done = self._inserts[0]
            if frames:
                return frames.popleft()
            self._inserts.popleft()
            if not done.done():
                done.set_result(None)
        return None

    def _from_source(self) -> AudioItem | None:
        playback = self._playback
        if playback is None:
            return None
        item = playback.next_audio()  # taken even when silenced: the source keeps its clock
        if "audio" not in playback.kinds:
            self._playback = None
        return None if self.silenced else item


class OutgoingVideoTrack(_OutgoingTrack):
    """Video at the playback's frame rate (idle: a still frame at `IDLE_FPS`).

    A cached playback's VP8 packets go out as they are, every one in order (a VP8 stream cannot
    skip a frame), one per tick (see `VIDEO_SLACK`); pictures (idle stills, live or uncached
    video) go out as frames for aiortc to encode. `keyframe_needed` is called when frames follow
    packets, because aiortc's encoder must then start with a full picture.
    """

    kind = "video"

    def __init__(self, size: tuple[int, int] = (640, 480)) -> None:
        super().__init__()
        self.size = size
        self.keyframe_needed: Callable[[], None] | None = None
        self._black = black_video_frame(*size)
        self._still = self._black
        self._pacer = Pacer(1 / IDLE_FPS)
        self._sending_packets = False
        self._pending: deque[VideoPacket] = deque()
        self._last_pts = -1

    async def recv(self) -> av.Packet | av.VideoFrame:
        self._check_live()
        while True:
            picture = False
            if len(self._pending) <= VIDEO_SLACK or self.silenced:  # else: catch up at once
                playback = self._playback
                if playback is not None and playback.fps:
                    self._pacer.set_period(1 / playback.fps)
                elif not self._pending:  # the file's last packets keep its pace
                    self._pacer.set_period(1 / IDLE_FPS)
                await self._pacer.tick()
                if playback is not None:
                    picture = self._take(playback)
            if self._pending and not self.silenced:
                if not self._sending_packets:  # after pictures, packets resume at a keyframe
                    while self._pending and not self._pending[0].keyframe:
                        self._pending.popleft()
                if self._pending:
                    return self._packet(self._pending.popleft())
            waiting = self._sending_packets and self._playback is not None and not self.silenced
            if picture or not waiting:
                break
            # a file's packets are playing but none is due yet (variable frame rate): a
            # picture now would break their stream, so nothing goes out this tick
        if self._sending_packets:  # from packets back to pictures: start with a full one
            self._sending_packets = False
            if self.keyframe_needed is not None:
                self.keyframe_needed()
        frame = self._black if self.silenced else self._still
        frame.pts = self._next_pts()
        frame.time_base = _VIDEO_TIME_BASE
        return frame

    def _next_pts(self) -> int:
        """The clock's time, but always past the last one sent (a frame per RTP timestamp)."""
        self._last_pts = max(round(self._pacer.elapsed * VIDEO_CLOCK), self._last_pts + 1)
        return self._last_pts

    def _take(self, playback: MediaSource) -> bool:
        """Collect what the playback has due now: packets queue up, a picture replaces the
        still. True when a picture came."""
        now = time.monotonic()
        picture = False
        while (item := playback.video_frame(now)) is not None:
            if isinstance(item, VideoPacket):
                self._pending.append(item)
            else:
                self._still, picture = item, True
        if len(self._pending) > MAX_VIDEO_BACKLOG:  # fell far behind: jump to a keyframe
            keyframes = [i for i, p in enumerate(self._pending) if p.keyframe]
            for _ in range(keyframes[-1] if keyframes else 0):
                self._pending.popleft()
        if "video" not in playback.kinds:
            self._playback = None
            last = getattr(playback, "last_frame", None)
            if last is not None:  # shown once the packets still pending have gone out
                self._still = last
        return picture

    def _packet(self, item: VideoPacket) -> av.Packet:
        self._sending_packets = True
        out = av.Packet(item.payload)
        out.pts = self._next_pts()
        out.time_base = _VIDEO_TIME_BASE
        return out
