"""Media files for the SIP test peers: an s16 WAV tone baresip's `aufile` source plays, and a
G.711 u-law WAV tone SIPp's `rtp_stream` sends as PCMU RTP packets, as they are."""

from __future__ import annotations

import socket
import struct
import wave
from pathlib import Path

import numpy as np

#: The loopback address every SIP peer of the tests listens on.
HOST = "127.0.0.1"


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    """A port free on 127.0.0.1 now (UDP by default: SIP and RTP here run over UDP)."""
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def free_port_pair() -> int:
    """An even UDP port whose successor is free too (an RTP port and its RTCP port)."""
    for _ in range(100):
        port = free_port() & ~1
        with (
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rtp,
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rtcp,
        ):
            try:
                rtp.bind((HOST, port))
                rtcp.bind((HOST, port + 1))
            except OSError:
                continue
            return port
    raise OSError("no free pair of UDP ports on 127.0.0.1")


def tone(frequency: float, seconds: float, rate: int, amplitude: float = 0.5) -> np.ndarray:
    """A sine as float samples in -1..1."""
    t = np.arange(int(seconds * rate)) / rate
    return amplitude * np.sin(2 * np.pi * frequency * t)


def write_pcm_wav(path: Path, frequency: float, seconds: float, rate: int = 8000) -> Path:
    """A mono 16-bit PCM WAV tone (what baresip's `aufile` audio source reads)."""
    pcm = (tone(frequency, seconds, rate) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm.tobytes())
    return path


def source_wav(path: Path, play: Path | None, seconds: float, rate: int) -> Path:
    """`play` (mono s16 at `rate`) padded with silence to `seconds`, written to `path`.

    baresip's `aufile` source ends the call when its file ends (the menu module hangs up on
    the source's "end of file"), so a peer that must stay in a call needs a long enough file.
    """
    pcm = b""
    if play is not None:
        with wave.open(str(play), "rb") as source:
            shape = (source.getnchannels(), source.getsampwidth(), source.getframerate())
            if shape != (1, 2, rate):
                raise ValueError(f"{play} is not mono 16-bit PCM at {rate} Hz")
            pcm = source.readframes(source.getnframes())
    pcm += bytes(max(0, int(seconds * rate) * 2 - len(pcm)))
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm)
    return path


def mulaw(samples: np.ndarray) -> bytes:
    """G.711 u-law encoding of float samples (ITU-T G.711, the segment/bias form)."""
    pcm = np.clip(samples * 32767, -32635, 32635).astype(np.int32)
    sign = np.where(pcm < 0, 0x80, 0)
    magnitude = np.abs(pcm) + 0x84
    exponent = np.floor(np.log2(magnitude)).astype(np.int32) - 7
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    return bytes((~(sign | (exponent << 4) | mantissa) & 0xFF).astype(np.uint8).tobytes())


def write_mulaw_wav(path: Path, frequency: float, seconds: float) -> Path:
    """An 8 kHz u-law WAV tone: SIPp's `rtp_stream` sends its data chunk as PCMU payloads."""
    data = mulaw(tone(frequency, seconds, 8000))
    fmt = struct.pack("<HHIIHHH", 7, 1, 8000, 8000, 1, 8, 0)  # WAVE_FORMAT_MULAW
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    body += b"fact" + struct.pack("<II", 4, len(data)) + b"data" + struct.pack("<I", len(data))
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body) + len(data)) + body + data)
    return path
