"""Encode once: every file a process plays is decoded and encoded a single time.

The first call to play a file starts one encoding job on the shared decode pool; its Opus
packets (and VP8 packets, per video size) go into a `Prompt` that every call playing that file
reads from, each at its own pace, while the job is still filling it. A prompt played into a
hundred calls costs one decode and one encode, then only packetisation and encryption per call.
Entries are keyed by path, size, modification time and video size; the least recently used are
dropped when the cache outgrows its byte budget (playbacks keep theirs alive).
"""

from __future__ import annotations

import fractions
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import av

from ..errors import MediaError
from ..safe import get_logger
from .decoder import AUDIO_FRAME_SAMPLES, AUDIO_RATE, DecodedChunk, FileDecoder
from .loops import SETTLE_FRAMES, encode_cycle
from .opus import OpusEncoder
from .pool import DECODE_POOL

logger = get_logger(__name__)

MAX_BYTES = 256 * 1024 * 1024
#: Longer files are decoded per call instead (a feature film is no prompt).
MAX_AUDIO_SECONDS = 20 * 60
MAX_VIDEO_SECONDS = 5 * 60
VIDEO_BITRATE = 1_000_000
VIDEO_CLOCK = 90000
CHUNK_SECONDS = 1.0


@dataclass(frozen=True)
class VideoPacket:
    """One encoded video frame of a prompt, at `time` seconds into the file."""

    time: float
    payload: bytes
    keyframe: bool


@dataclass
class Prompt:
    """A file's media, encoded once, growing while its job runs (lists are only appended)."""

    path: Path
    has_audio: bool
    has_video: bool
    fps: float
    audio: list[bytes] = field(default_factory=list)  # Opus payloads, 20 ms each
    video: list[VideoPacket] = field(default_factory=list)
    last_frame: av.VideoFrame | None = None  # the picture to keep showing afterwards
    length: float | None = None  # seconds of one pass, once complete
    complete: bool = False
    error: MediaError | None = None
    size: int = 0  # bytes held
    #: One loop period of audio packets (see loops.py), once some playback loops the prompt.
    cycle: list[bytes] | None = None
    #: The looping stream's packets while its period is encoded (see `loop_audio`).
    cycle_stream: list[bytes] = field(default_factory=list)
    loop_wanted: bool = False
    loop_pass_samples: int = 0  # samples one pass takes in the loop period

    @property
    def loop_length(self) -> float | None:
        """Seconds one pass takes when looping (None until known)."""
        if not self.complete or (self.has_audio and self.cycle is None):
            return None
        return self.loop_pass_samples / AUDIO_RATE if self.has_audio else self.length

    def done(self) -> bool:
        """No more packets will come (finished or failed)."""
        return self.complete or self.error is not None

    @property
    def pass_samples(self) -> int:
        """48 kHz samples in one pass (once complete)."""
        return round((self.length or 0.0) * AUDIO_RATE)

    def loop_audio(self, index: int) -> bytes | None:
        """The packet at `index` of a looping playback: the first pass as encoded (while its
        packets hold the file's own samples), then the loop period; None while not ready."""
        valid = self.pass_samples // AUDIO_FRAME_SAMPLES if self.complete else len(self.audio)
        if index < valid:
            return self.audio[index]
        if self.cycle:
            return self.cycle[index % len(self.cycle)]
        # the period is still being encoded: the looping stream's own packets (past the few
        # that prime its encoder) continue the first pass seamlessly in the meantime
        stream = self.cycle_stream
        return stream[index] if SETTLE_FRAMES <= index < len(stream) else None


class _Vp8Encoder:
    """Frames of one size in, VP8 frames out, with a keyframe every second (so a call that
    loses one, or a receiver that asks, waits at most a second)."""

    def __init__(self, size: tuple[int, int], fps: float) -> None:
        codec = av.CodecContext.create("libvpx", "w")
        codec.width, codec.height = size
        codec.pix_fmt = "yuv420p"
        codec.time_base = fractions.Fraction(1, VIDEO_CLOCK)
        codec.framerate = fractions.Fraction(round(fps * 1000), 1000)
        codec.bit_rate = VIDEO_BITRATE
        codec.gop_size = max(1, round(fps))
        codec.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
        self._codec = codec

    def encode(self, frame: av.VideoFrame | None, time: float) -> list[VideoPacket]:
        if frame is not None:
            frame.pts = round(time * VIDEO_CLOCK)
            frame.time_base = fractions.Fraction(1, VIDEO_CLOCK)
        return [
            VideoPacket(float(p.pts * p.time_base) if p.pts is not None else time, bytes(p),
                        p.is_keyframe)
            for p in self._codec.encode(frame)
        ]  # fmt: skip


class PromptCache:
    """The process's encoded prompts (see the module docstring)."""

    def __init__(self, max_bytes: int = MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple, Prompt] = OrderedDict()
        self._lock = threading.Lock()
        self.encodes = 0  # encoding jobs started (tests and benchmarks read it)

    def get(self, path: str | Path, video_size: tuple[int, int] | None = None) -> Prompt | None:
        """The shared encoding of `path` (starting it if needed), or None for a file too long
        to cache. Raises `MediaError` for a file that cannot be played, before anything."""
        path = Path(path)
        try:
            stat = path.resolve().stat()
        except OSError:
            stat = None  # FileDecoder names the problem precisely
        key = (str(path.resolve()), stat and stat.st_size, stat and stat.st_mtime_ns, video_size)
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
                return entry
        decoder = FileDecoder(path, audio=True, video_size=video_size)  # validates the file
        limit = MAX_VIDEO_SECONDS if decoder.has_video else MAX_AUDIO_SECONDS
        if (decoder.duration or 0) > limit:
            decoder.close()
            return None
        entry = Prompt(path, decoder.has_audio, decoder.has_video, decoder.fps)
        audio = OpusEncoder() if entry.has_audio else None
        video = _Vp8Encoder(video_size, entry.fps) if entry.has_video and video_size else None
        # corrupt from the start: fails here, before anything is sent; and the first packets
        # are ready before the first call asks for them
        self._add(entry, audio, video, decoder.read(0.1))
        with self._lock:
            self._entries[key] = entry
            self.encodes += 1
        DECODE_POOL.submit(self._encode, entry, decoder, audio, video)
        self._trim()
        return entry

    def want_loop(self, entry: Prompt) -> None:
        """A playback loops `entry`: have its loop period encoded (once)."""
        with self._lock:
            if entry.loop_wanted:
                return
            entry.loop_wanted = True
            ready = entry.complete
        if ready:
            DECODE_POOL.submit(self._encode_cycle, entry)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def _encode(
        self,
        entry: Prompt,
        decoder: FileDecoder,
        audio: OpusEncoder | None,
        video: _Vp8Encoder | None,
    ) -> None:
        """The encoding job (a pool thread): fill `entry` as fast as decoding allows."""
        try:
            while not decoder.finished:
                self._add(entry, audio, video, decoder.read(CHUNK_SECONDS))
            if audio is not None:
                entry.audio.extend(audio.flush())
            if video is not None:
                entry.video.extend(video.encode(None, decoder.pass_length or 0.0))
            entry.length = decoder.pass_length
            with self._lock:
                entry.complete = True
                loop = entry.loop_wanted
            if loop:
                self._encode_cycle(entry)
        except MediaError as exc:
            entry.error = exc
        except Exception as exc:  # an encoder failure is reported like a corrupt file
            logger.exception("encoding %s failed", entry.path)
            entry.error = MediaError(entry.path, f"encoding failed ({exc!r})")
        finally:
            decoder.close()

    @staticmethod
    def _encode_cycle(entry: Prompt) -> None:
        if not entry.has_audio or entry.pass_samples <= 0:
            return
        try:
            cycle, entry.loop_pass_samples = encode_cycle(
                entry.path, entry.pass_samples, entry.cycle_stream
            )
        except Exception as exc:  # the file changed or broke between the two encodings
            logger.exception("encoding the loop of %s failed", entry.path)
            entry.error = MediaError(entry.path, f"encoding its loop failed ({exc!r})")
            return
        entry.size += sum(len(p) for p in cycle)
        entry.cycle = cycle  # a playback may read it at once
        entry.cycle_stream = []

    @staticmethod
    def _add(
        entry: Prompt, audio: OpusEncoder | None, video: _Vp8Encoder | None, chunk: DecodedChunk
    ) -> None:
        if audio is not None:
            for sound in chunk.audio:
                payloads = audio.encode(sound)
                entry.audio.extend(payloads)
                entry.size += sum(len(p) for p in payloads)
        if video is not None:
            for time, frame in chunk.video:
                packets = video.encode(frame, time)
                entry.video.extend(packets)
                entry.size += sum(len(p.payload) for p in packets)
                entry.last_frame = frame

    def _trim(self) -> None:
        with self._lock:
            total = sum(e.size for e in self._entries.values())
            while total > self.max_bytes and len(self._entries) > 1:
                _, dropped = self._entries.popitem(last=False)
                total -= dropped.size


#: The process-wide cache every call uses.
PROMPTS = PromptCache()
