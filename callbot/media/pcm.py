"""Outgoing audio as PCM at a leg's rate, for legs whose stack encodes it (SIP calls).

Prompts arrive as the shared cache's Opus payloads (cache.py: encoded once): every call playing
a prompt gets the very same payload objects, so their PCM is decoded and resampled once per
output format, process-wide, and each further call only copies bytes. Frames (live audio,
in-band DTMF) are resampled per call; silence is a ready buffer.
"""

from __future__ import annotations

from collections import OrderedDict

import av

from .opus import OpusDecoder

#: Payloads whose PCM is kept per format (60 s of audio; the least recently used go first).
MAX_ENTRIES = 3000


def _layout(channels: int) -> str:
    return "stereo" if channels == 2 else "mono"


class _Decoding:
    """One format's decoder and resampler, fed payloads in the order calls first need them
    (a prompt's packets in order: calls play it from its start)."""

    def __init__(self, rate: int, channels: int) -> None:
        self._decoder = OpusDecoder()
        self._resampler = av.AudioResampler(format="s16", layout=_layout(channels), rate=rate)
        self._pts = 0

    def pcm(self, payload: bytes) -> bytes:
        out = []
        for frame in self._decoder.decode(payload, self._pts):
            out += [f.to_ndarray().tobytes() for f in self._resampler.resample(frame)]
        self._pts += 960
        return b"".join(out)


class PcmCache:
    """PCM of shared Opus payloads per (rate, channels), decoded once per format."""

    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self.max_entries = max_entries
        self.decoded = 0  # payloads decoded (tests and benchmarks read it)
        # (id(payload), rate, channels) -> (payload, its PCM); the payload is held so that
        # its id cannot be reused while the entry lives
        self._entries: OrderedDict[tuple[int, int, int], tuple[bytes, bytes]] = OrderedDict()
        self._decodings: dict[tuple[int, int], _Decoding] = {}

    def get(self, payload: bytes, rate: int, channels: int) -> bytes:
        """The PCM (s16, interleaved) of one 20 ms payload at `rate` with `channels`."""
        key = (id(payload), rate, channels)
        entry = self._entries.get(key)
        if entry is not None and entry[0] is payload:
            self._entries.move_to_end(key)
            return entry[1]
        decoding = self._decodings.get((rate, channels))
        if decoding is None:
            decoding = self._decodings[(rate, channels)] = _Decoding(rate, channels)
        pcm = decoding.pcm(payload)
        self.decoded += 1
        self._entries[key] = (payload, pcm)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return pcm


class PcmLeg:
    """One leg's outgoing audio as PCM bytes in its format (`rate`, `channels`)."""

    def __init__(self, rate: int, channels: int, cache: PcmCache) -> None:
        self.rate, self.channels = rate, channels
        self._cache = cache
        self._silence = bytes(rate // 50 * channels * 2)
        self._resampler = av.AudioResampler(format="s16", layout=_layout(channels), rate=rate)

    def pcm(self, item: bytes | av.AudioFrame | None) -> bytes:
        """20 ms of `item` (a shared payload, a frame, or None for silence) as PCM."""
        if item is None:
            return self._silence
        if isinstance(item, bytes):
            return self._cache.get(item, self.rate, self.channels)
        return b"".join(f.to_ndarray().tobytes() for f in self._resampler.resample(item))


#: The process's cache: every SIP call shares it.
PCM = PcmCache()
