"""Opus as packets: encoding 20 ms frames, a ready silent packet, and the length of a packet.

callbot's outgoing audio is Opus packets end to end (aiortc's sender passes `av.Packet`s through
untouched), so prompts are encoded once and silence costs nothing; received packets can be
stored in Ogg/WebM/Matroska without decoding them.
"""

from __future__ import annotations

import fractions
from functools import cache

import av
import numpy as np

RATE = 48000
FRAME_SAMPLES = 960  # 20 ms
TIME_BASE = fractions.Fraction(1, RATE)
BITRATE = 48000  # bits/s: clear speech and music in stereo

#: Samples per Opus frame for the 32 TOC configurations (RFC 6716, section 3.1), at 48 kHz.
_CONFIG_SAMPLES = (
    [480, 960, 1920, 2880] * 3  # SILK-only: 10, 20, 40, 60 ms
    + [480, 960] * 2  # hybrid
    + [120, 240, 480, 960] * 4  # CELT-only: 2.5, 5, 10, 20 ms
)


class OpusEncoder:
    """48 kHz 16-bit stereo frames in, Opus payloads (bytes) out, one per 20 ms."""

    def __init__(self, bitrate: int = BITRATE) -> None:
        codec = av.CodecContext.create("libopus", "w")
        codec.sample_rate = RATE
        codec.layout = "stereo"
        codec.format = "s16"
        codec.bit_rate = bitrate
        codec.time_base = TIME_BASE
        codec.options = {"application": "audio", "frame_duration": "20"}
        self._codec = codec
        self._pts = 0

    def encode(self, frame: av.AudioFrame) -> list[bytes]:
        """Encode one 20 ms frame (48 kHz, s16, stereo)."""
        frame.pts = self._pts
        frame.time_base = TIME_BASE
        self._pts += frame.samples
        return [bytes(packet) for packet in self._codec.encode(frame)]

    def flush(self) -> list[bytes]:
        """The packets still inside the encoder (its lookahead), at the end of a stream."""
        return [bytes(packet) for packet in self._codec.encode(None)]


@cache
def silent_payload() -> bytes:
    """An Opus packet of 20 ms of silence (encoded once per process)."""
    encoder = OpusEncoder()
    zeros = np.zeros((1, FRAME_SAMPLES * 2), np.int16)
    payloads: list[bytes] = []
    while len(payloads) < 3:  # past the encoder's start-up: a steady-state silent packet
        frame = av.AudioFrame.from_ndarray(zeros, format="s16", layout="stereo")
        frame.sample_rate = RATE
        payloads += encoder.encode(frame)
    return payloads[-1]


def packet_samples(payload: bytes) -> int:
    """Samples (48 kHz) one Opus packet carries, from its TOC byte (RFC 6716, section 3.1)."""
    if not payload:
        return 0
    toc = payload[0]
    per_frame = _CONFIG_SAMPLES[toc >> 3]
    code = toc & 0x03
    if code == 0:
        frames = 1
    elif code in (1, 2):
        frames = 2
    else:
        frames = payload[1] & 0x3F if len(payload) > 1 else 0
    return per_frame * frames


def packet(payload: bytes, pts: int) -> av.Packet:
    """An `av.Packet` aiortc's sender passes through as is, stamped at `pts` (48 kHz)."""
    out = av.Packet(payload)
    out.pts = pts
    out.time_base = TIME_BASE
    return out


class OpusDecoder:
    """Opus payloads in, 48 kHz 16-bit stereo frames out (for consumers that need samples)."""

    def __init__(self) -> None:
        codec = av.CodecContext.create("libopus", "r")
        codec.sample_rate = RATE
        codec.layout = "stereo"
        codec.format = "s16"
        self._codec = codec

    def decode(self, payload: bytes, pts: int) -> list[av.AudioFrame]:
        encoded = av.Packet(payload)
        encoded.pts = pts
        encoded.time_base = TIME_BASE
        try:
            frames = self._codec.decode(encoded)
        except av.error.FFmpegError:
            return []  # a damaged packet: skipped, like a lost one
        for frame in frames:
            frame.pts, frame.time_base = pts, TIME_BASE
        return frames
