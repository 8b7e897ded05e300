"""Decode any file PyAV reads into call-ready frames: 48 kHz 20 ms audio, scaled video.

`FileDecoder` is synchronous and pull-based: each `read()` decodes a bounded slice of media, so
a caller decides how far ahead it reads (no unbounded read-ahead, no thread of its own). Loops
are handled here by seeking back and offsetting timestamps, so the output timeline is one
continuous line with no gap at the seam and audio and video share the same loop length.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import av
import av.error
import numpy as np

from ..errors import MediaError

AUDIO_RATE = 48000
AUDIO_FRAME_SAMPLES = 960  # 20 ms at 48 kHz
AUDIO_FORMAT = "s16"
AUDIO_LAYOUT = "stereo"
MAX_VIDEO_FPS = 30.0
#: Consecutive undecodable packets tolerated before a file is declared corrupt.
MAX_BAD_PACKETS = 25
#: A file whose decodable media falls this far short of its declared duration is corrupt
#: (the share leaves room for the loose estimates of VBR files without a header).
MIN_MISSING, MISSING_SHARE = 1.0, 0.25


@dataclass
class DecodedChunk:
    """One slice of decoded media: 20 ms audio frames and (media time, video frame) pairs."""

    audio: list[av.AudioFrame] = field(default_factory=list)
    video: list[tuple[float, av.VideoFrame]] = field(default_factory=list)
    finished: bool = False


def silent_audio_frame(samples: int = AUDIO_FRAME_SAMPLES) -> av.AudioFrame:
    """A frame of digital silence in the call's audio format."""
    frame = av.AudioFrame.from_ndarray(
        np.zeros((1, samples * 2), dtype=np.int16), format=AUDIO_FORMAT, layout=AUDIO_LAYOUT
    )
    frame.sample_rate = AUDIO_RATE
    return frame


def black_video_frame(width: int, height: int) -> av.VideoFrame:
    """A black yuv420p frame of the given size."""
    canvas = np.full((height * 3 // 2, width), 128, dtype=np.uint8)
    canvas[:height] = 16
    return av.VideoFrame.from_ndarray(canvas, format="yuv420p")


def fit_video_frame(frame: av.VideoFrame, width: int, height: int) -> av.VideoFrame:
    """Scale `frame` into width x height keeping its aspect ratio (black bars where needed)."""
    scale = min(width / frame.width, height / frame.height)
    inner_w = min(width, max(2, round(frame.width * scale / 2) * 2))
    inner_h = min(height, max(2, round(frame.height * scale / 2) * 2))
    scaled = frame.reformat(width=inner_w, height=inner_h, format="yuv420p")
    if (inner_w, inner_h) == (width, height):
        return scaled
    flat = scaled.to_ndarray().ravel()
    luma_size, chroma_size = inner_w * inner_h, (inner_w // 2) * (inner_h // 2)
    planes = [
        flat[:luma_size].reshape(inner_h, inner_w),
        flat[luma_size : luma_size + chroma_size].reshape(inner_h // 2, inner_w // 2),
        flat[luma_size + chroma_size :].reshape(inner_h // 2, inner_w // 2),
    ]
    left, top = ((width - inner_w) // 2) & ~1, ((height - inner_h) // 2) & ~1
    out = []
    for index, plane in enumerate(planes):
        div = 1 if index == 0 else 2
        canvas = np.full((height // div, width // div), 16 if index == 0 else 128, np.uint8)
        y, x = top // div, left // div
        canvas[y : y + plane.shape[0], x : x + plane.shape[1]] = plane
        out.append(canvas.ravel())
    return av.VideoFrame.from_ndarray(
        np.concatenate(out).reshape(height * 3 // 2, width), format="yuv420p"
    )


class AudioFramer:
    """Audio in any rate, layout and frame size out as the call's 20 ms frames."""

    def __init__(self) -> None:
        self._resampler = self._new_resampler()
        self._fifo = av.AudioFifo()
        self.written = 0  # 48 kHz samples taken in so far

    @staticmethod
    def _new_resampler() -> av.AudioResampler:
        return av.AudioResampler(format=AUDIO_FORMAT, layout=AUDIO_LAYOUT, rate=AUDIO_RATE)

    @property
    def pending(self) -> int:
        """Samples waiting for a full frame."""
        return self._fifo.samples

    def push(self, frame: av.AudioFrame) -> list[av.AudioFrame]:
        frame.pts = None  # the fifo only checks the continuity of stamped frames
        out: list[av.AudioFrame] = []
        for converted in self._resampler.resample(frame):
            out += self._queue(converted)
        return out

    def pad(self, samples: int) -> list[av.AudioFrame]:
        """Append `samples` of silence."""
        return self._queue(silent_audio_frame(samples)) if samples > 0 else []

    def flush(self) -> list[av.AudioFrame]:
        """Drain the resampler (at the end of a stream); the framer can then take a new one."""
        out: list[av.AudioFrame] = []
        for converted in self._resampler.resample(None):
            out += self._queue(converted)
        self._resampler = self._new_resampler()
        return out

    def _queue(self, frame: av.AudioFrame) -> list[av.AudioFrame]:
        frame.pts = None
        self._fifo.write(frame)
        self.written += frame.samples
        out = []
        # (read() gives None once fewer than AUDIO_FRAME_SAMPLES samples are left)
        while (chunk := self._fifo.read(AUDIO_FRAME_SAMPLES)) is not None:
            chunk.pts = None
            out.append(chunk)
        return out


class FileDecoder:
    """Reads one media file as call-ready frames, optionally looping forever.

    Raises `MediaError` at construction for a missing, empty, unreadable or unsuitable file,
    and from `read()` when the data turns out to be corrupt.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        audio: bool = True,
        video_size: tuple[int, int] | None = None,
        loop: bool = False,
    ) -> None:
        self.path = Path(path)
        self.loop = loop
        self.video_size = video_size
        self._container = self._open(self.path)
        streams = self._container.streams
        self._audio = streams.audio[0] if audio and streams.audio else None
        self._video = streams.video[0] if video_size and streams.video else None
        if video_size and self._video is None:
            self._fail("no video stream")
        if self._audio is None and self._video is None:
            self._fail("no audio stream")
        source_fps = (
            float(self._video.average_rate or self._video.guessed_rate or 30)
            if (self._video)
            else 0.0
        )
        self.fps = min(MAX_VIDEO_FPS, source_fps) if self._video else 0.0
        self._source_frame_time = 1 / source_fps if source_fps else 0.0
        self._origin = self._stream_origin()
        self._framer = AudioFramer()
        self._demux = self._container.demux(*self._streams())
        self._pass_offset = 0.0  # media time at which the current pass starts
        self._pass_start = 0  # framer samples written when the current pass started
        self._pass_video_end = 0.0  # end of the last video frame of the pass, pass-relative
        self._audio_out = 0  # audio samples handed out, all passes
        self._next_video = 0.0  # earliest media time for the next kept video frame
        self._media_time = 0.0
        self._bad_packets = 0
        self.passes = 0
        self.finished = False
        #: Seconds one pass of the file lasts (audio and video together), after the first pass.
        self.pass_length: float | None = None

    @property
    def has_audio(self) -> bool:
        return self._audio is not None

    @property
    def has_video(self) -> bool:
        return self._video is not None

    @property
    def duration(self) -> float | None:
        """The file's duration in seconds, when the container states it."""
        if self._container.duration is None:
            return None
        return self._container.duration / av.time_base

    def read(self, seconds: float) -> DecodedChunk:
        """Decode at least `seconds` more media (less only at the end of the file)."""
        chunk = DecodedChunk()
        target = self._media_time + seconds
        while not self.finished and self._media_time < target:
            try:
                packet = next(self._demux)
            except StopIteration:
                self._end_pass(chunk)
                continue
            except av.error.FFmpegError as exc:
                self._fail(f"unreadable data ({exc})")
            if packet.dts is None and packet.size == 0:
                continue  # demuxer flush packet: decoders are flushed at the end of the pass
            for frame in self._decode(packet):
                self._accept(frame, chunk)
        if self.passes == 0 and self.finished and not chunk.audio and not chunk.video:
            self._fail("no decodable media")
        return chunk

    def close(self) -> None:
        self._container.close()

    # -- internals ---------------------------------------------------------------------------

    @staticmethod
    def _open(path: Path) -> av.container.InputContainer:
        if not path.exists():
            raise MediaError(path, "file not found")
        if not path.is_file():
            raise MediaError(path, "not a regular file")
        if path.stat().st_size == 0:
            raise MediaError(path, "file is empty")
        try:
            return av.open(str(path), mode="r")
        except av.error.FFmpegError as exc:
            raise MediaError(path, f"not a readable media file ({exc.strerror or exc})") from exc
        except OSError as exc:
            raise MediaError(path, exc.strerror or str(exc)) from exc

    def _fail(self, reason: str) -> None:
        self._container.close()
        raise MediaError(self.path, reason)

    def _streams(self) -> list[av.AudioStream | av.VideoStream]:
        return [s for s in (self._audio, self._video) if s is not None]

    def _stream_origin(self) -> float:
        starts = [
            float(s.start_time * s.time_base)
            for s in self._streams()
            if s.start_time is not None and s.time_base is not None
        ]
        return min(starts) if starts else 0.0

    def _decode(self, packet: av.Packet) -> Sequence[av.frame.Frame]:
        try:
            frames = packet.decode()
        except av.error.FFmpegError as exc:
            self._bad_packets += 1
            if self._bad_packets > MAX_BAD_PACKETS:
                self._fail(f"corrupt data: {self._bad_packets} packets in a row failed ({exc})")
            return []
        self._bad_packets = 0
        return frames

    def _accept(self, frame: av.frame.Frame, chunk: DecodedChunk) -> None:
        if isinstance(frame, av.AudioFrame):
            self._take_audio(self._framer.push(frame), chunk)
        elif isinstance(frame, av.VideoFrame):
            self._push_video(frame, chunk)

    def _take_audio(self, frames: list[av.AudioFrame], chunk: DecodedChunk) -> None:
        chunk.audio += frames
        self._audio_out += len(frames) * AUDIO_FRAME_SAMPLES
        self._media_time = max(self._media_time, self._audio_out / AUDIO_RATE)

    def _push_video(self, frame: av.VideoFrame, chunk: DecodedChunk) -> None:
        relative = (frame.time - self._origin) if frame.time is not None else self._pass_video_end
        relative = max(0.0, relative)
        self._pass_video_end = max(self._pass_video_end, relative + self._source_frame_time)
        at = self._pass_offset + relative
        if at + 0.25 / self.fps < self._next_video:  # (timestamps are rounded, e.g. to 1 ms)
            return  # above the output frame rate: dropped before the costly scaling
        self._next_video = max(self._next_video + 1 / self.fps, at)
        assert self.video_size is not None
        chunk.video.append((at, fit_video_frame(frame, *self.video_size)))
        self._media_time = max(self._media_time, at)

    def _end_pass(self, chunk: DecodedChunk) -> None:
        """At the end of the file: flush the codecs, then loop back or finish."""
        for stream in self._streams():
            try:
                for frame in stream.codec_context.decode(None):
                    self._accept(frame, chunk)
            except av.error.FFmpegError:
                pass  # a decoder that cannot flush has nothing more worth playing
        if self._audio is not None:
            self._take_audio(self._framer.flush(), chunk)
        pass_samples = self._framer.written - self._pass_start
        pass_length = max(pass_samples / AUDIO_RATE, self._pass_video_end)
        self._check_complete(pass_length)
        if self.pass_length is None:
            self.pass_length = pass_length
        if self._audio is not None and self._video is not None:
            # Pad audio to the pass length so the next pass starts in sync with the video.
            self._take_audio(
                self._framer.pad(round(pass_length * AUDIO_RATE) - pass_samples), chunk
            )
        self.passes += 1
        if self.loop and pass_length > 0:
            self._reopen()
            self._pass_offset += pass_length
            self._pass_start = self._framer.written
            self._pass_video_end = 0.0
            return
        if self._framer.pending:
            self._take_audio(self._framer.pad(AUDIO_FRAME_SAMPLES - self._framer.pending), chunk)
        self.finished = True

    def _check_complete(self, decoded: float) -> None:
        """FFmpeg skips undecodable data quietly, so a corrupt or cut-off file just ends early;
        compare with the duration the file declares to say so instead."""
        declared = self.duration
        if declared is not None and declared - decoded > max(MIN_MISSING, MISSING_SHARE * declared):
            self._fail(
                f"the data ends after {decoded:.1f} s of the {declared:.1f} s the file declares: "
                "it is truncated or corrupt"
            )

    def _reopen(self) -> None:
        """Start the next pass on a fresh demuxer and decoders. Seeking back would leave the
        decoders' state (e.g. Opus pre-skip) different from the first pass, so every later pass
        would come out a few milliseconds shorter than the first."""
        had_audio, had_video = self._audio is not None, self._video is not None
        self._container.close()
        self._container = self._open(self.path)
        streams = self._container.streams  # the same file: its first streams, as in __init__
        self._audio = streams.audio[0] if had_audio else None
        self._video = streams.video[0] if had_video else None
        self._demux = self._container.demux(*self._streams())
