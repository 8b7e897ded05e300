"""File writers for recordings, one per container family, all crash-tolerant.

Every writer gets frames in order from one worker thread at a time and makes what it wrote
durable about once a second, so a process killed with SIGKILL leaves a file that plays up to
roughly its last second: WAV gets its header patched and flushed, Ogg gets short pages, MP4 is
fragmented, Matroska/WebM gets short clusters, and FFmpeg flushes after every packet.
"""

from __future__ import annotations

import fractions
import time
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import av
import av.error

from ..errors import MediaError
from ..safe import get_logger
from . import vp8
from .ogg import OggOpusWriter

logger = get_logger(__name__)

AUDIO_RATE = 48000
VIDEO_CLOCK = 90000
FLUSH_EVERY = 0.5  # seconds between header patches / flushes of the WAV writer

# suffix -> (FFmpeg muxer, muxer options that keep a killed file playable)
_CONTAINERS: dict[str, tuple[str, dict[str, str]]] = {
    ".ogg": ("ogg", {"page_duration": "200000"}),  # decoded audio; received Opus: ogg.py
    ".opus": ("ogg", {"page_duration": "200000"}),
    ".mp3": ("mp3", {}),
    ".mp4": (
        "mp4",
        {"movflags": "frag_keyframe+empty_moov+default_base_moof", "frag_duration": "200000"},
    ),
    ".m4a": (
        "mp4",
        {"movflags": "frag_keyframe+empty_moov+default_base_moof", "frag_duration": "500000"},
    ),
    ".webm": ("webm", {"cluster_time_limit": "200"}),  # video: as often as Ogg audio pages
    ".mkv": ("matroska", {"cluster_time_limit": "200"}),
    ".mka": ("matroska", {"cluster_time_limit": "500"}),
}
_AUDIO_CODECS = {
    ".ogg": "libopus",
    ".opus": "libopus",
    ".mp3": "libmp3lame",
    ".mp4": "aac",
    ".m4a": "aac",
    ".webm": "libopus",
    ".mkv": "libopus",
    ".mka": "libopus",
}
_VIDEO_CODECS = {".mp4": "libx264", ".webm": "libvpx", ".mkv": "libx264"}
_VIDEO_OPTIONS = {
    "libx264": {"preset": "veryfast", "tune": "zerolatency"},
    "libvpx": {"deadline": "realtime", "cpu-used": "16", "b": "1500k"},  # fastest VP8
}

AUDIO_SUFFIXES = frozenset({".wav", *_AUDIO_CODECS})
VIDEO_SUFFIXES = frozenset(_VIDEO_CODECS)
#: Where received Opus is stored by callbot's own Ogg writer (ogg.py), not FFmpeg's.
OGG_SUFFIXES = frozenset({".ogg", ".opus"})
#: Where received VP8 is stored as it is (FFmpeg cannot put VP8 in MP4: it is re-encoded).
VP8_SUFFIXES = frozenset({".webm", ".mkv"})


class FrameWriter(Protocol):
    """Writes one track's frames (or Opus packets) to a file; `close()` finalises it."""

    def write(self, frame: Any) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class OpusItem:
    """A received Opus packet placed on a recording's timeline (48 kHz units)."""

    payload: bytes
    pts: int
    samples: int


@dataclass(frozen=True)
class VideoItem:
    """A received encoded VP8 frame placed on a recording's timeline (90 kHz units)."""

    payload: bytes
    pts: int
    keyframe: bool


def open_writer(
    path: Path, kind: str, default_size: tuple[int, int], *, encoded: str | None = None
) -> FrameWriter:
    """Create the file now (so a bad path fails at once) and return its writer. `encoded` is
    the codec the source offers undecoded ("vp8"): stored as it is where the container allows.

    The file is created exclusively: a recording never replaces an existing file (a caller's
    call id reused as a name must not overwrite an earlier recording or a bot's own asset).
    """
    suffix = path.suffix.lower()
    allowed = AUDIO_SUFFIXES if kind == "audio" else VIDEO_SUFFIXES
    if suffix not in allowed:
        raise MediaError(
            path,
            f"cannot record {kind} to '{suffix or 'no suffix'}' "
            f"(use one of {', '.join(sorted(allowed))})",
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if suffix == ".wav":
            return WavWriter(path)
        if kind == "audio" and suffix in OGG_SUFFIXES:
            return OggOpusWriter(path)
        if kind == "audio" and _AUDIO_CODECS[suffix] == "libopus":
            return OpusPacketWriter(path)
        if kind == "video" and encoded == "vp8" and suffix in VP8_SUFFIXES:
            return Vp8PacketWriter(path, default_size)
        return ContainerWriter(path, kind, default_size)
    except FileExistsError as exc:
        raise MediaError(path, "already exists: recordings never replace a file") from exc
    except (OSError, av.error.FFmpegError) as exc:
        raise MediaError(path, f"cannot write ({getattr(exc, 'strerror', None) or exc})") from exc


class WavWriter:
    """16-bit stereo 48 kHz WAV whose header is patched and flushed every `FLUSH_EVERY` s."""

    def __init__(self, path: Path) -> None:
        self._file = path.open("xb")
        self._wave = wave.open(self._file, "wb")  # noqa: SIM115  (lives as long as the writer)
        self._wave.setnchannels(2)
        self._wave.setsampwidth(2)
        self._wave.setframerate(AUDIO_RATE)
        self._wave.writeframes(b"")  # header now: the file is valid (and empty) at once
        self._file.flush()
        self._resampler = av.AudioResampler(format="s16", layout="stereo", rate=AUDIO_RATE)
        self._flushed = time.monotonic()

    def write(self, frame: av.AudioFrame) -> None:
        for converted in self._resampler.resample(frame):
            self._wave.writeframesraw(converted.to_ndarray().tobytes())
        if time.monotonic() - self._flushed >= FLUSH_EVERY:
            self._wave.writeframes(b"")  # patches the RIFF and data sizes in the header
            self._file.flush()
            self._flushed = time.monotonic()

    def close(self) -> None:
        try:
            for converted in self._resampler.resample(None):
                self._wave.writeframesraw(converted.to_ndarray().tobytes())
            self._wave.close()
        finally:
            self._file.close()


class OpusPacketWriter:
    """WebM or Matroska holding the received Opus packets as they are: no decoding, no
    encoding. (The stream's encoder is opened only to write the Opus header; never used.)
    Ogg has a writer of its own (ogg.py).

    Written through a small unbuffered I/O buffer instead of a flush per packet: a write call
    every ~2 KB (a third of a second of Opus) keeps a killed recording nearly whole for a
    fraction of the system calls.
    """

    def __init__(self, path: Path) -> None:
        muxer, options = _CONTAINERS[path.suffix.lower()]
        self._file = path.open("xb", buffering=0)
        self._container = av.open(
            self._file, mode="w", format=muxer, buffer_size=OPUS_IO_BUFFER,
            container_options=options,
        )  # fmt: skip
        self._stream = self._container.add_stream("libopus", rate=AUDIO_RATE, layout="stereo")
        self._stream.time_base = _OPUS_TIME_BASE

    def write(self, item: OpusItem) -> None:
        packet = av.Packet(item.payload)
        packet.pts = packet.dts = item.pts
        packet.duration = item.samples
        packet.time_base = _OPUS_TIME_BASE
        packet.stream = self._stream
        self._container.mux(packet)

    def close(self) -> None:
        try:
            self._container.close()
        finally:
            self._file.close()


_OPUS_TIME_BASE = fractions.Fraction(1, AUDIO_RATE)
OPUS_IO_BUFFER = 2048


class Vp8PacketWriter:
    """WebM or Matroska holding the received VP8 frames as they are: no decoding, no encoding.

    The stream is added at the first keyframe, whose header gives the picture size (a file
    starts with a keyframe: the recorder drops what comes before). A later keyframe of another
    size is stored as it is: VP8 carries its size in every keyframe and players follow it;
    only the track header keeps the first size. Clusters close every 200 ms and each is
    flushed to the file, so a killed recording plays up to about its last second.
    """

    def __init__(self, path: Path, default_size: tuple[int, int]) -> None:
        muxer, options = _CONTAINERS[path.suffix.lower()]
        self._path = path
        self._default_size = default_size
        self._file = path.open("xb", buffering=0)
        self._container = av.open(
            self._file, mode="w", format=muxer,
            container_options={"flush_packets": "1", **options},
        )  # fmt: skip
        self._stream: av.stream.Stream | None = None
        self._size: tuple[int, int] | None = None

    def write(self, item: VideoItem) -> None:
        if item.keyframe:
            self._keyframe(item.payload)
        if self._stream is None:
            return  # not reached: the recorder starts with a keyframe
        packet = av.Packet(item.payload)
        packet.pts = packet.dts = item.pts
        packet.time_base = _VIDEO_TIME_BASE
        packet.is_keyframe = item.keyframe
        packet.stream = self._stream
        self._container.mux(packet)

    def _keyframe(self, payload: bytes) -> None:
        """Open the stream at the first keyframe; log a change of picture size."""
        size = vp8.keyframe_size(payload)
        if size is None or size == self._size:
            return
        if self._stream is None:
            self._open_stream(size)
        else:
            logger.info(
                "recording %s: the picture changes from %dx%d to %dx%d (stored as received)",
                self._path, *self._size or (0, 0), *size,
            )  # fmt: skip
        self._size = size

    def _open_stream(self, size: tuple[int, int]) -> None:
        self._stream = self._container.add_mux_stream("vp8", width=size[0], height=size[1])
        self._stream.time_base = _VIDEO_TIME_BASE

    def close(self) -> None:
        try:
            if self._stream is None:  # nothing received: still a valid (empty) file
                self._open_stream(self._default_size)
                self._container.start_encoding()
        finally:
            try:
                self._container.close()
            finally:
                self._file.close()


_VIDEO_TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK)


#: Writers that store received packets as they are (no decoding): fed inline, per packet.
PACKET_WRITERS = (OggOpusWriter, OpusPacketWriter, Vp8PacketWriter)


class ContainerWriter:
    """Any FFmpeg container: encodes and muxes as frames arrive, flushing every packet."""

    def __init__(self, path: Path, kind: str, default_size: tuple[int, int]) -> None:
        suffix = path.suffix.lower()
        muxer, options = _CONTAINERS[suffix]
        self._kind = kind
        self._codec = _AUDIO_CODECS[suffix] if kind == "audio" else _VIDEO_CODECS[suffix]
        self._default_size = default_size
        self._file = path.open("xb", buffering=0)
        self._container = av.open(
            self._file,
            mode="w",
            format=muxer,
            container_options={"flush_packets": "1", **options},
        )
        self._stream: av.stream.Stream | None = None
        self._last_pts = -1
        if kind == "audio":
            self._open_stream(None)

    def write(self, frame: av.AudioFrame | av.VideoFrame) -> None:
        if self._stream is None:
            self._open_stream(frame)
        assert self._stream is not None
        if isinstance(frame, av.VideoFrame):
            if frame.pts is None or frame.pts <= self._last_pts:
                return  # the muxer needs strictly increasing timestamps
            self._last_pts = frame.pts
            stream = self._stream
            if (frame.width, frame.height) != (stream.width, stream.height) or (
                frame.format.name != "yuv420p"
            ):
                pts, time_base = frame.pts, frame.time_base
                frame = frame.reformat(stream.width, stream.height, "yuv420p")
                frame.pts, frame.time_base = pts, time_base
        self._container.mux(self._stream.encode(frame))

    def close(self) -> None:
        try:
            if self._stream is None:
                self._open_stream(None)
            assert self._stream is not None
            self._container.mux(self._stream.encode(None))
        finally:
            try:
                self._container.close()
            finally:
                self._file.close()

    def _open_stream(self, first: av.AudioFrame | av.VideoFrame | None) -> None:
        if self._kind == "audio":
            stream = self._container.add_stream(self._codec, rate=AUDIO_RATE, layout="stereo")
            stream.time_base = fractions.Fraction(1, AUDIO_RATE)
        else:
            width, height = (first.width, first.height) if first else self._default_size
            stream = self._container.add_stream(self._codec, rate=30)
            stream.width, stream.height = width - width % 2, height - height % 2
            stream.pix_fmt = "yuv420p"
            stream.time_base = fractions.Fraction(1, VIDEO_CLOCK)
            stream.codec_context.time_base = fractions.Fraction(1, VIDEO_CLOCK)
            stream.codec_context.gop_size = 60
            stream.options = dict(_VIDEO_OPTIONS[self._codec])
        self._stream = stream
