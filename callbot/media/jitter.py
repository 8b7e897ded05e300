"""The audio receive path: packets go to the call's hub as they come, replacing aiortc's.

aiortc 1.16 gives every audio receiver `JitterBuffer(capacity=16, prefetch=4)` and a decoder
thread: it holds 4 frames (80 ms) before releasing any; after a single lost packet it stalls
until 16 more have arrived, then throws good ones away, so 5 % packet loss turns into several
times that much missing audio; and every packet is decoded in a thread, then handed back to the
event loop. A bot plays to no sound card and needs no playout smoothing (recordings and frame
consumers place audio by its timestamp), so this buffer hands each packet to the call's
`IncomingMedia` as soon as it is the newest in sequence, skips lost ones at once, drops late or
duplicate ones, and decodes (inline, ~30 us) only while someone needs samples. aiortc's
decoder thread is never fed. `use_for()` is the single place that swaps it in (through
`callbot._compat`; aiortc's own buffer stays when the check found it changed). Once the first
packet has come through aiortc (so the receiver's transport and SSRC are settled), the rest
are handed over where they arrive, by fastpath.py.
"""

from __future__ import annotations

from typing import Any

from aiortc.rtcrtpreceiver import TimestampMapper

from .._compat import available, rtp
from . import fastpath
from .incoming import IncomingMedia
from .opus import OpusDecoder

HALF_SEQUENCE_SPACE = 1 << 15


class AudioJitterBuffer:
    """`add(packet) -> (pli_needed, frame for aiortc's decoder or None)`, as aiortc calls it."""

    capacity = 16

    def __init__(self, hub: IncomingMedia, receiver: Any = None) -> None:
        self._hub = hub
        self._receiver = receiver  # handed to the fast path at the first packet
        self._last: int | None = None
        self._timestamps = TimestampMapper()
        self._decoder: OpusDecoder | None = None
        self.skipped = 0  # packets never received (lost)
        self.dropped = 0  # packets received too late or twice

    def add(self, packet: Any) -> tuple[bool, None]:
        if self._receiver is not None:
            receiver, self._receiver = self._receiver, None
            fastpath.receive_inline(receiver, packet.payload_type, self)
        sequence = packet.sequence_number
        if self._last is not None:
            ahead = (sequence - self._last) % (1 << 16)
            if ahead == 0 or ahead > HALF_SEQUENCE_SPACE:
                self.dropped += 1
                return False, None
            self.skipped += ahead - 1
        self._last = sequence
        pts = self._timestamps.map(packet.timestamp)
        payload = rtp.depayloaded(packet)
        self._hub.packet(payload, pts)
        if self._hub.wants_frames:
            if self._decoder is None:
                self._decoder = OpusDecoder()
            for frame in self._decoder.decode(payload, pts):
                self._hub.deliver(frame)
        return False, None


def release(receiver: Any) -> None:
    """After the call: a buffer still waiting for its first packet forgets `receiver`, which
    refers to it (a reference cycle)."""
    buffer = rtp.jitter_buffer(receiver)
    if isinstance(buffer, AudioJitterBuffer):
        buffer._receiver = None


def use_for(receiver: Any, hub: IncomingMedia, fast: bool = True) -> AudioJitterBuffer | None:
    """Route an aiortc audio `RTCRtpReceiver`'s packets to `hub` (before media arrives), on
    the fast path unless `fast` is False (CallConfig.fastpath); None when aiortc's internals
    changed (its own buffer and decoder then feed `hub`)."""
    if not available("jitter"):
        return None
    buffer = AudioJitterBuffer(hub, receiver if fast else None)
    rtp.use_jitter_buffer(receiver, buffer)
    if fast:
        fastpath.report_receiver(receiver)  # its RTCP reports with the process's others
    return buffer
